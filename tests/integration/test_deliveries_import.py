"""`deliveries import`: every rule checked, every problem named, create or update by ref."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from scenario import CLI
from sqlalchemy import select, text

from bot.clock import FixedClock
from bot.context import Context
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.definitions import delivery_hash
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.problems import InputRejected, Problem
from bot.services.imports.profiles import import_profiles
from bot.store.models import AuditEntry, Delivery

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE: dict[str, Any] = {
    "ref": "spring-sale",
    "name": "Spring sale",
    "audience": "newsletter",
    "from": "Shop <news@example.com>",
    "subject": "Hello {{ first_name }}",
    "html": "<p>Hello {{ first_name }}</p>",
    "text": "Hello {{ first_name }}",
}


@pytest.fixture
def audience(ctx: Context, tmp_path: Path) -> str:
    path = tmp_path / "people.csv"
    path.write_text("email,first_name\nann@example.com,Ann\n")
    import_profiles(ctx, CLI, path, "newsletter")
    return "newsletter"


def write(tmp_path: Path, entries: Any, name: str = "deliveries.yml") -> Path:
    path = tmp_path / name
    body = entries if isinstance(entries, str) else yaml.safe_dump(entries, sort_keys=False)
    path.write_text(body, encoding="utf-8")
    return path


def entry(**changes: Any) -> dict[str, Any]:
    """BASE with changes; a value of None removes the field."""
    result = {**BASE, **changes}
    return {k: v for k, v in result.items() if v is not None}


def rejected(ctx: Context, path: Path) -> list[Problem]:
    with pytest.raises(InputRejected) as caught:
        import_deliveries(ctx, CLI, path)
    return caught.value.problems


def deliveries(ctx: Context) -> dict[str, Delivery]:
    with ctx.sessions() as s:
        return {d.ref: d for d in s.scalars(select(Delivery))}


def set_state(ctx: Context, ref: str, state: str) -> None:
    with ctx.sessions.begin() as s:
        s.scalars(select(Delivery).where(Delivery.ref == ref)).one().state = state


def table(ctx: Context) -> list[tuple[str, ...]]:
    with ctx.sessions() as conn:
        rows = conn.execute(text("SELECT * FROM deliveries ORDER BY id"))
        return [tuple(str(v) for v in row) for row in rows]


# The example file ---------------------------------------------------------------------


def test_examples_import_cleanly(ctx: Context) -> None:
    import_profiles(ctx, CLI, EXAMPLES / "profiles.csv", "newsletter")
    report = import_deliveries(ctx, CLI, EXAMPLES / "deliveries.yml")

    assert report.created == ["spring-sale", "black-friday", "weekly-digest"]
    assert report.warnings == []
    stored = deliveries(ctx)
    sale, friday, digest = stored["spring-sale"], stored["black-friday"], stored["weekly-digest"]
    assert (sale.state, sale.schedule_mode, sale.scheduled_at) == ("editing", "on-confirm", None)
    assert sale.validity_seconds == 302_400 and sale.reply_to == "support@example.com"
    assert sale.sender == "Greenlight Shop <news@example.com>"
    assert friday.schedule_mode == "at" and friday.schedule_timezone == "Europe/Paris"
    assert friday.scheduled_at == datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    assert friday.efs is True and friday.validity_seconds == 2 * 86_400
    assert digest.recurrence_cron == "0 9 * * 1"
    assert digest.recurrence_timezone == "Europe/Paris"
    assert (digest.aggregation, digest.request_confirmation) == ("none", True)
    assert digest.approvals_required == 2 and digest.html is None
    assert {d.slack_channel for d in stored.values()} == {"C0123456789"}
    for d in stored.values():
        with ctx.sessions() as s:
            d = s.merge(d)
            assert delivery_hash(d) == d.definition_hash


def test_reimport_changes_nothing(ctx: Context, clock: FixedClock) -> None:
    import_profiles(ctx, CLI, EXAMPLES / "profiles.csv", "newsletter")
    import_deliveries(ctx, CLI, EXAMPLES / "deliveries.yml")
    before = table(ctx)
    clock.advance(timedelta(hours=1))

    report = import_deliveries(ctx, CLI, EXAMPLES / "deliveries.yml")

    assert report.unchanged == ["spring-sale", "black-friday", "weekly-digest"]
    assert report.created == report.updated == report.back_to_editing == []
    assert table(ctx) == before


# Every rule ---------------------------------------------------------------------------

RULES = [
    pytest.param(
        entry(colour="red"), "colour", "unknown field; the fields are: ref,", id="unknown"
    ),
    pytest.param(
        entry(recurrence={"cron": "0 9 * * 1", "timezone": "UTC", "agregation": "day"}),
        "recurrence.agregation",
        "unknown field; did you mean aggregation? the fields of recurrence are: cron,",
        id="misspelt",
    ),
    pytest.param(entry(name=None), "name", "this field is required", id="missing-name"),
    pytest.param(entry(ref="Spring Sale"), "ref", "is not a ref", id="bad-ref"),
    pytest.param(entry(**{"from": "news at example"}), "from", "not a valid address", id="from"),
    pytest.param(entry(reply_to="a@@b.com"), "reply_to", "not a valid address", id="reply-to"),
    pytest.param(entry(html=None, text=None), "html", "html body, a text body", id="no-body"),
    pytest.param(entry(subject="Hi {{ first_name"), "subject", "template line 1", id="subject"),
    pytest.param(
        entry(html="<p>\n{{ first_name }}\n{% if plan %}\nPro\n"),
        "html",
        "template line 3",
        id="unclosed-if",
    ),
    pytest.param(
        entry(schedule={"mode": "at", "at": "2026-12-01T08:00"}),
        "schedule.timezone",
        "mode: at needs a time zone",
        id="at-without-timezone",
    ),
    pytest.param(
        entry(schedule={"mode": "at", "timezone": "Europe/Paris"}),
        "schedule.at",
        "mode: at needs a contact date",
        id="at-without-date",
    ),
    pytest.param(
        entry(schedule={"mode": "on-confirm", "at": "2026-12-01T08:00"}),
        "schedule.at",
        "used only with mode: at",
        id="date-without-mode-at",
    ),
    pytest.param(
        entry(schedule={"mode": "at", "at": "2026-12-01", "timezone": "Europe/Paris"}),
        "schedule.at",
        "give a date and a time",
        id="date-only",
    ),
    pytest.param(
        entry(schedule={"mode": "at", "at": "2026-12-01T08:00", "timezone": "Paris"}),
        "schedule.timezone",
        "'Paris' is not a known time zone",
        id="bad-timezone",
    ),
    pytest.param(entry(schedule={"mode": "later"}), "schedule.mode", "on-confirm", id="mode"),
    pytest.param(
        entry(recurrence={"cron": "0 9 * *", "timezone": "Europe/Paris"}),
        "recurrence.cron",
        "is not a cron expression",
        id="bad-cron",
    ),
    pytest.param(
        entry(recurrence={"cron": "0 9 * * 1", "timezone": "Europe/Paris", "aggregation": "year"}),
        "recurrence.aggregation",
        "'none', 'day', 'week' or 'month'",
        id="bad-aggregation",
    ),
    pytest.param(
        entry(
            recurrence={"cron": "0 9 * * 1", "timezone": "Europe/Paris", "approvals_required": 0}
        ),
        "recurrence.approvals_required",
        "greater than or equal to 1",
        id="approvals",
    ),
    pytest.param(
        entry(
            recurrence={"cron": "0 9 * * 1", "timezone": "Europe/Paris"},
            schedule={"mode": "on-confirm"},
        ),
        "schedule",
        "cannot also have a schedule",
        id="recurring-with-schedule",
    ),
    pytest.param(entry(validity="4d"), "validity", "at most 3d12h", id="validity-too-long"),
    pytest.param(entry(validity="soon"), "validity", "write it like 3d12h", id="validity-form"),
    pytest.param(entry(efs="maybe"), "efs", "valid boolean", id="efs"),
    pytest.param(entry(slack_channel="my channel"), "slack_channel", "no spaces", id="channel"),
]


@pytest.mark.usefixtures("audience")
@pytest.mark.parametrize(("item", "field", "reason"), RULES)
def test_each_rule_names_the_entry_and_field(
    ctx: Context, tmp_path: Path, item: dict[str, Any], field: str, reason: str
) -> None:
    path = write(tmp_path, [item])
    (problem,) = rejected(ctx, path)
    assert problem.file == str(path)
    assert problem.where == f"entry 1 (ref {item['ref']}, line 1)"
    assert problem.field == field
    assert reason in problem.reason
    assert deliveries(ctx) == {}


@pytest.mark.usefixtures("audience")
def test_request_confirmation_with_an_aggregation_period_is_refused(
    ctx: Context, tmp_path: Path
) -> None:
    other = entry(ref="other")
    digest = entry(
        ref="daily-digest",
        recurrence={
            "cron": "0 9 * * *",
            "timezone": "Europe/Paris",
            "aggregation": "day",
            "request_confirmation": True,
        },
    )
    path = write(tmp_path, [other, digest])
    (problem,) = rejected(ctx, path)
    assert problem.where == "entry 2 (ref daily-digest, line 8)"
    assert problem.field == "recurrence.request_confirmation"
    assert problem.reason == (
        "confirmation before sending is only possible without an aggregation period "
        "(this one aggregates by day); remove request_confirmation or set aggregation: none"
    )
    assert deliveries(ctx) == {}  # the good entry was not imported either


@pytest.mark.usefixtures("audience")
def test_request_confirmation_defaults_by_aggregation(ctx: Context, tmp_path: Path) -> None:
    weekly = {"cron": "0 9 * * 1", "timezone": "Europe/Paris"}
    path = write(
        tmp_path,
        [
            entry(ref="plain", recurrence=weekly),
            entry(ref="by-day", recurrence={**weekly, "aggregation": "day"}),
        ],
    )
    import_deliveries(ctx, CLI, path)
    stored = deliveries(ctx)
    assert stored["plain"].request_confirmation is True
    assert (stored["by-day"].aggregation, stored["by-day"].request_confirmation) == ("day", False)


def test_a_missing_audience_says_how_to_create_it(ctx: Context, tmp_path: Path) -> None:
    (problem,) = rejected(ctx, write(tmp_path, [entry(audience="vip")]))
    assert problem.field == "audience"
    assert problem.reason == (
        "audience 'vip' does not exist; import profiles with --audience vip first"
    )


@pytest.mark.usefixtures("audience")
def test_every_problem_of_a_file_is_listed(ctx: Context, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            entry(ref="good"),
            entry(ref="twice", colour="red", validity="9d"),
            entry(ref="twice"),
            {"name": "no ref", "audience": "nowhere"},
        ],
    )
    problems = rejected(ctx, path)
    found = [(p.where.split(" (")[0], p.field) for p in problems]
    assert found == [
        ("entry 2", "validity"),
        ("entry 2", "colour"),
        ("entry 3", "ref"),
        ("entry 4", "ref"),
        ("entry 4", "from"),
        ("entry 4", "subject"),
        ("entry 4", "audience"),
    ]
    assert problems[2].reason.startswith("ref 'twice' is already used by entry 2 (line 8)")
    assert problems[3].where == "entry 4 (line 24)"
    assert deliveries(ctx) == {}


def test_yaml_syntax_errors_name_the_line(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, "- ref: a\n  name: [unclosed\n  audience: b\n")
    (problem,) = rejected(ctx, path)
    assert problem.where.startswith("line ") and "not valid YAML" in problem.reason

    (problem,) = rejected(ctx, write(tmp_path, "ref: a\nname: b\n"))
    assert (problem.where, problem.reason) == (
        "line 1",
        "the file must be a list of deliveries, each starting with '- ref: …'",
    )

    path.write_bytes(b"- ref: a\n  name: caf\xe9\n")
    (problem,) = rejected(ctx, path)
    assert (problem.where, problem.reason) == ("line 2", "not UTF-8 text; save it as UTF-8")


@pytest.mark.usefixtures("audience")
def test_a_key_given_twice_is_refused(ctx: Context, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "- ref: a\n  name: A\n  audience: newsletter\n  from: news@example.com\n"
        "  subject: Hi\n  text: Hi\n  subject: Hello\n",
    )
    (problem,) = rejected(ctx, path)
    assert problem.field == "subject"
    assert problem.reason == "this field appears twice (lines 5 and 7)"


# Schedules ----------------------------------------------------------------------------


@pytest.mark.usefixtures("audience")
def test_a_contact_date_without_offset_is_read_in_its_time_zone(
    ctx: Context, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "- ref: naive\n  name: N\n  audience: newsletter\n  from: news@example.com\n"
        "  subject: Hi\n  text: Hi\n"
        "  schedule: {mode: at, at: 2027-07-01T09:30:00, timezone: Europe/Paris}\n"
        "- ref: offset\n  name: O\n  audience: newsletter\n  from: news@example.com\n"
        "  subject: Hi\n  text: Hi\n"
        "  schedule: {mode: at, at: '2027-07-01T09:30:00-04:00', timezone: America/New_York}\n",
    )
    report = import_deliveries(ctx, CLI, path)
    stored = deliveries(ctx)
    assert stored["naive"].scheduled_at == datetime(2027, 7, 1, 7, 30, tzinfo=UTC)
    assert stored["offset"].scheduled_at == datetime(2027, 7, 1, 13, 30, tzinfo=UTC)
    assert report.warnings == []


@pytest.mark.usefixtures("audience")
def test_a_contact_date_in_the_past_is_a_warning(ctx: Context, tmp_path: Path) -> None:
    past = {"mode": "at", "at": "2026-01-01T08:00", "timezone": "Europe/Paris"}
    report = import_deliveries(ctx, CLI, write(tmp_path, [entry(schedule=past)]))
    (warning,) = report.warnings
    assert warning.field == "schedule.at" and "in the past" in warning.reason


# Updating by ref ----------------------------------------------------------------------


@pytest.mark.usefixtures("audience")
def test_a_rename_keeps_the_preparation(ctx: Context, tmp_path: Path) -> None:
    import_deliveries(ctx, CLI, write(tmp_path, [entry()]))
    set_state(ctx, "spring-sale", "ready")
    old_hash = deliveries(ctx)["spring-sale"].definition_hash

    report = import_deliveries(
        ctx, CLI, write(tmp_path, [entry(name="Spring sale 2026", slack_channel="C0999")])
    )

    assert report.updated == ["spring-sale"] and report.back_to_editing == []
    sale = deliveries(ctx)["spring-sale"]
    assert (sale.name, sale.slack_channel, sale.state) == ("Spring sale 2026", "C0999", "ready")
    assert sale.definition_hash == old_hash


@pytest.mark.usefixtures("audience")
def test_a_content_change_sends_a_ready_delivery_back_to_editing(
    ctx: Context, tmp_path: Path
) -> None:
    import_deliveries(ctx, CLI, write(tmp_path, [entry(), entry(ref="draft")]))
    set_state(ctx, "spring-sale", "ready")
    old_hash = deliveries(ctx)["spring-sale"].definition_hash

    report = import_deliveries(
        ctx,
        CLI,
        write(tmp_path, [entry(subject="Last days!"), entry(ref="draft", text="New text")]),
    )

    assert report.updated == ["spring-sale", "draft"]
    assert report.back_to_editing == ["spring-sale"]
    stored = deliveries(ctx)
    assert stored["spring-sale"].state == "editing"
    assert stored["spring-sale"].subject == "Last days!"
    assert stored["spring-sale"].definition_hash != old_hash
    assert stored["draft"].text == "New text" and stored["draft"].state == "editing"
    with ctx.sessions() as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    actions = [(e.action, e.subject_ref) for e in entries if e.subject_kind == "delivery"]
    assert actions == [
        ("delivery.create", "spring-sale"),
        ("delivery.create", "draft"),
        ("delivery.update", "spring-sale"),
        ("delivery.update", "draft"),
    ]
    assert entries[-2].detail["changed"] == ["subject"]
    assert entries[-2].detail["state"] == {"from": "ready", "to": "editing"}


@pytest.mark.usefixtures("audience")
@pytest.mark.parametrize("state", ["start-pending", "in-progress", "paused", "finished"])
def test_a_delivery_past_ready_cannot_change_what_it_sends(
    ctx: Context, tmp_path: Path, state: str
) -> None:
    import_deliveries(ctx, CLI, write(tmp_path, [entry(), entry(ref="draft")]))
    set_state(ctx, "spring-sale", state)
    before = table(ctx)

    path = write(tmp_path, [entry(ref="draft", name="Renamed"), entry(validity="1d")])
    (problem,) = rejected(ctx, path)

    assert problem.where == "entry 2 (ref spring-sale, line 8)"
    assert problem.reason.startswith(f"delivery 'spring-sale' is {state} and cannot change now")
    assert table(ctx) == before  # the rename of the draft was not applied either

    # A rename alone is fine in any state.
    report = import_deliveries(ctx, CLI, write(tmp_path, [entry(name="Renamed")]))
    assert report.updated == ["spring-sale"]
    assert deliveries(ctx)["spring-sale"].state == state


@pytest.mark.usefixtures("audience")
def test_moving_to_another_audience_is_a_change(ctx: Context, tmp_path: Path) -> None:
    people = tmp_path / "vip.csv"
    people.write_text("email\nvip@example.com\n")
    import_profiles(ctx, CLI, people, "vip")
    import_deliveries(ctx, CLI, write(tmp_path, [entry()]))
    set_state(ctx, "spring-sale", "ready")

    report = import_deliveries(ctx, CLI, write(tmp_path, [entry(audience="vip")]))

    assert report.back_to_editing == ["spring-sale"]
    with ctx.sessions() as s:
        sale = s.scalars(select(Delivery)).one()
        assert sale.audience.name == "vip"
        assert delivery_hash(sale) == sale.definition_hash


@pytest.mark.usefixtures("audience")
def test_approval_expiry_is_a_duration_changed_in_place(ctx: Context, tmp_path: Path) -> None:
    recurrence = {"cron": "0 9 * * 1", "timezone": "Europe/Paris", "approval_expiry": "2h"}
    import_deliveries(ctx, CLI, write(tmp_path, [entry(recurrence=recurrence)]))
    prepare_delivery(ctx, CLI, "spring-sale")
    assert deliveries(ctx)["spring-sale"].approval_expiry_seconds == 7200
    shorter = {**recurrence, "approval_expiry": "90m"}
    import_deliveries(ctx, CLI, write(tmp_path, [entry(recurrence=shorter)]))
    stored = deliveries(ctx)["spring-sale"]
    assert (stored.approval_expiry_seconds, stored.state) == (5400, "ready")

    (problem,) = rejected(
        ctx, write(tmp_path, [entry(recurrence={**recurrence, "approval_expiry": "soon"})])
    )
    assert problem.field == "recurrence.approval_expiry"
    assert "write it like 3d12h, 36h or 90m" in problem.reason
