"""Block Kit builders (bot/blocks): what a person sees in Slack, checked without Slack.

The builders are pure, so these tests feed them the dicts the ctx return and
look at the dicts they build: the ids the handlers listen on, the values the buttons
carry, the sentences of the confirm dialogs, which buttons each state offers. Every
message also goes through `check_message`, a validator of the Block Kit limits Slack
documents: a message that breaks one is refused whole (`invalid_blocks`), so a long
delivery name must never be able to hide a card or a Deployment message.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.blocks import ids
from bot.blocks.approval import approval_request
from bot.blocks.campaign import (
    SUBCOMMANDS,
    error_blocks,
    help_blocks,
    history_blocks,
    list_blocks,
    prepare_result_blocks,
    roles_blocks,
)
from bot.blocks.card import delivery_card, delivery_picker
from bot.blocks.deployment import deployment_message
from bot.blocks.kit import escape, truncate
from bot.domain.kpi import DASH
from bot.textviews import error_text, warning_text

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


# --- data in the shapes of bot.services.reporting ---------------------------------


def detail(**changes: Any) -> dict[str, Any]:
    """`reporting.delivery_detail` of a prepared, ready, on-confirm delivery."""
    base: dict[str, Any] = {
        "schema": 1,
        "ref": "spring-sale",
        "name": "Spring sale",
        "state": "ready",
        "audience": "newsletter",
        "from": "Shop <news@shop.example>",
        "reply_to": None,
        "subject": "Our spring sale",
        "schedule": {"mode": "on-confirm", "at": None, "timezone": None},
        "recurrence": None,
        "validity": "3d12h",
        "efs": False,
        "slack_channel": "C0123456789",
        "preparation": {
            "prepared_at": "2026-11-23T09:00:00+00:00",
            "current": True,
            "targeted": 12_415,
            "excluded": 7,
            "to_deliver": 12_408,
            "exclusions": {"duplicate address": 4, "invalid address": 3},
            "errors": [],
            "warnings": [],
        },
        "kpis": {
            "to_deliver": 12_408,
            "sent": 0,
            "delivered_pct": None,
            "bounces_errors_pct": None,
            "open_rate": None,
            "click_through_rate": None,
        },
        "logs": {"queued": 12_408, "pending": 0, "sent": 0, "failed": 0, "ignored": 0},
        "unique_opens": 0,
        "unique_clicks": 0,
        "confirmed_by": None,
        "confirmed_at": None,
        "started_at": None,
        "finished_at": None,
        "executions": [],
    }
    base.update(changes)
    return base


AT_SCHEDULE = {"mode": "at", "at": "2026-11-27T08:00:00+00:00", "timezone": "Europe/Paris"}
RECURRENCE = {
    "cron": "0 9 * * 1",
    "timezone": "Europe/Paris",
    "aggregation": "none",
    "request_confirmation": True,
    "approvals_required": 2,
}


def sending(state: str = "in-progress", **kpis: Any) -> dict[str, Any]:
    """A delivery while or after sending, with some KPIs."""
    figures = {
        "to_deliver": 12_408,
        "sent": 1_234,
        "delivered_pct": 97.5,
        "bounces_errors_pct": 2.5,
        "open_rate": 12.34,
        "click_through_rate": None,
    }
    figures.update(kpis)
    return detail(
        state=state,
        kpis=figures,
        confirmed_by="U0ALICE",
        confirmed_at="2026-11-23T10:00:00+00:00",
        started_at="2026-11-23T10:00:01+00:00",
        logs={"queued": 11_174, "pending": 0, "sent": 1_200, "failed": 34, "ignored": 0},
    )


def progress(state: str = "in-progress", **changes: Any) -> dict[str, Any]:
    """`reporting.sending_progress`."""
    base = {
        "ref": "spring-sale",
        "state": state,
        "relayed": 1_234,
        "to_deliver": 12_408,
        "queued": 11_174,
        "rate_per_s": 350.0,
    }
    base.update(changes)
    return base


def row(ref: str, name: str | None = None, **changes: Any) -> dict[str, Any]:
    """A `reporting.list_deliveries` row."""
    base = {
        "ref": ref,
        "name": name or ref.replace("-", " ").capitalize(),
        "state": "ready",
        "audience": "newsletter",
        "schedule": {"mode": "on-confirm", "at": None, "timezone": None},
        "to_deliver": 1_500,
        "sent": 0,
        "prepared": True,
    }
    base.update(changes)
    return base


# --- ids and button values ----------------------------------------------------------


def test_action_ids_are_the_ones_handlers_and_manifest_share() -> None:
    assert ids.CONFIRM_SEND == "confirm_send"
    assert ids.PICK_DELIVERY == "pick_delivery"
    assert ids.COMPUTE_STATS == "compute_stats"
    assert (ids.PAUSE, ids.RESUME, ids.STOP) == ("pause_send", "resume_send", "stop_send")
    assert ids.APPROVE_OCCURRENCE == "approve_occurrence"
    assert ids.SKIP_OCCURRENCE == "skip_occurrence"
    assert ids.COMMANDS == ("/confirm-send", "/campaign")
    assert len(set(ids.ACTION_IDS)) == len(ids.ACTION_IDS) == 8


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
    blocks = delivery_card(detail(), None)
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
    button = by_action(delivery_card(detail(), None))[ids.CONFIRM_SEND]
    assert button["type"] == "button" and button["style"] == "primary"
    assert button["text"]["text"] == "Confirm send"
    assert ids.parse_button_value(button["value"])["ref"] == "spring-sale"
    assert button["confirm"]["title"]["text"] == "Confirm send"
    assert button["confirm"]["text"]["text"] == "Send *Spring sale* to 12,408 recipients now."
    assert button["confirm"]["confirm"]["text"] == "OK"
    assert button["confirm"]["deny"]["text"] == "Cancel"


def test_confirm_button_of_an_at_delivery_says_when_in_its_time_zone() -> None:
    blocks = delivery_card(detail(schedule=AT_SCHEDULE), None)
    check_blocks(blocks)
    dialog = by_action(blocks)[ids.CONFIRM_SEND]["confirm"]
    assert dialog["text"]["text"] == (
        "Send *Spring sale* to 12,408 recipients at 09:00 Europe/Paris on Fri 27 Nov 2026."
    )
    assert "*Schedule*\n09:00 Europe/Paris on Fri 27 Nov 2026" in all_text(blocks)


def test_a_contact_date_stored_without_offset_is_read_as_utc() -> None:
    """SQLite hands datetimes back naive; the database holds UTC."""
    schedule = {**AT_SCHEDULE, "at": "2026-07-01T07:30:00"}
    dialog = by_action(delivery_card(detail(schedule=schedule), None))[ids.CONFIRM_SEND]
    assert dialog["confirm"]["text"]["text"].endswith("at 09:30 Europe/Paris on Wed 1 Jul 2026.")


def test_one_recipient_is_singular() -> None:
    prep = {**detail()["preparation"], "to_deliver": 1}
    dialog = by_action(delivery_card(detail(preparation=prep), None))[ids.CONFIRM_SEND]
    assert dialog["confirm"]["text"]["text"] == "Send *Spring sale* to 1 recipient now."


def test_a_delivery_that_is_not_ready_gets_the_reason_and_no_button() -> None:
    reason = "spring-sale is not prepared yet: run `/campaign prepare spring-sale` first"
    blocks = delivery_card(detail(state="editing"), reason)
    check_blocks(blocks)
    assert elements(blocks) == []
    assert blocks[-1]["type"] == "context"
    assert reason in blocks[-1]["elements"][0]["text"]


def test_card_of_an_unprepared_delivery_has_no_figures() -> None:
    prep = {
        "prepared_at": None,
        "current": False,
        "targeted": None,
        "excluded": None,
        "to_deliver": None,
        "exclusions": {},
        "errors": [],
        "warnings": [],
    }
    blocks = delivery_card(detail(state="editing", preparation=prep), "not prepared")
    check_blocks(blocks)
    assert "*To deliver*\nnot prepared yet" in all_text(blocks)
    assert f"*Exclusions*\n{DASH}" in all_text(blocks)


def test_card_of_a_recurring_delivery_shows_cron_and_time_zone() -> None:
    blocks = delivery_card(detail(recurrence=RECURRENCE), "recurring")
    assert "*Schedule*\nrecurring: `0 9 * * 1` Europe/Paris" in all_text(blocks)


def test_card_escapes_markup_coming_from_data() -> None:
    blocks = delivery_card(detail(audience="<!channel> & friends"), None)
    assert "*Audience*\n&lt;!channel&gt; &amp; friends" in all_text(blocks)
    assert "<!channel>" not in all_text(blocks[1:])


def test_picker_offers_ready_deliveries_by_ref() -> None:
    rows = [
        row("spring-sale", "Spring sale", to_deliver=12_408),
        row("draft", state="editing"),
        row("stale", prepared=False),
        row("one", "One", to_deliver=1),
    ]
    blocks = delivery_picker(rows)
    check_blocks(blocks)
    select = by_action(blocks)[ids.PICK_DELIVERY]
    assert select["type"] == "static_select"
    assert [(o["text"]["text"], o["value"]) for o in select["options"]] == [
        ("Spring sale (spring-sale) — 12,408 recipients", "spring-sale"),
        ("One (one) — 1 recipient", "one"),
    ]


def test_picker_without_ready_deliveries_says_how_to_prepare_one() -> None:
    blocks = delivery_picker([row("draft", state="editing")])
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
    message = deployment_message(sending(), progress())
    check_message(message)
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == "Deployment — Spring sale"
    bar = next(b for b in blocks if b.get("block_id") == ids.DEPLOYMENT_PROGRESS_BLOCK)
    text = bar["text"]["text"]
    assert text == "`" + "█" * 2 + "░" * 18 + "` 1,234 / 12,408 (10 %) · 350 msg/s"


def test_progress_bar_is_never_full_before_the_last_message() -> None:
    message = deployment_message(sending(), progress(relayed=12_400, queued=8, rate_per_s=12.5))
    text = all_text(message["blocks"])
    assert "`" + "█" * 19 + "░` 12,400 / 12,408 (99 %) · 12.5 msg/s" in text


def test_paused_progress_says_paused_instead_of_a_rate() -> None:
    message = deployment_message(sending("paused"), progress("paused", rate_per_s=80.0))
    assert "1,234 / 12,408 (10 %) · paused" in all_text(message["blocks"])


@pytest.mark.parametrize(
    ("state", "prog"),
    [
        ("finished", progress("finished", queued=0, relayed=12_408)),
        ("in-progress", progress(queued=0)),
        ("in-progress", None),
        ("stopped", progress("stopped", queued=11_174)),
    ],
)
def test_no_progress_bar_once_nothing_is_waiting_to_leave(
    state: str, prog: dict[str, Any] | None
) -> None:
    message = deployment_message(sending(state), prog)
    check_message(message)
    assert all(b.get("block_id") != ids.DEPLOYMENT_PROGRESS_BLOCK for b in message["blocks"])
    assert "█" not in all_text(message["blocks"])


def test_kpis_show_as_fields_with_a_dash_for_rates_without_denominator() -> None:
    blocks = deployment_message(sending(), progress())["blocks"]
    kpis = next(b for b in blocks if b.get("block_id") == ids.DEPLOYMENT_KPIS_BLOCK)
    assert [f["text"] for f in kpis["fields"]] == [
        "*To deliver*\n12,408",
        "*Sent*\n1,234",
        "*Delivered*\n97.5 %",
        "*Bounces + errors*\n2.5 %",
        "*Open rate*\n12.34 %",
        f"*Click-through rate*\n{DASH}",
    ]


def test_a_delivery_not_sent_yet_shows_dashes_never_zero_percent() -> None:
    blocks = deployment_message(detail(), None)["blocks"]
    text = all_text(blocks)
    for label in ("Delivered", "Bounces + errors", "Open rate", "Click-through rate"):
        assert f"*{label}*\n{DASH}" in text
    assert "0 %" not in text


def test_in_progress_offers_compute_pause_and_stop() -> None:
    blocks = deployment_message(sending("in-progress"), progress())["blocks"]
    buttons = by_action(blocks)
    assert list(buttons) == [ids.COMPUTE_STATS, ids.PAUSE, ids.STOP]
    for button in buttons.values():
        assert ids.parse_button_value(button["value"]) == {"ref": "spring-sale"}


def test_paused_offers_resume_instead_of_pause() -> None:
    blocks = deployment_message(sending("paused"), progress("paused"))["blocks"]
    assert list(by_action(blocks)) == [ids.COMPUTE_STATS, ids.RESUME, ids.STOP]


@pytest.mark.parametrize("state", ["finished", "stopped", "failed"])
def test_no_steering_buttons_once_the_send_is_over(state: str) -> None:
    blocks = deployment_message(sending(state), progress(state, queued=0))["blocks"]
    assert list(by_action(blocks)) == [ids.COMPUTE_STATS]


def test_stop_asks_for_ok_and_says_who_will_never_get_the_message() -> None:
    blocks = deployment_message(sending(), progress())["blocks"]
    stop = by_action(blocks)[ids.STOP]
    assert stop["style"] == "danger"
    dialog = stop["confirm"]
    assert dialog["text"]["text"] == (
        "Stop sending *Spring sale*? The 11,174 recipients not yet sent will never be sent."
    )
    assert (dialog["confirm"]["text"], dialog["deny"]["text"]) == ("OK", "Cancel")


def test_stop_before_the_contact_date_counts_everyone() -> None:
    blocks = deployment_message(sending("start-pending"), progress("start-pending", queued=0))
    stop = by_action(blocks["blocks"])[ids.STOP]
    assert "The 12,408 recipients not yet sent" in stop["confirm"]["text"]["text"]
    assert ids.PAUSE not in by_action(blocks["blocks"])


def test_context_line_gives_state_and_the_time_of_the_update() -> None:
    now = datetime(2026, 11, 23, 10, 5, tzinfo=UTC)
    message = deployment_message(sending(), progress(), now=now)
    line = message["blocks"][-1]["elements"][0]["text"]
    assert line.startswith("State: *in-progress*")
    assert "by <@U0ALICE>" in line
    assert f"updated <!date^{int(now.timestamp())}^" in line
    assert "|2026-11-23 10:05 UTC>" in line
    assert (
        message["text"] == "Deployment — Spring sale: in-progress, sent 1,234 of 12,408 recipients"
    )


def test_a_send_waiting_for_its_contact_date_says_when_it_starts() -> None:
    d = {**sending("start-pending"), "schedule": AT_SCHEDULE, "started_at": None}
    line = deployment_message(d, None)["blocks"][-1]["elements"][0]["text"]
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
    executions = [
        {
            "key": key,
            "state": "finished",
            "occurrence_at": at,
            "kpis": {**sending()["kpis"], "sent": sent},
        }
        for key, at, sent in (
            ("2026-11-23", "2026-11-23T08:00:00+00:00", 10),
            ("2026-11-30", "2026-11-30T08:00:00+00:00", 20),
        )
    ]
    message = deployment_message(
        detail(state="ready", recurrence=RECURRENCE, executions=executions), None
    )
    check_message(message)
    kpis = next(b for b in message["blocks"] if b.get("block_id") == ids.DEPLOYMENT_KPIS_BLOCK)
    assert "Latest execution" in kpis["text"]["text"]
    assert "09:00 Europe/Paris on Mon 30 Nov 2026" in kpis["text"]["text"]
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
        "history &lt;email&gt;",
        "roles list",
        "roles grant @user ROLE",
        "roles revoke @user ROLE",
        "help",
    ):
        assert f"`/campaign {usage}`" in text
    assert len(SUBCOMMANDS) == 8
    assert "start-deliveries" in text


def test_list_shows_each_delivery_on_a_line() -> None:
    rows = [
        row("spring-sale", "Spring sale", to_deliver=12_408, sent=0),
        row("stale", "Stale", prepared=False),
        row("later", "Later", schedule=AT_SCHEDULE, state="start-pending"),
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
    result = {
        "ref": "spring-sale",
        "state": "ready",
        "targeted": 300,
        "excluded": 7,
        "to_deliver": 293,
        "exclusions": {"duplicate address": 4, "invalid address": 3},
        "errors": [],
        "errors_total": 0,
        "warnings": [
            {"kind": "missing variable", "name": "city", "count": 2, "emails": ["a@x.example"]}
        ],
        "duration_s": 0.42,
    }
    blocks = prepare_result_blocks(result)
    check_blocks(blocks)
    text = all_text(blocks)
    assert "293 recipients to deliver" in text and "`/confirm-send spring-sale`" in text
    assert "*Excluded*\n7\nduplicate address: 4\ninvalid address: 3" in text
    assert escape(warning_text(result["warnings"][0])) in text
    assert "Prepared in 0.4 s." in text


def test_prepare_result_with_errors_lists_them_and_counts_the_rest() -> None:
    errors = [
        {"email": f"p{i}@x.example", "part": "html", "line": 3, "reason": "'x' is undefined"}
        for i in range(12)
    ]
    result = {
        "ref": "spring-sale",
        "state": "editing",
        "targeted": 300,
        "excluded": 0,
        "to_deliver": 300,
        "exclusions": {},
        "errors": errors,
        "errors_total": 40,
        "warnings": [],
        "duration_s": 1.0,
    }
    blocks = prepare_result_blocks(result)
    check_blocks(blocks)
    text = all_text(blocks)
    assert "40 critical errors" in text and "cannot be confirmed" in text
    assert escape(error_text(errors[0])) in text
    assert "…and 30 more" in text
    assert "/confirm-send" not in text


def test_prepare_result_with_nobody_to_deliver_to_says_so() -> None:
    result = {
        "ref": "empty",
        "state": "ready",
        "targeted": 2,
        "excluded": 2,
        "to_deliver": 0,
        "exclusions": {"quarantined": 2},
        "errors": [],
        "errors_total": 0,
        "warnings": [],
        "duration_s": 0.01,
    }
    assert "nobody to deliver to" in all_text(prepare_result_blocks(result))


def test_history_shows_each_message_with_its_status() -> None:
    rows = [
        {
            "date": "2026-11-27T08:02:00+00:00",
            "email": "ada@x.example",
            "ref": "spring-sale",
            "name": "Spring sale",
            "execution": "main",
            "status": "sent",
            "failure_type": None,
            "failure_reason": None,
            "opens": 2,
            "clicks": 1,
        },
        {
            "date": "2026-11-20T08:00:00+00:00",
            "email": "ada@x.example",
            "ref": "weekly",
            "name": "Weekly",
            "execution": "2026-11-20",
            "status": "failed",
            "failure_type": "hard",
            "failure_reason": "user unknown",
            "opens": 0,
            "clicks": 0,
        },
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
    rows = [
        {"date": "2026-11-27T08:02:00+00:00", "ref": f"d{i}", "name": "N" * 200, "status": "sent"}
        for i in range(3_000)
    ]
    blocks = history_blocks("ada@x.example", rows)
    check_blocks(blocks)
    assert "older messages not shown" in all_text(blocks)


def test_roles_are_grouped_by_role_with_mentions() -> None:
    grants = [
        {
            "subject_kind": "user",
            "subject_id": "U0BOB",
            "role": "start-deliveries",
            "granted_by": "U0ALICE",
            "granted_at": "2026-11-01T10:00:00+00:00",
        },
        {
            "subject_kind": "user",
            "subject_id": "U0ALICE",
            "role": "administration",
            "granted_by": "cli",
            "granted_at": "2026-10-01T10:00:00+00:00",
        },
        {
            "subject_kind": "usergroup",
            "subject_id": "S0MARKETING",
            "role": "prepare-deliveries",
            "granted_by": None,
            "granted_at": "2026-10-02T10:00:00+00:00",
        },
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


def test_error_blocks_keep_mentions_and_escape_the_rest() -> None:
    blocks = error_blocks("<@U0BOB> already approved; '<b>' & co is not a ref")
    check_blocks(blocks)
    assert blocks[0]["text"]["text"] == (
        ":warning: <@U0BOB> already approved; '&lt;b&gt;' &amp; co is not a ref"
    )


# --- approval requests ----------------------------------------------------------------

RECURRING_DETAIL = detail(name="Weekly news", ref="weekly", recurrence=RECURRENCE)
OCCURRENCE = {
    "key": "2026-11-30T08:00",
    "occurrence_at": "2026-11-30T08:00:00+00:00",
    "to_deliver": 4_210,
    "exclusions": {"quarantined": 12, "denylisted": 3},
}


def test_open_approval_request_has_both_buttons_carrying_ref_and_occurrence() -> None:
    message = approval_request(RECURRING_DETAIL, OCCURRENCE, [], 1, None)
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
    approvals = [{"user": "U1", "at": "2026-11-30T08:01:00+00:00"}]
    message = approval_request(RECURRING_DETAIL, OCCURRENCE, approvals, 2, None)
    check_message(message)
    assert "1 of 2 approvals: <@U1>" in all_text(message["blocks"])
    assert set(by_action(message["blocks"])) == {ids.APPROVE_OCCURRENCE, ids.SKIP_OCCURRENCE}


def test_the_first_of_several_approvals_says_it_does_not_send_yet() -> None:
    message = approval_request(RECURRING_DETAIL, OCCURRENCE, [], 3, None)
    text = all_text(message["blocks"])
    assert "0 of 3 approvals yet" in text
    dialog = by_action(message["blocks"])[ids.APPROVE_OCCURRENCE]["confirm"]["text"]["text"]
    assert dialog.startswith("Approve sending *Weekly news* to 4,210 recipients")
    assert "once 3 people have approved; 0 have so far" in dialog


@pytest.mark.parametrize(
    ("decided", "line"),
    [
        (
            {"decision": "approved", "by": ["U1", "U2"], "at": "2026-11-30T08:02:00+00:00"},
            "Approved by <@U1> and <@U2> at 09:02 Europe/Paris. Sending.",
        ),
        (
            {"decision": "skipped", "by": ["U3"], "at": "2026-12-01T07:00:00+00:00"},
            "Skipped by <@U3> at 08:00 Europe/Paris on Tue 1 Dec 2026.",
        ),
        (
            {"decision": "expired", "by": [], "at": "2026-12-07T08:00:00+00:00"},
            "Expired: not decided before the next occurrence. This occurrence is not sent.",
        ),
    ],
)
def test_a_decided_request_has_no_buttons_and_says_who_and_when(
    decided: dict[str, Any], line: str
) -> None:
    approvals = [{"user": "U1", "at": "2026-11-30T08:01:00+00:00"}]
    message = approval_request(RECURRING_DETAIL, OCCURRENCE, approvals, 2, decided)
    check_message(message)
    assert elements(message["blocks"]) == []
    decision = next(
        b for b in message["blocks"] if b.get("block_id") == ids.APPROVAL_DECISION_BLOCK
    )
    assert line in decision["text"]["text"]
    assert "approvals:" not in all_text(message["blocks"])


def test_an_unknown_decision_is_an_error_not_a_silent_message() -> None:
    with pytest.raises(ValueError, match="unknown decision"):
        approval_request(RECURRING_DETAIL, OCCURRENCE, [], 1, {"decision": "maybe"})


def test_an_execution_dict_of_delivery_detail_serves_as_occurrence() -> None:
    execution = {
        "key": "2026-11-30",
        "state": "ready",
        "occurrence_at": "2026-11-30T08:00:00+00:00",
        "exclusions": {},
        "kpis": {**detail()["kpis"], "to_deliver": 77},
    }
    message = approval_request(RECURRING_DETAIL, execution, [], 1, None)
    check_message(message)
    assert "*To deliver*\n77" in all_text(message["blocks"])


# --- limits hold whatever the data ----------------------------------------------------

long_text = st.text(min_size=1, max_size=4_000).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(
    name=long_text,
    audience=long_text,
    reason=long_text,
    state=st.sampled_from(
        ["ready", "in-progress", "paused", "start-pending", "finished", "stopped", "failed"]
    ),
)
def test_every_builder_respects_slack_limits_with_any_name(
    name: str, audience: str, reason: str, state: str
) -> None:
    d = detail(name=name, audience=audience, subject=name, state=state)
    d["preparation"]["exclusions"] = {reason: 3}
    check_blocks(delivery_card(d, None))
    check_blocks(delivery_card(d, reason))
    check_blocks(delivery_card({**d, "schedule": AT_SCHEDULE}, None))
    check_blocks(delivery_picker([row("spring-sale", name), row("x" * 100, name)]))
    check_message(deployment_message(d, progress(state)))
    check_message(approval_request(d, {**OCCURRENCE, "exclusions": {reason: 1}}, [], 3, None))
    check_message(
        approval_request(d, OCCURRENCE, [], 1, {"decision": "expired", "by": [], "reason": reason})
    )
    check_blocks(list_blocks([row("spring-sale", name, audience=audience)] * 3))
    check_blocks(history_blocks(name, [{"date": None, "ref": "r", "name": name}]))
    check_blocks(error_blocks(reason))
    dialog = by_action(delivery_card(d, None))[ids.CONFIRM_SEND]["confirm"]["text"]["text"]
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
    before = copy.deepcopy(d)
    delivery_card(d, None)
    deployment_message(d, progress())
    approval_request(d, OCCURRENCE, [], 2, None)
    assert d == before
