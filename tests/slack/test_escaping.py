"""Text that did not come from Greenlight never reaches Slack as markup (issue 11, item 5).

A delivery named with a channel-wide mention, a link and a user mention goes through
every kind of message the bot sends, in channels and privately: the card, the
picker, the list, the status, the preparation, the Deployment message as it is posted
and updated, the history, a refusal that quotes what was typed, an approval request,
and the hourly digest. Everything Slack received (every Web API call, every reply to a
response URL) is then read back: none of the hostile tokens is left as markup, while
the mentions Greenlight itself writes (of the person who clicked) are.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import ALLOWED, SlackClient
from mock_slack import MockSlack
from scenario import CLI, as_user, due_now

from bot.blocks import ids
from bot.context import Context
from bot.domain.roles import Role
from bot.entrypoints.playground.blockkit import message_html
from bot.notify.slack_client import make_client
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries

HOSTILE = "Sale <!channel> & <https://evil.example/x|click here> <@U0VICTIM> <!subteam^S1>"
LIVE_TOKENS = ("<!channel>", "<https://evil.example", "<@U0VICTIM>", "<!subteam^S1>", "<!here>")


def strings(value: Any) -> list[str]:
    """Every string of a payload, JSON given as a string (blocks, in form posts) opened."""
    if isinstance(value, str):
        if value[:1] in "[{":
            try:
                return strings(json.loads(value))
            except ValueError:
                pass
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def live_tokens(mock: MockSlack) -> list[tuple[str, str]]:
    found = []
    for call in mock.calls:
        for text in strings(call.body):
            found += [(call.method, token) for token in LIVE_TOKENS if token in text]
    return found


@pytest.fixture
def hostile(slack_services: Context, tmp_path: Path) -> Context:
    ctx = slack_services.with_settings(kpi_channel="C0KPI")
    entries = [
        {
            "ref": "evil",
            "name": HOSTILE,
            "audience": "buyers",
            "from": "news@shop.example",
            "subject": "Hi",
            "text": "Hello",
            "slack_channel": "C0DEPLOY",
        },
        {
            "ref": "evil-daily",
            "name": HOSTILE,
            "audience": "buyers",
            "from": "news@shop.example",
            "subject": "Hi",
            "text": "Hello",
            "slack_channel": "C0APPROVE",
            "recurrence": {"cron": "0 10 * * *", "timezone": "Europe/Paris"},
        },
    ]
    path = tmp_path / "hostile.yml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    import_deliveries(ctx, CLI, path)
    prepare_delivery(ctx, CLI, "evil")
    prepare_delivery(ctx, CLI, "evil-daily")
    return ctx


def every_message_kind(ctx: Context, slack: SlackClient, mock_slack: MockSlack) -> None:
    """Make Greenlight send each kind of message it has, with a hostile delivery name."""
    slack.command("/confirm-send", "evil", ALLOWED)
    slack.command("/confirm-send", "", ALLOWED)
    slack.command("/campaign", "list", ALLOWED)
    slack.command("/campaign", "prepare evil", ALLOWED)
    slack.command("/campaign", "prepare <!here>", ALLOWED)  # refused, quoting the input
    slack.command("/confirm-send", "<!here> <https://evil.example/y>", ALLOWED)
    slack.click(ids.CONFIRM_SEND, ids.button_value("evil"), ALLOWED)
    mock_slack.wait_for(
        lambda: any("finished" in json.dumps(c.body) for c in mock_slack.api_calls("chat.update"))
    )
    slack.command("/campaign", "status evil", ALLOWED)
    slack.command("/campaign", "history buyer0@x.example", ALLOWED)

    confirm_send(ctx, as_user(ALLOWED, [Role.START_DELIVERIES]), "evil-daily")
    ctx.clock.advance(timedelta(days=1, hours=2))  # type: ignore[attr-defined]
    report = due_now(ctx, slack=make_client(ctx.settings))  # the occurrence and the digest
    assert report.approval_messages == 1
    assert report.digest is not None and report.digest.status == "posted"
    mock_slack.wait_for(lambda: len(mock_slack.responses()) >= 9)


def test_hostile_names_reach_slack_as_text_in_every_message(
    hostile: Context, slack: SlackClient, mock_slack: MockSlack
) -> None:
    every_message_kind(hostile, slack, mock_slack)
    kinds = {c.method for c in mock_slack.calls}
    assert {"chat.postMessage", "chat.update", "files.completeUploadExternal"} <= kinds
    said = [s for c in mock_slack.calls for s in strings(c.body)]
    assert any("Sale &lt;!channel&gt; &amp; &lt;https://evil.example/x" in s for s in said)
    assert any(f"<@{ALLOWED}>" in s for s in said), "Greenlight's own mentions stay live"
    assert live_tokens(mock_slack) == []


def drawn_messages(mock: MockSlack) -> list[tuple[str, str]]:
    """(method, HTML) of every message Greenlight sent, drawn as the playground draws it."""
    drawn = []
    for call in mock.calls:
        if call.method not in ("chat.postMessage", "chat.update") and not call.path.startswith(
            "/response/"
        ):
            continue
        blocks = call.body.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        drawn.append((call.method, message_html(str(call.body.get("text") or ""), blocks, {})))
    return drawn


def test_the_playground_draws_every_message_greenlight_sends_as_text(
    hostile: Context, slack: SlackClient, mock_slack: MockSlack
) -> None:
    """Every block and element of every kind of message has a drawing (none is
    "unsupported"), and a hostile name is shown as the text it is, never as markup of
    the page nor as a live mention."""
    every_message_kind(hostile, slack, mock_slack)
    drawn = drawn_messages(mock_slack)
    assert len(drawn) >= 15
    for method, page in drawn:
        assert "bk-unsupported" not in page, (method, page)
        for token in ("<!channel", "<https://evil", "<@U0VICTIM", "<!subteam", "<script"):
            assert token not in page, (method, token)
    shown = "".join(page for _, page in drawn)
    assert "Sale &lt;!channel&gt; &amp; &lt;https://evil.example/x|click here&gt;" in shown
    assert 'class="bk-button bk-primary"' in shown and "bk-select" in shown
    assert "bk-header" in shown and "bk-fields" in shown and "bk-context" in shown
