"""Deployment buttons (role-checked at the click) and the /campaign subcommands."""

from __future__ import annotations

import asyncio
import json

from harness import ADMIN, ALLOWED, DENIED, SlackClient
from mock_slack import MockSlack
from scenario import detail_json

from bot.blocks import ids
from bot.context import Context
from bot.notify.slack_client import make_client


def text_of(call) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(call.body)


def action_ids(call) -> list[str]:  # type: ignore[no-untyped-def]
    blocks = call.body.get("blocks") or []
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def last_deployment(mock: MockSlack):  # type: ignore[no-untyped-def]
    calls = mock.api_calls("chat.postMessage") + mock.api_calls("chat.update")
    return calls[-1]


def test_pause_resume_stop_from_the_deployment_message(
    idle: SlackClient, mock_slack: MockSlack, slack_services: Context
) -> None:
    value = ids.button_value("promo")
    idle.click(ids.CONFIRM_SEND, value, ALLOWED)
    mock_slack.wait_for(lambda: mock_slack.responses() and mock_slack.api_calls("chat.postMessage"))
    assert ids.PAUSE in action_ids(last_deployment(mock_slack))

    idle.click(ids.PAUSE, value, DENIED)
    mock_slack.wait_for(
        lambda: any("do not allow you to pause" in text_of(c) for c in mock_slack.responses())
    )
    assert detail_json(slack_services, "promo")["state"] == "in-progress"

    idle.click(ids.PAUSE, value, ALLOWED)
    mock_slack.wait_for(lambda: ids.RESUME in action_ids(last_deployment(mock_slack)))
    assert detail_json(slack_services, "promo")["state"] == "paused"
    idle.click(ids.RESUME, value, ALLOWED)
    mock_slack.wait_for(lambda: ids.PAUSE in action_ids(last_deployment(mock_slack)))

    idle.click(ids.STOP, value, ALLOWED)
    mock_slack.wait_for(lambda: ids.STOP not in action_ids(last_deployment(mock_slack)))
    detail = detail_json(slack_services, "promo")
    assert (detail["state"], detail["logs"]["ignored"], detail["kpis"]["sent"]) == ("stopped", 5, 0)
    assert len(mock_slack.api_calls("chat.postMessage")) == 1, "one message, updated in place"

    idle.click(ids.RESUME, value, ALLOWED)  # a stale button
    mock_slack.wait_for(
        lambda: "cannot resume a delivery that is stopped" in text_of(mock_slack.responses()[-1])
    )


def test_compute_stats_button_recounts(
    idle: SlackClient, mock_slack: MockSlack, slack_services: Context
) -> None:
    idle.click(ids.COMPUTE_STATS, ids.button_value("promo"), ALLOWED)
    update = mock_slack.wait_for(lambda: mock_slack.api_calls("chat.postMessage"))[0]
    assert "To deliver" in text_of(update) and "5" in text_of(update)


def test_campaign_subcommands(idle: SlackClient, mock_slack: MockSlack) -> None:
    steps = [
        ("help", ALLOWED, "history"),
        ("frobnicate", ALLOWED, "/campaign status"),
        ("list", ALLOWED, "promo"),
        ("status promo", ALLOWED, "Deployment"),
        ("history <mailto:buyer1@x.example|buyer1@x.example>", ALLOWED, "buyer1@x.example"),
        ("roles list", DENIED, "do not allow you to grant and revoke roles"),
        ("roles grant <@U0NEW|new> start-deliveries", ADMIN, "start-deliveries granted to"),
        ("roles list", ADMIN, "U0NEW"),
        ("roles grant <@U0NEW> boss", ADMIN, "the roles are"),
    ]
    for n, (text, user, expected) in enumerate(steps, start=1):
        status, _ = idle.command("/campaign", text, user)
        assert status == 200
        mock_slack.wait_for(lambda n=n: len(mock_slack.responses()) >= n)
        assert expected in text_of(mock_slack.responses()[n - 1]), text


def test_campaign_prepare_answers_at_once_then_reports(
    idle: SlackClient, mock_slack: MockSlack
) -> None:
    idle.command("/campaign", "prepare promo", ALLOWED)
    mock_slack.wait_for(lambda: len(mock_slack.responses()) == 2)
    assert "Preparing promo" in text_of(mock_slack.responses()[0])
    assert "to deliver" in text_of(mock_slack.responses()[1]).lower()


def test_rate_limited_calls_are_retried_after_retry_after(
    slack_services: Context, mock_slack: MockSlack
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    mock_slack.rate_limit_next["chat.postMessage"] = 7
    client = make_client(slack_services.settings, sleep=sleep)
    resp = asyncio.run(client.chat_postMessage(channel="C1", text="hi"))
    assert resp["ok"] and waits == [7.0]
    assert len(mock_slack.api_calls("chat.postMessage")) == 1
