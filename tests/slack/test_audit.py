"""`/campaign audit`: a delivery's trail for whoever may see deliveries, all of it for
administrators, paged by the More button or `page N`, every piece of data escaped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import ADMIN, ALLOWED, DENIED, SlackClient
from mock_slack import Call, MockSlack
from scenario import CLI, as_user

from bot.blocks import ids
from bot.context import Context
from bot.domain.roles import Role
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.profiles import import_profiles


def text_of(call: Call) -> str:
    return json.dumps(call.body)


def buttons(call: Call) -> dict[str, dict[str, Any]]:
    blocks = call.body.get("blocks") or []
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return {e["action_id"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}


def answer(client: SlackClient, mock: MockSlack, text: str, user: str) -> Call:
    before = len(mock.responses())
    status, _ = client.command("/campaign", f"audit {text}".strip(), user)
    assert status == 200
    mock.wait_for(lambda: len(mock.responses()) > before)
    return mock.responses()[before]


def click(client: SlackClient, mock: MockSlack, action_id: str, value: str, user: str) -> Call:
    before = len(mock.responses())
    status, _ = client.click(action_id, value, user)
    assert status == 200
    mock.wait_for(lambda: len(mock.responses()) > before)
    return mock.responses()[before]


def test_a_deliverys_trail_says_who_did_what(idle: SlackClient, mock_slack: MockSlack) -> None:
    idle.click(ids.CONFIRM_SEND, ids.button_value("promo"), ALLOWED)
    mock_slack.wait_for(lambda: mock_slack.responses())
    trail = text_of(answer(idle, mock_slack, "promo", ALLOWED))
    for words in ("imported", "prepared", "confirmed", "started", "<@U0ALLOWED>", "`cli`"):
        assert words in trail, words
    assert "ready \\u2192 start-pending" in trail
    assert trail.index("confirmed") < trail.index("prepared"), "newest first"
    assert "start-deliveries" not in trail, "a role grant is not about promo"


def test_who_may_read_which_trail(idle: SlackClient, mock_slack: MockSlack) -> None:
    refused = text_of(answer(idle, mock_slack, "promo", DENIED))
    assert "do not allow you" in refused and "imported" not in refused
    refused = text_of(answer(idle, mock_slack, "", ALLOWED))
    assert "do not allow you" in refused and "imported" not in refused
    everything = text_of(answer(idle, mock_slack, "", ADMIN))
    assert "Audit \\u2014 every entry" in everything
    assert "granted a role to" in everything and "`promo`" in everything
    assert "U0ALLOWED" in everything and "role: start-deliveries" in everything
    usage = text_of(answer(idle, mock_slack, "promo page two", ALLOWED))
    assert "Usage: `/campaign audit" in usage


def test_pages_through_more_and_newer(
    idle: SlackClient, mock_slack: MockSlack, slack_services: Context
) -> None:
    for _ in range(30):  # 1 import + 31 preparations: two pages of 25
        prepare_delivery(slack_services, CLI, "promo")
    first = answer(idle, mock_slack, "promo", ALLOWED)
    assert "Page 1 of 2: entries 1\\u201325 of 32" in text_of(first)
    more = buttons(first)[ids.AUDIT_OLDER]
    assert ids.AUDIT_NEWER not in buttons(first)

    prepare_delivery(slack_services, CLI, "promo")  # recorded meanwhile: page 2 holds still
    second = click(idle, mock_slack, ids.AUDIT_OLDER, more["value"], ALLOWED)
    assert second.body["replace_original"] is True
    text = text_of(second)
    assert "Page 2 of 2: entries 26\\u201332 of 32" in text and "imported" in text
    assert ids.AUDIT_OLDER not in buttons(second)
    newer = buttons(second)[ids.AUDIT_NEWER]

    again = click(idle, mock_slack, ids.AUDIT_NEWER, newer["value"], ALLOWED)
    assert "Page 1 of 2" in text_of(again) and "imported" not in text_of(again)

    typed = text_of(answer(idle, mock_slack, "promo page 2", ALLOWED))
    assert "Page 2 of 2: entries 26\\u201333 of 33" in typed
    past = text_of(answer(idle, mock_slack, "promo page 9", ALLOWED))
    assert "No audit entry for `promo` on page 9" in past

    refused = click(idle, mock_slack, ids.AUDIT_OLDER, more["value"], DENIED)
    assert "do not allow you" in text_of(refused), "the page is read as the clicker"
    stale = click(idle, mock_slack, ids.AUDIT_OLDER, "promo", ALLOWED)
    assert "out of date" in text_of(stale)


def test_every_piece_of_data_is_escaped(
    idle: SlackClient, mock_slack: MockSlack, slack_services: Context, tmp_path: Path
) -> None:
    hostile = as_user("<!channel>", [Role.START_DELIVERIES])
    prepare_delivery(slack_services, hostile, "promo")
    csv = tmp_path / "more.csv"
    csv.write_text("email\nnew@x.example\n")
    import_profiles(slack_services, CLI, csv, "<!here> & co")
    trail = text_of(answer(idle, mock_slack, "promo", ALLOWED))
    assert "`&lt;!channel&gt;`" in trail and "<!channel>" not in trail
    everything = text_of(answer(idle, mock_slack, "", ADMIN))
    assert "<!here>" not in everything and "`&lt;!here&gt; &amp; co`" in everything
