"""Block Kit builders (bot/blocks): what a person sees in Slack, checked without Slack.

The builders are pure, so these tests feed them the typed views the services return
(`DeliveryDetail`, `DeploymentView`, `Card`, `ApprovalRequestView`, …) and look at the
dicts they build: the ids the handlers listen on, the values the buttons carry, the
sentences of the confirm dialogs, which buttons each state offers. Every message also
goes through `check_message`, a validator of the Block Kit limits Slack documents: a
message that breaks one is refused whole (`invalid_blocks`), so a long delivery name
must never be able to hide a card or a Deployment message.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.blocks import ids
from bot.blocks.approval import approval_request
from bot.blocks.campaign import (
    SUBCOMMANDS,
    audit_message,
    error_blocks,
    help_blocks,
    history_blocks,
    list_blocks,
    prepare_result_blocks,
    roles_blocks,
)
from bot.blocks.card import delivery_card, delivery_picker
from bot.blocks.deployment import deployment_message
from bot.blocks.home import home_view
from bot.blocks.kit import escape, truncate
from bot.domain.approval import RequestState
from bot.domain.exclusions import ExclusionReason
from bot.domain.executions import MAIN_KEY, ExecutionState
from bot.domain.failures import FailureReason
from bot.domain.kpi import DASH, Counters
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import FailureType, LogStatus
from bot.domain.preparation import PreparationError, PreparationWarning
from bot.domain.roles import Role, SubjectKind
from bot.domain.schedule import Aggregation, ScheduleKind
from bot.services.audit import AuditPage, AuditRecord
from bot.services.deliveries.prepare import PreparationResult
from bot.services.deliveries.views import (
    Card,
    DeliveryDetail,
    DeliverySummary,
    DeploymentView,
    ExecutionView,
    Figures,
    HistoryEntry,
    PreparationView,
    Recurrence,
    Schedule,
    SendingProgress,
)
from bot.services.home_views import HomeView
from bot.services.recurring.views import Approval, ApprovalRequestView, Decided
from bot.services.roles import Grant

# --- a validator of Slack's documented limits --------------------------------------

BLOCK_TYPES = {"section", "header", "context", "actions", "divider"}
TEXT_TYPES = {"plain_text", "mrkdwn"}


def check_text(obj: Any, where: str, limit: int, plain_only: bool = False) -> None:
    assert isinstance(obj, dict), f"{where}: a text object is a dict"
    assert obj.get("type") in TEXT_TYPES, f"{where}: text type {obj.get('type')!r}"
    if plain_only:
        assert obj["type"] == "plain_text", f"{where}: must be plain_text"
    text = obj.get("text")
    assert isinstance(text, str) and text.strip(), f"{where}: empty text"
    assert len(text) <= limit, f"{where}: {len(text)} characters > {limit}"
    if obj["type"] == "mrkdwn":
        assert "emoji" not in obj, f"{where}: mrkdwn takes no `emoji`"
    else:
        assert "verbatim" not in obj, f"{where}: plain_text takes no `verbatim`"


def check_confirm(dialog: Any, where: str) -> None:
    assert set(dialog) <= {"title", "text", "confirm", "deny", "style"}, where
    check_text(dialog["title"], f"{where}.title", 100, plain_only=True)
    check_text(dialog["text"], f"{where}.text", 300)
    check_text(dialog["confirm"], f"{where}.confirm", 30, plain_only=True)
    check_text(dialog["deny"], f"{where}.deny", 30, plain_only=True)
    assert dialog.get("style", "primary") in {"primary", "danger"}, where


def check_element(el: Any, where: str, action_ids: set[str]) -> None:
    kind = el.get("type")
    action_id = el.get("action_id")
    assert isinstance(action_id, str) and 0 < len(action_id) <= 255, f"{where}: action_id"
    assert action_id not in action_ids, f"{where}: action_id {action_id} twice in a message"
    action_ids.add(action_id)
    if kind == "button":
        check_text(el["text"], f"{where}.text", 75, plain_only=True)
        assert isinstance(el.get("value", ""), str) and len(el.get("value", "")) <= 2000, where
        assert el.get("style", "primary") in {"primary", "danger"}, where
        if "confirm" in el:
            check_confirm(el["confirm"], f"{where}.confirm")
    elif kind == "static_select":
        check_text(el["placeholder"], f"{where}.placeholder", 150, plain_only=True)
        options = el["options"]
        assert 1 <= len(options) <= 100, f"{where}: {len(options)} options"
        for i, option in enumerate(options):
            check_text(option["text"], f"{where}.options[{i}]", 75, plain_only=True)
            assert 0 < len(option["value"]) <= 150, f"{where}.options[{i}].value"
    else:
        raise AssertionError(f"{where}: unexpected element type {kind!r}")


def check_blocks(blocks: Any) -> None:
    """Every limit of Slack's Block Kit reference that these builders can reach."""
    assert isinstance(blocks, list) and 1 <= len(blocks) <= 50, "1 to 50 blocks"
    json.dumps(blocks)  # plain JSON, nothing else
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        assert isinstance(block, dict) and block.get("type") in BLOCK_TYPES, where
        if "block_id" in block:
            block_id = block["block_id"]
            assert 0 < len(block_id) <= 255 and block_id not in block_ids, where
            block_ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            check_text(block["text"], where, 150, plain_only=True)
        elif kind == "section":
            assert "text" in block or "fields" in block, f"{where}: text or fields"
            if "text" in block:
                check_text(block["text"], where, 3000)
            fields = block.get("fields", [])
            assert len(fields) <= 10, f"{where}: {len(fields)} fields"
            for j, field in enumerate(fields):
                check_text(field, f"{where}.fields[{j}]", 2000)
            if "accessory" in block:
                check_element(block["accessory"], f"{where}.accessory", action_ids)
        elif kind == "context":
            elements = block["elements"]
            assert 1 <= len(elements) <= 10, where
            for j, el in enumerate(elements):
                check_text(el, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            elements = block["elements"]
            assert 1 <= len(elements) <= 25, where
            for j, el in enumerate(elements):
                check_element(el, f"{where}.elements[{j}]", action_ids)


def check_message(message: Any) -> None:
    assert set(message) == {"text", "blocks"}
    assert isinstance(message["text"], str) and message["text"].strip()
    assert len(message["text"]) <= 40_000
    check_blocks(message["blocks"])


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def elements(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every interactive element (buttons, selects) of a message."""
    return [n for n in walk(blocks) if "action_id" in n]


def by_action(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {el["action_id"]: el for el in elements(blocks)}


def all_text(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(n["text"] for n in walk(blocks) if n.get("type") in TEXT_TYPES)


# --- typed views, as bot.services.deliveries.views and friends build them ----------------

PREPARED_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CONFIRMED_AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STARTED_AT = datetime(2026, 11, 23, 10, 0, 1, tzinfo=UTC)

ON_CONFIRM = Schedule(ScheduleKind.ON_CONFIRM)
AT_SCHEDULE = Schedule(ScheduleKind.AT, datetime(2026, 11, 27, 8, 0, tzinfo=UTC), "Europe/Paris")
RECURRENCE = Recurrence(
    cron="0 9 * * 1",
    timezone="Europe/Paris",
    aggregation=Aggregation.NONE,
    request_confirmation=True,
    approvals_required=2,
    approval_expiry=None,
)
RECURRING = Schedule(ScheduleKind.RECURRING, None, "Europe/Paris")

# A prepared delivery before its send: every recipient's log is queued.
NOT_SENT = Counters(to_deliver=12_408, queued=12_408)
# While sending: 1,234 relayed (1,200 sent, 34 failed), 150 openers and 30 clickers.
SENDING = Counters(
    to_deliver=12_408, queued=11_174, sent=1_200, failed=34, unique_opens=150, unique_clicks=30
)


def preparation(**changes: Any) -> PreparationView:
    """The preparation of a ready delivery: 12,415 targeted, 7 excluded, 12,408 to deliver."""
    base = PreparationView(
        prepared_at=PREPARED_AT,
        current=True,
        targeted=12_415,
        excluded=7,
        to_deliver=12_408,
        exclusions={ExclusionReason.DUPLICATE_ADDRESS: 4, ExclusionReason.INVALID_ADDRESS: 3},
        errors=[],
        warnings=[],
    )
    return replace(base, **changes)


def execution(
    key: str = MAIN_KEY,
    state: ExecutionState = ExecutionState.READY,
    counters: Counters = NOT_SENT,
    **changes: Any,
) -> ExecutionView:
    base = ExecutionView(
        key=key,
        state=state,
        occurrence_at=None,
        started_at=None,
        validity_ends_at=None,
        exclusions={},
        figures=Figures(counters),
    )
    return replace(base, **changes)


def detail(**changes: Any) -> DeliveryDetail:
    """`read_detail` of a prepared, ready, on-confirm delivery (its main execution too)."""
    base = DeliveryDetail(
        ref="spring-sale",
        name="Spring sale",
        state=DeliveryState.READY,
        audience="newsletter",
        sender="Shop <news@shop.example>",
        reply_to=None,
        subject="Our spring sale",
        schedule=ON_CONFIRM,
        recurrence=None,
        validity="3d12h",
        efs=False,
        slack_channel="C0123456789",
        preparation=preparation(),
        figures=Figures(NOT_SENT),
        execution=None,
        confirmed_by=None,
        confirmed_at=None,
        started_at=None,
        finished_at=None,
        executions=[],
    )
    d = replace(base, **changes)
    if "execution" not in changes and d.recurrence is None:
        d = replace(
            d, execution=execution(state=ExecutionState(d.state.value), counters=d.figures.counters)
        )
    return d


def recurring(**changes: Any) -> DeliveryDetail:
    """A weekly delivery (Mondays at 09:00 Paris) whose occurrences need two approvals."""
    base: dict[str, Any] = {
        "ref": "weekly",
        "name": "Weekly news",
        "schedule": RECURRING,
        "recurrence": RECURRENCE,
    }
    return detail(**{**base, **changes})


def sending(state: DeliveryState = DeliveryState.IN_PROGRESS, **changes: Any) -> DeliveryDetail:
    """A delivery while or after sending, confirmed by Alice, with the SENDING figures."""
    base: dict[str, Any] = {
        "state": state,
        "figures": Figures(SENDING),
        "confirmed_by": "U0ALICE",
        "confirmed_at": CONFIRMED_AT,
        "started_at": STARTED_AT,
    }
    return detail(**{**base, **changes})


def progress(state: DeliveryState = DeliveryState.IN_PROGRESS, **changes: Any) -> SendingProgress:
    """`read_progress` while sending: 1,234 of 12,408 relayed, 350 msg/s."""
    base = SendingProgress(
        ref="spring-sale",
        state=state,
        relayed=1_234,
        to_deliver=12_408,
        queued=11_174,
        rate_per_s=350.0,
    )
    return replace(base, **changes)


def deployment(
    d: DeliveryDetail, p: SendingProgress | None = None, now: datetime | None = None
) -> dict[str, Any]:
    return deployment_message(DeploymentView(d, p, now))


def card(d: DeliveryDetail, not_ready: str | None = None) -> list[dict[str, Any]]:
    return delivery_card(Card(d, not_ready))


def row(ref: str, name: str | None = None, **changes: Any) -> DeliverySummary:
    """A `read_summaries` row: a ready delivery, prepared for what it is."""
    base = DeliverySummary(
        ref=ref,
        name=name or ref.replace("-", " ").capitalize(),
        state=DeliveryState.READY,
        audience="newsletter",
        schedule=ON_CONFIRM,
        to_deliver=1_500,
        sent=0,
        prepared=True,
    )
    return replace(base, **changes)


def pickable(rows: Sequence[DeliverySummary]) -> list[DeliverySummary]:
    """What `ready_to_confirm` hands the picker."""
    return [r for r in rows if r.pickable]


def prepared(**changes: Any) -> PreparationResult:
    """`prepare` of a delivery that is now ready: 293 of 300 to deliver."""
    base = PreparationResult(
        ref="spring-sale",
        state=DeliveryState.READY,
        targeted=300,
        excluded=7,
        to_deliver=293,
        exclusions={ExclusionReason.DUPLICATE_ADDRESS: 4, ExclusionReason.INVALID_ADDRESS: 3},
        errors=[],
        errors_total=0,
        warnings=[],
        duration_s=0.42,
    )
    return replace(base, **changes)


def history(**changes: Any) -> HistoryEntry:
    """A `marketing_history` entry: a one-off message, sent, opened twice, clicked once."""
    base = HistoryEntry(
        date=datetime(2026, 11, 27, 8, 2, tzinfo=UTC),
        email="ada@x.example",
        ref="spring-sale",
        name="Spring sale",
        execution=MAIN_KEY,
        status=LogStatus.SENT,
        failure_type=None,
        failure_reason=None,
        opens=2,
        clicks=1,
    )
    return replace(base, **changes)


OCCURRENCE_AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def approval_view(**changes: Any) -> ApprovalRequestView:
    """The open request of the occurrence of Mon 30 Nov 2026, 09:00 Paris, of `weekly`."""
    base = ApprovalRequestView(
        ref="weekly",
        name="Weekly news",
        timezone="Europe/Paris",
        key="2026-11-30T08:00",
        occurrence_at=OCCURRENCE_AT,
        to_deliver=4_210,
        exclusions={ExclusionReason.QUARANTINED: 12, ExclusionReason.DENYLISTED: 3},
        approvals=[],
        required=1,
        decided=None,
    )
    return replace(base, **changes)


# --- ids and button values ----------------------------------------------------------


def test_action_ids_are_the_ones_handlers_and_manifest_share() -> None:
    assert ids.CONFIRM_SEND == "confirm_send"
    assert ids.PICK_DELIVERY == "pick_delivery"
    assert ids.COMPUTE_STATS == "compute_stats"
    assert (ids.PAUSE, ids.RESUME, ids.STOP) == ("pause_send", "resume_send", "stop_send")
    assert ids.APPROVE_OCCURRENCE == "approve_occurrence"
    assert ids.SKIP_OCCURRENCE == "skip_occurrence"
    assert ids.COMMANDS == ("/confirm-send", "/campaign")
    assert (ids.AUDIT_OLDER, ids.AUDIT_NEWER) == ("audit_older", "audit_newer")
    assert ids.SEND_PROOF == "send_proof"
    assert len(set(ids.ACTION_IDS)) == len(ids.ACTION_IDS) == 11


def test_a_button_acting_on_a_delivery_carries_its_bare_ref() -> None:
    assert ids.button_value("spring-sale") == "spring-sale"
    assert ids.parse_button_value("spring-sale") == {"ref": "spring-sale"}


def test_an_approval_button_carries_ref_and_occurrence_as_compact_json() -> None:
    value = ids.button_value("weekly", occurrence="2026-11-30T08:00")
    assert value == '{"occurrence":"2026-11-30T08:00","ref":"weekly"}'
    assert ids.parse_button_value(value) == {"ref": "weekly", "occurrence": "2026-11-30T08:00"}


@given(
    ref=st.text(min_size=1, max_size=100).filter(str.strip),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda k: k != "ref"),
        st.one_of(st.text(max_size=50), st.integers(), st.booleans(), st.none()),
        max_size=3,
    ),
)
def test_any_button_value_parses_back_to_what_was_encoded(ref: str, extra: dict[str, Any]) -> None:
    value = ids.button_value(ref, **extra)
    assert len(value) <= 2000
    assert ids.parse_button_value(value) == {"ref": ref, **extra}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ('{"ref": "spring', "not valid JSON"),
        ("[1, 2]", "not a delivery ref"),
        ('{"ref": "a"', "not valid JSON"),
        ('{"ref": "a", "x": }', "not valid JSON"),
        ('{"occurrence": "x"}', "no `ref`"),
        ('{"ref": ""}', "no `ref`"),
        ('{"ref": 3}', "no `ref`"),
        ("spring sale", "not a delivery ref"),
        (None, "string"),
    ],
)
def test_a_malformed_button_value_is_refused_with_a_reason(value: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ids.parse_button_value(value)


def test_a_button_value_without_a_ref_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="ref"):
        ids.button_value("")
    with pytest.raises(ValueError, match="at most 2000"):
        ids.button_value("r", note="x" * 2000)


# --- the /confirm-send card ------------------------------------------------------


def test_card_shows_what_a_person_needs_to_decide() -> None:
    blocks = card(detail())
    check_blocks(blocks)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Spring sale (spring-sale)", "emoji": True},
    }
    fields = [f["text"] for b in blocks for f in b.get("fields", [])]
    assert fields == [
        "*State*\nready",
        "*Audience*\nnewsletter",
        "*To deliver*\n12,408",
        "*Exclusions*\n7\nduplicate address: 4\ninvalid address: 3",
        "*Schedule*\nas soon as confirmed",
        "*Validity*\n3d12h",
        "*EFS*\noff",
    ]


def test_confirm_button_of_an_on_confirm_delivery_says_now() -> None:
    button = by_action(card(detail()))[ids.CONFIRM_SEND]
    assert button["type"] == "button" and button["style"] == "primary"
    assert button["text"]["text"] == "Confirm send"
    assert ids.parse_button_value(button["value"])["ref"] == "spring-sale"
    assert button["confirm"]["title"]["text"] == "Confirm send"
    assert button["confirm"]["text"]["text"] == "Send *Spring sale* to 12,408 recipients now."
    assert button["confirm"]["confirm"]["text"] == "OK"
    assert button["confirm"]["deny"]["text"] == "Cancel"


def test_confirm_button_of_an_at_delivery_says_when_in_its_time_zone() -> None:
    blocks = card(detail(schedule=AT_SCHEDULE))
    check_blocks(blocks)
    dialog = by_action(blocks)[ids.CONFIRM_SEND]["confirm"]
    assert dialog["text"]["text"] == (
        "Send *Spring sale* to 12,408 recipients at 09:00 Europe/Paris on Fri 27 Nov 2026."
    )
    assert "*Schedule*\n09:00 Europe/Paris on Fri 27 Nov 2026" in all_text(blocks)


def test_a_contact_date_stored_without_offset_is_read_as_utc() -> None:
    """SQLite hands datetimes back naive; the database holds UTC."""
    schedule = replace(AT_SCHEDULE, at=datetime(2026, 7, 1, 7, 30))
    dialog = by_action(card(detail(schedule=schedule)))[ids.CONFIRM_SEND]
    assert dialog["confirm"]["text"]["text"].endswith("at 09:30 Europe/Paris on Wed 1 Jul 2026.")


def test_one_recipient_is_singular() -> None:
    d = detail(preparation=preparation(targeted=1, excluded=0, to_deliver=1, exclusions={}))
    dialog = by_action(card(d))[ids.CONFIRM_SEND]
    assert dialog["confirm"]["text"]["text"] == "Send *Spring sale* to 1 recipient now."


def test_a_delivery_that_is_not_ready_gets_the_reason_and_no_button() -> None:
    reason = "spring-sale is not prepared yet: run `/campaign prepare spring-sale` first"
    blocks = card(detail(state=DeliveryState.EDITING), reason)
    check_blocks(blocks)
    assert elements(blocks) == []
    assert blocks[-1]["type"] == "context"
    assert reason in blocks[-1]["elements"][0]["text"]


def test_card_of_an_unprepared_delivery_has_no_figures() -> None:
    prep = preparation(
        prepared_at=None, current=False, targeted=0, excluded=0, to_deliver=0, exclusions={}
    )
    d = detail(state=DeliveryState.EDITING, preparation=prep, figures=Figures())
    blocks = card(d, "not prepared")
    check_blocks(blocks)
    assert "*To deliver*\nnot prepared yet" in all_text(blocks)
    assert f"*Exclusions*\n{DASH}" in all_text(blocks)


def test_card_of_a_delivery_changed_since_its_preparation_says_so() -> None:
    blocks = card(detail(preparation=preparation(current=False)), "changed")
    assert "*State*\nready (changed since it was prepared)" in all_text(blocks)


def test_card_of_a_recurring_delivery_shows_cron_and_time_zone() -> None:
    blocks = card(recurring(), "recurring")
    assert "*Schedule*\nrecurring: `0 9 * * 1` Europe/Paris" in all_text(blocks)


def test_card_escapes_markup_coming_from_data() -> None:
    blocks = card(detail(audience="<!channel> & friends"))
    assert "*Audience*\n&lt;!channel&gt; &amp; friends" in all_text(blocks)
    assert "<!channel>" not in all_text(blocks[1:])


def test_card_shows_the_subject_rendered_for_a_recipient_beside_its_template() -> None:
    d = detail(subject="Hi {{ first_name }} <3")
    blocks = delivery_card(Card(d, None, sample_subject="Hi Ann <3", sample_for="ann@x.example"))
    text = all_text(blocks)
    assert "Subject: Hi Ann &lt;3 (for ann@x.example; template: Hi {{ first_name }} &lt;3)" in text
    plain = all_text(delivery_card(Card(d, None)))
    assert "Subject: Hi {{ first_name }} &lt;3" in plain and "template:" not in plain


def test_card_shows_the_start_of_the_text_escaped_and_the_preview_link() -> None:
    text = "Hi Ann <@U123> & <https://evil.example|click>\n\n" + "x" * 1000
    url = "https://greenlight.example/p/AbC-_9"
    blocks = delivery_card(
        Card(detail(), None, "Hi Ann", "ann@x.example", sample_text=text, preview_url=url)
    )
    shown = all_text(blocks)
    escaped = "Hi Ann &lt;@U123&gt; &amp; &lt;https://evil.example|click&gt; x"
    assert f"Text for ann@x.example: {escaped}" in shown
    assert "<@U123>" not in shown and "<https://evil" not in shown
    [line] = [t for t in shown.split("\n") if t.startswith("Text for")]
    assert len(line) <= len("Text for ann@x.example: ") + 300 and line.endswith("…")
    assert f"<{url}|Preview>" in shown
    bare = all_text(delivery_card(Card(detail(), None)))
    assert "Preview>" not in bare and "Text for" not in bare


def test_the_proof_button_is_offered_wherever_the_message_renders() -> None:
    def element_ids(card: Card) -> list[str]:
        blocks = delivery_card(card)
        check_blocks(blocks)
        return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]

    rendered = {"sample_subject": "Hi Ann", "sample_for": "ann@x.example"}
    assert element_ids(Card(detail(), None, **rendered)) == [ids.CONFIRM_SEND, ids.SEND_PROOF]
    assert element_ids(Card(detail(), "not prepared", **rendered)) == [ids.SEND_PROOF]
    assert element_ids(Card(detail(), "not prepared")) == []
    assert element_ids(Card(detail(), None)) == [ids.CONFIRM_SEND]


def test_only_ready_deliveries_prepared_for_what_they_are_can_be_picked() -> None:
    assert row("spring-sale").pickable
    assert not row("draft", state=DeliveryState.EDITING).pickable
    assert not row("stale", prepared=False).pickable
    assert not row("sending", state=DeliveryState.IN_PROGRESS).pickable


def test_picker_offers_ready_deliveries_by_ref() -> None:
    rows = [
        row("spring-sale", "Spring sale", to_deliver=12_408),
        row("draft", state=DeliveryState.EDITING),
        row("stale", prepared=False),
        row("one", "One", to_deliver=1),
    ]
    blocks = delivery_picker(pickable(rows))
    check_blocks(blocks)
    select = by_action(blocks)[ids.PICK_DELIVERY]
    assert select["type"] == "static_select"
    assert [(o["text"]["text"], o["value"]) for o in select["options"]] == [
        ("Spring sale (spring-sale) — 12,408 recipients", "spring-sale"),
        ("One (one) — 1 recipient", "one"),
    ]
    assert "2 deliveries are ready to confirm." in all_text(blocks)


def test_picker_leaves_out_refs_too_long_for_an_option_value() -> None:
    blocks = delivery_picker([row("r" * 151), row("spring-sale")])
    check_blocks(blocks)
    options = by_action(blocks)[ids.PICK_DELIVERY]["options"]
    assert [o["value"] for o in options] == ["spring-sale"]


def test_picker_without_ready_deliveries_says_how_to_prepare_one() -> None:
    blocks = delivery_picker(pickable([row("draft", state=DeliveryState.EDITING)]))
    check_blocks(blocks)
    assert elements(blocks) == []
    assert "/campaign prepare" in all_text(blocks)


def test_picker_keeps_to_100_options_and_says_how_to_reach_the_others() -> None:
    blocks = delivery_picker([row(f"d-{i:03}") for i in range(130)])
    check_blocks(blocks)
    assert len(by_action(blocks)[ids.PICK_DELIVERY]["options"]) == 100
    assert "first 100 of 130" in all_text(blocks)
    assert "/confirm-send REF" in all_text(blocks)


def test_picker_shortens_the_name_and_keeps_ref_and_count() -> None:
    blocks = delivery_picker([row("spring-sale", "Spring " * 40, to_deliver=12_408)])
    option = by_action(blocks)[ids.PICK_DELIVERY]["options"][0]
    assert len(option["text"]["text"]) <= 75
    assert option["text"]["text"].endswith("… (spring-sale) — 12,408 recipients")
    assert option["value"] == "spring-sale"


# --- the Deployment message ---------------------------------------------------------


def test_deployment_message_while_relaying_shows_the_progress_bar() -> None:
    message = deployment(sending(), progress())
    check_message(message)
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == "Deployment — Spring sale"
    bar = next(b for b in blocks if b.get("block_id") == ids.DEPLOYMENT_PROGRESS_BLOCK)
    text = bar["text"]["text"]
    assert text == "`" + "█" * 2 + "░" * 18 + "` 1,234 / 12,408 (10 %) · 350 msg/s"


def test_progress_bar_is_never_full_before_the_last_message() -> None:
    message = deployment(sending(), progress(relayed=12_400, queued=8, rate_per_s=12.5))
    text = all_text(message["blocks"])
    assert "`" + "█" * 19 + "░` 12,400 / 12,408 (99 %) · 12.5 msg/s" in text


def test_paused_progress_says_paused_instead_of_a_rate() -> None:
    paused = DeliveryState.PAUSED
    message = deployment(sending(paused), progress(paused, rate_per_s=80.0))
    assert "1,234 / 12,408 (10 %) · paused" in all_text(message["blocks"])


@pytest.mark.parametrize(
    ("state", "prog"),
    [
        (
            DeliveryState.FINISHED,
            progress(DeliveryState.FINISHED, queued=0, relayed=12_408),
        ),
        (DeliveryState.IN_PROGRESS, progress(queued=0)),
        (DeliveryState.IN_PROGRESS, None),
        (DeliveryState.STOPPED, progress(DeliveryState.STOPPED, queued=11_174)),
    ],
)
def test_no_progress_bar_once_nothing_is_waiting_to_leave(
    state: DeliveryState, prog: SendingProgress | None
) -> None:
    message = deployment(sending(state), prog)
    check_message(message)
    assert all(b.get("block_id") != ids.DEPLOYMENT_PROGRESS_BLOCK for b in message["blocks"])
    assert "█" not in all_text(message["blocks"])


def test_kpis_show_as_fields_with_a_dash_for_rates_without_denominator() -> None:
    blocks = deployment(sending(), progress())["blocks"]
    kpis = next(b for b in blocks if b.get("block_id") == ids.DEPLOYMENT_KPIS_BLOCK)
    assert kpis["text"]["text"] == "*KPIs*"
    assert [f["text"] for f in kpis["fields"]] == [
        "*To deliver*\n12,408",
        "*Sent*\n1,234",
        "*Delivered*\n97.24 %",
        "*Bounces + errors*\n2.76 %",
        "*Open rate*\n12.5 %",
        "*Click-through rate*\n2.5 %",
    ]
    # With EFS, relayed messages wait for the MTA's report: no Sent log yet, so the
    # open and click-through rates have nothing to divide by.
    efs = Counters(to_deliver=12_408, queued=11_174, pending=1_234)
    blocks = deployment(sending(figures=Figures(efs), efs=True), progress())["blocks"]
    kpis = next(b for b in blocks if b.get("block_id") == ids.DEPLOYMENT_KPIS_BLOCK)
    assert [f["text"] for f in kpis["fields"]] == [
        "*To deliver*\n12,408",
        "*Sent*\n1,234",
        "*Delivered*\n0 %",
        "*Bounces + errors*\n0 %",
        f"*Open rate*\n{DASH}",
        f"*Click-through rate*\n{DASH}",
    ]


def test_a_delivery_not_sent_yet_shows_dashes_never_zero_percent() -> None:
    blocks = deployment(detail())["blocks"]
    text = all_text(blocks)
    for label in ("Delivered", "Bounces + errors", "Open rate", "Click-through rate"):
        assert f"*{label}*\n{DASH}" in text
    assert "0 %" not in text


def test_in_progress_offers_compute_pause_and_stop() -> None:
    blocks = deployment(sending(DeliveryState.IN_PROGRESS), progress())["blocks"]
    buttons = by_action(blocks)
    assert list(buttons) == [ids.COMPUTE_STATS, ids.PAUSE, ids.STOP]
    for button in buttons.values():
        assert ids.parse_button_value(button["value"]) == {"ref": "spring-sale"}


def test_paused_offers_resume_instead_of_pause() -> None:
    paused = DeliveryState.PAUSED
    blocks = deployment(sending(paused), progress(paused))["blocks"]
    assert list(by_action(blocks)) == [ids.COMPUTE_STATS, ids.RESUME, ids.STOP]


@pytest.mark.parametrize(
    "state", [DeliveryState.FINISHED, DeliveryState.STOPPED, DeliveryState.FAILED]
)
def test_no_steering_buttons_once_the_send_is_over(state: DeliveryState) -> None:
    blocks = deployment(sending(state), progress(state, queued=0))["blocks"]
    assert list(by_action(blocks)) == [ids.COMPUTE_STATS]


def test_stop_asks_for_ok_and_says_who_will_never_get_the_message() -> None:
    blocks = deployment(sending(), progress())["blocks"]
    stop = by_action(blocks)[ids.STOP]
    assert stop["style"] == "danger"
    dialog = stop["confirm"]
    assert dialog["text"]["text"] == (
        "Stop sending *Spring sale*? The 11,174 recipients not yet sent will never be sent."
    )
    assert (dialog["confirm"]["text"], dialog["deny"]["text"]) == ("OK", "Cancel")


def test_stop_before_the_contact_date_counts_everyone() -> None:
    pending = DeliveryState.START_PENDING
    message = deployment(sending(pending), progress(pending, queued=0))
    stop = by_action(message["blocks"])[ids.STOP]
    assert "The 12,408 recipients not yet sent" in stop["confirm"]["text"]["text"]
    assert ids.PAUSE not in by_action(message["blocks"])


def test_stop_without_progress_counts_the_queued_logs() -> None:
    stop = by_action(deployment(sending())["blocks"])[ids.STOP]
    assert "The 11,174 recipients not yet sent" in stop["confirm"]["text"]["text"]


def test_context_line_gives_state_and_the_time_of_the_update() -> None:
    now = datetime(2026, 11, 23, 10, 5, tzinfo=UTC)
    message = deployment(sending(), progress(), now=now)
    line = message["blocks"][-1]["elements"][0]["text"]
    assert line.startswith("State: *in-progress*")
    assert "by <@U0ALICE>" in line
    assert f"updated <!date^{int(now.timestamp())}^" in line
    assert "|2026-11-23 10:05 UTC>" in line
    assert (
        message["text"] == "Deployment — Spring sale: in-progress, sent 1,234 of 12,408 recipients"
    )


def test_a_send_waiting_for_its_contact_date_says_when_it_starts() -> None:
    d = sending(DeliveryState.START_PENDING, schedule=AT_SCHEDULE, started_at=None)
    line = deployment(d)["blocks"][-1]["elements"][0]["text"]
    assert "starts at 09:00 Europe/Paris on Fri 27 Nov 2026" in line


def test_list_rows_with_line_breaks_stay_one_line_each() -> None:
    rows = [row(f"d-{i:04}", "two\nlines " + "x" * 200) for i in range(2_000)]
    blocks = list_blocks(rows)
    check_blocks(blocks)
    text = all_text(blocks)
    shown = text.count("• *two lines")
    assert 0 < shown < 2_000
    assert f"…and {2_000 - shown} more" in text


def test_recurring_delivery_shows_its_latest_execution() -> None:
    runs = [
        execution(
            key,
            ExecutionState.FINISHED,
            Counters(to_deliver=sent, sent=sent),
            occurrence_at=at,
            started_at=at,
        )
        for key, at, sent in (
            ("2026-11-23", datetime(2026, 11, 23, 8, 0, tzinfo=UTC), 10),
            ("2026-11-30", datetime(2026, 11, 30, 8, 0, tzinfo=UTC), 20),
        )
    ]
    d = recurring(
        state=DeliveryState.IN_PROGRESS,
        executions=runs,
        execution=runs[-1],
        figures=runs[-1].figures,
    )
    message = deployment(d)
    check_message(message)
    kpis = next(b for b in message["blocks"] if b.get("block_id") == ids.DEPLOYMENT_KPIS_BLOCK)
    assert "Latest execution" in kpis["text"]["text"]
    assert "09:00 Europe/Paris on Mon 30 Nov 2026" in kpis["text"]["text"]
    assert "(finished)" in kpis["text"]["text"]
    assert "*Sent*\n20" in [f["text"] for f in kpis["fields"]]


# --- /campaign replies ---------------------------------------------------------------


def test_help_lists_every_subcommand_with_its_usage() -> None:
    blocks = help_blocks()
    check_blocks(blocks)
    text = all_text(blocks)
    for usage in (
        "list",
        "status &lt;ref&gt;",
        "prepare &lt;ref&gt;",
        "proof &lt;ref&gt; [email]",
        "history &lt;email&gt;",
        "audit &lt;ref&gt; [page N]",
        "audit [page N]",
        "roles list",
        "roles grant @user ROLE",
        "roles revoke @user ROLE",
        "help",
    ):
        assert f"`/campaign {usage}`" in text
    assert len(SUBCOMMANDS) == 11
    assert "start-deliveries" in text


def test_list_shows_each_delivery_on_a_line() -> None:
    rows = [
        row("spring-sale", "Spring sale", to_deliver=12_408, sent=0),
        row("stale", "Stale", prepared=False),
        row("later", "Later", schedule=AT_SCHEDULE, state=DeliveryState.START_PENDING),
    ]
    blocks = list_blocks(rows)
    check_blocks(blocks)
    text = all_text(blocks)
    assert "Deliveries (3)" in text
    assert "• *Spring sale* `spring-sale` — ready · newsletter · to deliver 12,408 · sent 0" in text
    assert "ready, changed since prepared" in text
    assert "at 09:00 Europe/Paris on Fri 27 Nov 2026" in text


@pytest.mark.parametrize("n", [0, 1, 60, 1_000, 5_000])
def test_list_stays_within_50_blocks_and_counts_what_it_leaves_out(n: int) -> None:
    rows = [row(f"delivery-{i:05}", f"Delivery number {i} " + "x" * 60) for i in range(n)]
    blocks = list_blocks(rows)
    check_blocks(blocks)
    text = all_text(blocks)
    shown = text.count("• *Delivery number")
    if shown < n:
        assert f"…and {n - shown} more" in text
    else:
        assert shown == n


def test_prepare_result_of_a_ready_delivery_points_to_confirm_send() -> None:
    warning = PreparationWarning(name="city", count=2, emails=("a@x.example",))
    result = prepared(warnings=[warning])
    blocks = prepare_result_blocks(result)
    check_blocks(blocks)
    text = all_text(blocks)
    assert "293 recipients to deliver" in text and "`/confirm-send spring-sale`" in text
    assert "*Excluded*\n7\nduplicate address: 4\ninvalid address: 3" in text
    assert escape(warning.describe()) in text
    assert "missing variable 'city' for 2 profile(s) (e.g. a@x.example)" in warning.describe()
    assert "Prepared in 0.4 s." in text


def test_prepare_result_with_errors_lists_them_and_counts_the_rest() -> None:
    errors = [
        PreparationError(email=f"p{i}@x.example", part="html", line=3, reason="'x' is undefined")
        for i in range(12)
    ]
    result = prepared(
        state=DeliveryState.EDITING,
        excluded=0,
        to_deliver=300,
        exclusions={},
        errors=errors,
        errors_total=40,
        duration_s=1.0,
    )
    blocks = prepare_result_blocks(result)
    check_blocks(blocks)
    text = all_text(blocks)
    assert "40 critical errors" in text and "cannot be confirmed" in text
    assert escape(errors[0].describe()) in text
    assert "• p0@x.example: html line 3: 'x' is undefined" in text
    assert "…and 30 more" in text
    assert "/confirm-send" not in text


def test_prepare_result_with_nobody_to_deliver_to_says_so() -> None:
    result = prepared(
        ref="empty",
        targeted=2,
        excluded=2,
        to_deliver=0,
        exclusions={ExclusionReason.QUARANTINED: 2},
        duration_s=0.01,
    )
    assert "nobody to deliver to" in all_text(prepare_result_blocks(result))


def test_history_shows_each_message_with_its_status() -> None:
    rows = [
        history(),
        history(
            date=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
            ref="weekly",
            name="Weekly",
            execution="2026-11-20",
            status=LogStatus.FAILED,
            failure_type=FailureType.HARD,
            failure_reason=FailureReason.USER_UNKNOWN,
            opens=0,
            clicks=0,
        ),
    ]
    blocks = history_blocks("ada@x.example", rows)
    check_blocks(blocks)
    text = all_text(blocks)
    assert "• 2026-11-27 08:02 UTC — *Spring sale* `spring-sale` — Sent · 2 opens · 1 click" in text
    assert "*Weekly* `weekly` (run `2026-11-20`) — Failed (hard: user unknown)" in text


def test_history_of_a_profile_without_messages_says_so() -> None:
    blocks = history_blocks("ada@x.example", [])
    check_blocks(blocks)
    assert "No message was sent to ada@x.example yet." in all_text(blocks)


def test_long_history_stays_within_50_blocks() -> None:
    rows = [history(ref=f"d{i}", name="N" * 200, opens=0, clicks=0) for i in range(3_000)]
    blocks = history_blocks("ada@x.example", rows)
    check_blocks(blocks)
    assert "older messages not shown" in all_text(blocks)


def test_roles_are_grouped_by_role_with_mentions() -> None:
    grants = [
        Grant(
            subject_kind=SubjectKind.USER,
            subject_id="U0BOB",
            role=Role.START_DELIVERIES,
            granted_by="U0ALICE",
            granted_at=datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
        ),
        Grant(
            subject_kind=SubjectKind.USER,
            subject_id="U0ALICE",
            role=Role.ADMINISTRATION,
            granted_by="cli",
            granted_at=datetime(2026, 10, 1, 10, 0, tzinfo=UTC),
        ),
        Grant(
            subject_kind=SubjectKind.USERGROUP,
            subject_id="S0MARKETING",
            role=Role.PREPARE_DELIVERIES,
            granted_by=None,
            granted_at=datetime(2026, 10, 2, 10, 0, tzinfo=UTC),
        ),
    ]
    blocks = roles_blocks(grants)
    check_blocks(blocks)
    text = all_text(blocks)
    assert text.index("*prepare-deliveries*") < text.index("*start-deliveries*")
    assert text.index("*start-deliveries*") < text.index("*administration*")
    assert "• <@U0BOB> — granted by <@U0ALICE> on 2026-11-01" in text
    assert "• <@U0ALICE> — granted by `cli` on 2026-10-01" in text
    assert "• <!subteam^S0MARKETING> — granted by unknown" in text


def test_no_roles_yet_says_how_to_grant_the_first_one() -> None:
    assert "python -m bot roles grant USER_ID administration" in all_text(roles_blocks([]))


def test_error_blocks_escape_everything_the_person_typed() -> None:
    """A refusal can quote what was typed: its `<!here>` and links must stay text."""
    blocks = error_blocks("`<!here> <https://evil.example|x> '<b>' & co` is not a ref")
    check_blocks(blocks)
    assert blocks[0]["text"]["text"] == (
        ":warning: `&lt;!here&gt; &lt;https://evil.example|x&gt; '&lt;b&gt;' &amp; co` is not a ref"
    )


# --- approval requests ----------------------------------------------------------------

FIRST_APPROVAL = Approval(user="U1", at=datetime(2026, 11, 30, 8, 1, tzinfo=UTC))


def test_open_approval_request_has_both_buttons_carrying_ref_and_occurrence() -> None:
    message = approval_request(approval_view())
    check_message(message)
    text = all_text(message["blocks"])
    assert "*Occurrence*\n09:00 Europe/Paris on Mon 30 Nov 2026" in text
    assert "*To deliver*\n4,210" in text
    assert "*Exclusions*\n15\nquarantined: 12\ndenylisted: 3" in text
    buttons = by_action(message["blocks"])
    assert list(buttons) == [ids.APPROVE_OCCURRENCE, ids.SKIP_OCCURRENCE]
    for button in buttons.values():
        assert ids.parse_button_value(button["value"]) == {
            "ref": "weekly",
            "occurrence": "2026-11-30T08:00",
        }
    approve = buttons[ids.APPROVE_OCCURRENCE]
    assert approve["text"]["text"] == "Confirm send"
    assert approve["confirm"]["text"]["text"] == (
        "Send *Weekly news* to 4,210 recipients now (occurrence of 09:00 Europe/Paris on "
        "Mon 30 Nov 2026)."
    )
    assert approve["confirm"]["confirm"]["text"] == "OK"
    assert buttons[ids.SKIP_OCCURRENCE]["text"]["text"] == "Skip this occurrence"
    assert "approvals" not in text  # no quorum line when one approval is enough


def test_quorum_shows_who_approved_so_far() -> None:
    message = approval_request(approval_view(approvals=[FIRST_APPROVAL], required=2))
    check_message(message)
    assert "1 of 2 approvals: <@U1>" in all_text(message["blocks"])
    assert set(by_action(message["blocks"])) == {ids.APPROVE_OCCURRENCE, ids.SKIP_OCCURRENCE}


def test_the_first_of_several_approvals_says_it_does_not_send_yet() -> None:
    message = approval_request(approval_view(required=3))
    text = all_text(message["blocks"])
    assert "0 of 3 approvals yet" in text
    dialog = by_action(message["blocks"])[ids.APPROVE_OCCURRENCE]["confirm"]["text"]["text"]
    assert dialog.startswith("Approve sending *Weekly news* to 4,210 recipients")
    assert "once 3 people have approved; 0 have so far" in dialog


@pytest.mark.parametrize(
    ("decided", "line"),
    [
        (
            Decided(RequestState.APPROVED, ["U1", "U2"], datetime(2026, 11, 30, 8, 2, tzinfo=UTC)),
            "Approved by <@U1> and <@U2> at 09:02 Europe/Paris. Sending.",
        ),
        (
            Decided(RequestState.SKIPPED, ["U3"], datetime(2026, 12, 1, 7, 0, tzinfo=UTC)),
            "Skipped by <@U3> at 08:00 Europe/Paris on Tue 1 Dec 2026.",
        ),
        (
            Decided(RequestState.EXPIRED, [], datetime(2026, 12, 7, 8, 0, tzinfo=UTC)),
            "Expired: not decided before the next occurrence. This occurrence is not sent.",
        ),
    ],
)
def test_a_decided_request_has_no_buttons_and_says_who_and_when(
    decided: Decided, line: str
) -> None:
    view = approval_view(approvals=[FIRST_APPROVAL], required=2, decided=decided)
    message = approval_request(view)
    check_message(message)
    assert elements(message["blocks"]) == []
    decision = next(
        b for b in message["blocks"] if b.get("block_id") == ids.APPROVAL_DECISION_BLOCK
    )
    assert line in decision["text"]["text"]
    assert "approvals:" not in all_text(message["blocks"])
    assert message["text"].endswith(f": {decided.decision.value}")


def test_an_approval_that_names_nobody_credits_the_approvers() -> None:
    decided = Decided(RequestState.APPROVED, [], datetime(2026, 11, 30, 8, 2, tzinfo=UTC))
    message = approval_request(approval_view(approvals=[FIRST_APPROVAL], decided=decided))
    assert "Approved by <@U1> at 09:02 Europe/Paris. Sending." in all_text(message["blocks"])


def test_an_unknown_or_open_decision_is_an_error_not_a_silent_message() -> None:
    with pytest.raises(ValueError):
        RequestState("maybe")
    still_open = Decided(RequestState.OPEN, [], None)
    with pytest.raises(ValueError, match="open request has no decision"):
        approval_request(approval_view(decided=still_open))


# --- limits hold whatever the data ----------------------------------------------------

long_text = st.text(min_size=1, max_size=4_000).filter(str.strip)
EVERY_EXCLUSION = {reason: 10**9 + i for i, reason in enumerate(ExclusionReason)}


@settings(max_examples=60, deadline=None)
@given(
    name=long_text,
    audience=long_text,
    reason=long_text,
    state=st.sampled_from(
        [
            DeliveryState.READY,
            DeliveryState.IN_PROGRESS,
            DeliveryState.PAUSED,
            DeliveryState.START_PENDING,
            DeliveryState.FINISHED,
            DeliveryState.STOPPED,
            DeliveryState.FAILED,
        ]
    ),
)
def test_every_builder_respects_slack_limits_with_any_name(
    name: str, audience: str, reason: str, state: DeliveryState
) -> None:
    d = detail(
        name=name,
        audience=audience,
        subject=name,
        sender=name,
        validity=reason,
        state=state,
        preparation=preparation(exclusions=EVERY_EXCLUSION),
    )
    check_blocks(card(d))
    check_blocks(card(d, reason))
    check_blocks(card(replace(d, schedule=AT_SCHEDULE)))
    check_blocks(delivery_picker([row("spring-sale", name), row("x" * 100, name)]))
    check_message(deployment(d, progress(state)))
    view = approval_view(name=name, exclusions=EVERY_EXCLUSION, required=3)
    check_message(approval_request(view))
    expired = Decided(RequestState.EXPIRED, [], None, reason=reason)
    check_message(approval_request(approval_view(name=name, decided=expired)))
    check_blocks(list_blocks([row("spring-sale", name, audience=audience)] * 3))
    check_blocks(history_blocks(name, [history(name=name, execution=reason)]))
    check_blocks(error_blocks(reason))
    dialog = by_action(card(d))[ids.CONFIRM_SEND]["confirm"]["text"]["text"]
    assert dialog.endswith(" to 12,408 recipients now.")  # the name gives way, not the facts


@given(text=st.text(max_size=500), limit=st.integers(min_value=1, max_value=300))
def test_truncate_never_exceeds_the_limit_and_marks_the_cut(text: str, limit: int) -> None:
    out = truncate(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    else:
        assert out.endswith("…")


def test_truncate_never_leaves_half_an_entity_or_mention() -> None:
    assert truncate("a &amp; b", 5) == "a…"
    assert truncate("hello <@U0123456> there", 12) == "hello…"


def test_builders_do_not_change_their_input() -> None:
    d = detail(schedule=AT_SCHEDULE)
    p = progress()
    view = approval_view(approvals=[FIRST_APPROVAL], required=2)
    rows = [row("spring-sale"), row("later", schedule=AT_SCHEDULE)]
    before = copy.deepcopy((d, p, view, rows))
    card(d)
    deployment(d, p)
    approval_request(view)
    delivery_picker(rows)
    list_blocks(rows)
    assert (d, p, view, rows) == before


def test_an_audit_page_stays_within_slacks_limits_and_escapes_its_data() -> None:
    at = datetime(2026, 11, 24, 9, tzinfo=UTC)
    long = "<!channel> " + "x" * 5000
    records = [
        AuditRecord(at, "U0ANN", "delivery.fail", "delivery", "promo", {"reason": long})
        for _ in range(25)
    ]
    page = AuditPage(None, 2, 25, 80, 99, records)
    built = audit_message(page)
    check_message(built)
    text = all_text(built["blocks"])
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert {ids.AUDIT_OLDER, ids.AUDIT_NEWER} <= set(by_action(built["blocks"]))
    assert ids.parse_audit_page_value(by_action(built["blocks"])[ids.AUDIT_OLDER]["value"]) == (
        None,
        3,
        99,
    )


def test_a_full_home_tab_stays_within_100_blocks_with_distinct_ids_and_escaped_data() -> None:
    hostile = "<!channel> & *bold*"
    requests = [approval_view(name=hostile, key=f"2026-11-{d:02d}") for d in range(1, 11)]
    sending = [
        DeploymentView(detail(name=hostile, state=DeliveryState.IN_PROGRESS), progress())
        for _ in range(10)
    ]
    finished = [
        DeploymentView(
            detail(name=hostile, state=DeliveryState.FINISHED, finished_at=STARTED_AT), None
        )
        for _ in range(5)
    ]
    home = HomeView(
        "U0ANN",
        frozenset(Role),
        ready=[row(f"r{i}", hostile) for i in range(10)],
        approvals=requests,
        sending=sending,
        finished=finished,
        more_ready=3,
        notice=escape(hostile),
    )
    view = home_view(home)
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    ids_seen = [b["block_id"] for b in view["blocks"] if "block_id" in b]
    assert len(ids_seen) == len(set(ids_seen)), "block ids differ within a view"
    text = all_text(view["blocks"])
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; *bold*" in text
    approve = [e for e in elements(view["blocks"]) if e["action_id"] == ids.APPROVE_OCCURRENCE]
    assert len(approve) == 10, "the channel's action ids, so its listeners decide"
    assert "…and 3 more ready to confirm." in text


def test_a_viewer_without_a_role_sees_no_section() -> None:
    view = home_view(HomeView("U0NOBODY", frozenset()))
    text = all_text(view["blocks"])
    assert "You hold no Greenlight role" in text and "Ready to confirm" not in text
