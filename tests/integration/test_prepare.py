"""Preparation on a real database: target, exclusions, render check, logs and counts."""

from __future__ import annotations

from typing import Any

import pytest
from scenario import CLI, as_user
from sqlalchemy import func, select, update

from bot.context import Context
from bot.domain.errors import DomainError, IllegalTransition, NotFound
from bot.domain.roles import Role
from bot.services.deliveries import prepare as prepare_module
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import (
    MAX_STORED_ERRORS,
    PreparationConflict,
    prepare_delivery,
)
from bot.store.models import (
    Audience,
    AudienceMember,
    AuditEntry,
    Delivery,
    ExclusionLog,
    Execution,
    KpiCounter,
    Profile,
    SendingLog,
)

UNSUBSCRIBE = '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'
HTML = "<p>Hello {{ first_name }}</p>\n<p>{{ 100 / divisor }}</p>\n" + UNSUBSCRIBE + "\n"


class World:
    """Rows for a test, created with the ORM (no importer involved)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.now = ctx.clock.now()
        with ctx.sessions.begin() as s:
            audience = Audience(
                name="customers", version=3, created_at=self.now, updated_at=self.now
            )
            s.add(audience)
            s.flush()
            self.audience_id = audience.id

    def profile(
        self,
        email: str,
        *,
        status: str = "valid",
        member: bool = True,
        first_name: str | None = "Ann",
        **attributes: Any,
    ) -> int:
        with self.ctx.sessions.begin() as s:
            p = Profile(
                email=email,
                email_key=email.lower(),
                first_name=first_name,
                last_name="Smith",
                timezone="Europe/Paris",
                attributes=attributes,
                email_status=status,
                created_at=self.now,
                updated_at=self.now,
            )
            s.add(p)
            s.flush()
            if member:
                s.add(AudienceMember(audience_id=self.audience_id, profile_id=p.id))
            return p.id

    def delivery(
        self,
        ref: str = "spring-sale",
        *,
        subject: str = "Spring sale for {{ first_name }}",
        html: str | None = "<p>Hello {{ first_name }}</p>" + UNSUBSCRIBE,
        text: str | None = "Hello {{ first_name }}",
        state: str = "editing",
    ) -> int:
        with self.ctx.sessions.begin() as s:
            d = Delivery(
                ref=ref,
                name="Spring sale",
                audience_id=self.audience_id,
                sender="News <news@example.com>",
                subject=subject,
                html=html,
                text=text,
                validity_seconds=302_400,
                definition_hash=f"hash-{ref}",
                state=state,
                created_at=self.now,
                updated_at=self.now,
            )
            s.add(d)
            s.flush()
            return d.id

    def get(self, ref: str = "spring-sale") -> Delivery:
        with self.ctx.sessions() as s:
            return s.scalars(select(Delivery).where(Delivery.ref == ref)).one()

    def execution_id(self, ref: str = "spring-sale") -> int:
        with self.ctx.sessions() as s:
            return s.scalars(select(Execution.id).join(Delivery).where(Delivery.ref == ref)).one()

    def sending_logs(self, ref: str = "spring-sale") -> list[tuple[str, str]]:
        with self.ctx.sessions() as s:
            rows = s.execute(
                select(SendingLog.email, SendingLog.status)
                .where(SendingLog.execution_id == self.execution_id(ref))
                .order_by(SendingLog.profile_id)
            )
            return [tuple(r) for r in rows]

    def exclusion_logs(self, ref: str = "spring-sale") -> list[tuple[str, str]]:
        with self.ctx.sessions() as s:
            rows = s.execute(
                select(ExclusionLog.email, ExclusionLog.reason)
                .where(ExclusionLog.execution_id == self.execution_id(ref))
                .order_by(ExclusionLog.profile_id)
            )
            return [tuple(r) for r in rows]

    def counter(self, ref: str = "spring-sale") -> KpiCounter:
        with self.ctx.sessions() as s:
            counter = s.get(KpiCounter, self.execution_id(ref))
            assert counter is not None
            return counter


@pytest.fixture
def world(ctx: Context) -> World:
    return World(ctx)


def test_counts_exclusion_reasons_and_logs(ctx: Context, world: World) -> None:
    world.profile("ann@example.com")
    world.profile("not-an-address")
    world.profile("ANN@example.com")  # a duplicate of the first, in other letter case
    world.profile("bob@example.com", status="denylisted")
    world.profile("cat@example.com", status="quarantine")
    world.profile("dan@example.com", status="erroneous")  # soft errors: still sent
    world.profile("eve@example.com")
    world.profile("outsider@example.com", member=False)  # not in the audience
    world.delivery()

    result = prepare_delivery(ctx, as_user("U123", list(Role)), "spring-sale")

    assert (result.state, result.targeted, result.excluded, result.to_deliver) == (
        "ready",
        7,
        4,
        3,
    )
    assert result.exclusions == {
        "invalid address": 1,
        "duplicate address": 1,
        "denylisted": 1,
        "quarantined": 1,
    }
    assert (
        result.to_json()["errors"] == []
        and result.errors_total == 0
        and result.to_json()["warnings"] == []
    )
    assert world.exclusion_logs() == [
        ("not-an-address", "invalid address"),
        ("ANN@example.com", "duplicate address"),
        ("bob@example.com", "denylisted"),
        ("cat@example.com", "quarantined"),
    ]
    assert world.sending_logs() == [
        ("ann@example.com", "queued"),
        ("dan@example.com", "queued"),
        ("eve@example.com", "queued"),
    ]
    d = world.get()
    assert (d.state, d.targeted, d.excluded, d.to_deliver) == ("ready", 7, 4, 3)
    assert d.prepared_at == ctx.clock.now()
    assert d.prepared_hash == d.definition_hash
    assert d.prepared_audience_version == 3
    assert d.preparation_errors == [] and d.preparation_warnings == []
    counter = world.counter()
    assert (counter.to_deliver, counter.queued, counter.sent, counter.failed) == (3, 3, 0, 0)
    with ctx.sessions() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "prepare")).one()
    assert (entry.actor, entry.subject_kind, entry.subject_ref) == (
        "U123",
        "delivery",
        "spring-sale",
    )
    assert entry.detail["to_deliver"] == 3


def test_duplicates_keep_the_lowest_id(ctx: Context, world: World) -> None:
    first = world.profile("Zoe@Example.com")
    world.profile("zoe@example.com")
    world.profile("ZOE@EXAMPLE.COM")
    world.delivery()

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert result.to_deliver == 1
    with ctx.sessions() as s:
        kept = s.scalars(select(SendingLog.profile_id)).all()
    assert kept == [first]
    assert world.exclusion_logs() == [
        ("zoe@example.com", "duplicate address"),
        ("ZOE@EXAMPLE.COM", "duplicate address"),
    ]


def test_a_quarantined_address_is_not_reached_through_a_duplicate(
    ctx: Context, world: World
) -> None:
    world.profile("kim@example.com", status="quarantine")
    world.profile("Kim@example.com")
    world.delivery()

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert result.to_deliver == 0
    assert result.exclusions["quarantined"] == 1
    assert result.exclusions["duplicate address"] == 1


def test_template_error_on_one_profile_is_critical_and_blocks(ctx: Context, world: World) -> None:
    world.profile("ann@example.com", divisor=4)
    world.profile("zero@example.com", divisor=0)
    world.profile("eve@example.com", divisor=5)
    world.delivery(html=HTML, state="ready")

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert result.state == "editing"
    assert result.errors_total == 1
    [error] = result.to_json()["errors"]
    assert error["email"] == "zero@example.com"
    assert (error["part"], error["line"]) == ("html", 2)
    assert "division by zero" in error["reason"]
    d = world.get()
    assert d.state == "editing"
    assert d.preparation_errors == result.to_json()["errors"]
    # The target is still computed: the counts show what a fixed template would send.
    assert d.to_deliver == 3


def test_errors_are_capped_but_counted(ctx: Context, world: World) -> None:
    for i in range(MAX_STORED_ERRORS + 5):
        world.profile(f"p{i}@example.com", divisor=0)
    world.delivery(html=HTML)

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert result.errors_total == MAX_STORED_ERRORS + 5
    assert len(result.to_json()["errors"]) == MAX_STORED_ERRORS
    stored = world.get().preparation_errors
    assert stored[:MAX_STORED_ERRORS] == result.to_json()["errors"]
    assert stored[-1]["omitted"] == 5 and stored[-1]["total"] == MAX_STORED_ERRORS + 5


def test_missing_attribute_is_a_warning_only(ctx: Context, world: World) -> None:
    world.profile("ann@example.com", city="Lyon")
    world.profile("bob@example.com")
    world.profile("cat@example.com", first_name=None)
    world.delivery(text="Hello {{ first_name }} from {{ city }}{% if vip %}, VIP{% endif %}")

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert result.state == "ready"
    assert result.to_json()["errors"] == []
    assert result.to_json()["warnings"] == [
        {
            "kind": "missing variable",
            "name": "city",
            "count": 2,
            "emails": ["bob@example.com", "cat@example.com"],
        },
        {
            "kind": "missing variable",
            "name": "first_name",
            "count": 1,
            "emails": ["cat@example.com"],
        },
    ]
    assert world.get().preparation_warnings == result.to_json()["warnings"]


def test_sandbox_escape_is_a_critical_error(ctx: Context, world: World) -> None:
    world.profile("ann@example.com")
    world.delivery(html="<p>hi</p>\n{{ ''.__class__.__mro__[1].__subclasses__() }}")

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert result.state == "editing"
    [error] = result.to_json()["errors"]
    assert (error["email"], error["part"], error["line"]) == ("ann@example.com", "html", 2)
    assert "not allowed" in error["reason"]


def test_syntax_error_leaves_editing_and_names_the_part(ctx: Context, world: World) -> None:
    world.profile("ann@example.com")
    world.delivery(text="Hello\n{% if vip %}VIP")

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert result.state == "editing"
    [error] = result.to_json()["errors"]
    assert (error["email"], error["part"], error["line"]) == (None, "text", 2)
    assert result.to_deliver == 1


def test_empty_target_is_still_ready(ctx: Context, world: World) -> None:
    world.profile("bob@example.com", status="denylisted")
    world.delivery()

    result = prepare_delivery(ctx, CLI, "spring-sale")

    assert (result.state, result.targeted, result.to_deliver) == ("ready", 1, 0)
    assert world.counter().to_deliver == 0


def test_re_preparation_replaces_the_logs(ctx: Context, world: World) -> None:
    ann = world.profile("ann@example.com")
    world.profile("bob@example.com")
    world.profile("cat@example.com", status="quarantine")
    world.delivery()
    first = prepare_delivery(ctx, CLI, "spring-sale")
    assert (first.to_deliver, first.excluded) == (2, 1)

    with ctx.sessions.begin() as s:
        s.execute(update(Profile).where(Profile.id == ann).values(email_status="denylisted"))
    second = prepare_delivery(ctx, CLI, "spring-sale")

    assert (second.state, second.to_deliver, second.excluded) == ("ready", 1, 2)
    assert world.sending_logs() == [("bob@example.com", "queued")]
    assert world.exclusion_logs() == [
        ("ann@example.com", "denylisted"),
        ("cat@example.com", "quarantined"),
    ]
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SendingLog)) == 1
        assert s.scalar(select(func.count()).select_from(ExclusionLog)) == 2
        assert s.scalar(select(func.count()).select_from(Execution)) == 1
    counter = world.counter()
    assert (counter.to_deliver, counter.queued) == (1, 1)
    d = world.get()
    assert (d.targeted, d.excluded, d.to_deliver) == (3, 2, 1)


def test_prepare_is_refused_once_the_send_has_started(ctx: Context, world: World) -> None:
    world.profile("ann@example.com")
    world.delivery(state="in-progress")

    with pytest.raises(IllegalTransition) as caught:
        prepare_delivery(ctx, CLI, "spring-sale")

    assert "in-progress" in str(caught.value)
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Execution)) == 0
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_unknown_ref_is_not_found(ctx: Context, world: World) -> None:
    with pytest.raises(NotFound) as caught:
        prepare_delivery(ctx, CLI, "nope")
    assert str(caught.value) == (
        "no delivery with ref 'nope'; `python -m bot deliveries list` shows the refs"
    )


def test_a_change_during_preparation_writes_nothing(
    ctx: Context, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.profile("ann@example.com")
    world.delivery()
    original = prepare_module._plan

    def plan_then_edit(session: Any, delivery: Delivery, *args: Any) -> Any:
        plan = original(session, delivery, *args)
        with ctx.sessions.begin() as other:
            other.execute(
                update(Delivery).where(Delivery.id == delivery.id).values(definition_hash="edited")
            )
        return plan

    monkeypatch.setattr(prepare_module, "_plan", plan_then_edit)

    with pytest.raises(PreparationConflict):
        prepare_delivery(ctx, CLI, "spring-sale")

    d = world.get()
    assert (d.state, d.prepared_at, d.to_deliver) == ("editing", None, 0)
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SendingLog)) == 0


def test_deliveries_are_prepared_independently(ctx: Context, world: World) -> None:
    world.profile("ann@example.com")
    world.profile("bob@example.com")
    world.delivery("one")
    world.delivery("two")

    prepare_delivery(ctx, CLI, "one")
    prepare_delivery(ctx, CLI, "two")
    prepare_delivery(ctx, CLI, "one")

    assert len(world.sending_logs("one")) == 2
    assert len(world.sending_logs("two")) == 2


# --- the address check agrees with email_validator --------------------------------


# --- the unsubscribe link check ------------------------------------------------------


def _no_link_warnings(result: Any) -> list[dict[str, Any]]:
    return [w for w in result.to_json()["warnings"] if w["kind"] == "no unsubscribe link"]


@pytest.mark.parametrize(
    "html",
    [
        '<p>Hi</p><a href="{{ unsubscribe_url }}">Stop these emails</a>',
        "<p>Hi</p><A class=x HREF='{{ unsubscribe_url }}'>Unsubscribe</A>",
        '<map><area shape=rect href="{{ unsubscribe_url }}" alt="Unsubscribe"></map>',
    ],
    ids=["a", "upper case, single quotes", "area"],
)
def test_a_message_with_its_unsubscribe_link_gets_no_warning(
    ctx: Context, world: World, html: str
) -> None:
    world.profile("ann@example.com")
    world.delivery(html=html)
    result = prepare_delivery(ctx, CLI, "spring-sale")
    assert result.ready and _no_link_warnings(result) == []


@pytest.mark.parametrize(
    "html",
    [
        "<p>Hi</p>",
        '<p>Hi</p><a href="mailto:unsubscribe@example.com">Unsubscribe</a>',
        '<p>Hi</p><a href="https://example.com/unsubscribe">Unsubscribe</a>',
        "<p>Unsubscribe here: {{ unsubscribe_url }}</p>",  # the URL, not a link
        '<img src="{{ unsubscribe_url }}">',
    ],
    ids=["none", "mailto", "another page", "bare URL", "not a link"],
)
def test_html_without_its_unsubscribe_link_is_a_warning(
    ctx: Context, world: World, html: str
) -> None:
    world.profile("ann@example.com")
    world.profile("bob@example.com", first_name="Bob")
    world.delivery(html=html)
    result = prepare_delivery(ctx, CLI, "spring-sale")
    assert result.ready, "a warning, not an error"
    assert _no_link_warnings(result) == [
        {
            "kind": "no unsubscribe link",
            "name": "unsubscribe_url",
            "count": 2,
            "emails": ["ann@example.com", "bob@example.com"],
        }
    ]
    assert "no unsubscribe link in the message of 2 profile(s)" in (result.warnings[-1].describe())
    assert world.get().preparation_warnings == result.to_json()["warnings"]


def test_a_link_some_profiles_do_not_get_counts_those(ctx: Context, world: World) -> None:
    world.profile("ann@example.com", plan="pro")
    world.profile("bob@example.com", first_name="Bob", plan="free")
    world.delivery(html='{% if plan == "pro" %}<a href="{{ unsubscribe_url }}">x</a>{% endif %}')
    [warning] = _no_link_warnings(prepare_delivery(ctx, CLI, "spring-sale"))
    assert (warning["count"], warning["emails"]) == (1, ["bob@example.com"])


def test_a_text_only_delivery_needs_the_url_in_its_text(ctx: Context, world: World) -> None:
    world.profile("ann@example.com")
    world.delivery(html=None, text="Hi\nUnsubscribe: {{ unsubscribe_url }}")
    assert _no_link_warnings(prepare_delivery(ctx, CLI, "spring-sale")) == []
    world.delivery("plain", html=None, text="Hi")
    [warning] = _no_link_warnings(prepare_delivery(ctx, CLI, "plain"))
    assert warning["count"] == 1


def test_require_unsubscribe_link_makes_it_an_error_that_blocks_the_confirm(
    ctx: Context, world: World
) -> None:
    strict = ctx.with_settings(require_unsubscribe_link=True)
    world.profile("ann@example.com")
    world.delivery(html="<p>Hi {{ first_name }}</p>")
    result = prepare_delivery(strict, CLI, "spring-sale")
    assert result.state.value == "editing" and _no_link_warnings(result) == []
    [error] = result.to_json()["errors"]
    assert (error["email"], error["part"]) == (None, "html"), "every message: no one profile"
    assert "no unsubscribe link" in error["reason"]
    assert "REQUIRE_UNSUBSCRIBE_LINK" in error["reason"]
    with pytest.raises(DomainError, match="preparation errors"):
        confirm_send(strict, as_user("U0A", [Role.START_DELIVERIES]), "spring-sale")
    # With the link the same delivery is ready.
    with strict.sessions.begin() as s:
        s.execute(
            update(Delivery)
            .where(Delivery.ref == "spring-sale")
            .values(html="<p>Hi</p>" + UNSUBSCRIBE, definition_hash="with-link")
        )
    assert prepare_delivery(strict, CLI, "spring-sale").ready
