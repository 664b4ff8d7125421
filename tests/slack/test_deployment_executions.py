"""Compute stats on an older occurrence's Deployment message updates that message.

A recurring delivery's occurrences each get their own Deployment message; the delivery
keeps only the latest one's place. The click on an older message is a signed request
to the real app whose container names that message, as Slack sends it; the updates are
read from the mock Slack.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from harness import ALLOWED, LiveApp, SlackClient, post, sign
from mock_slack import Call, MockSlack
from scenario import CLI, as_user, due_now
from sqlalchemy import select

from bot.blocks import ids
from bot.context import Context
from bot.domain.roles import Role
from bot.feedback.events import FeedbackEvent, FeedbackKind
from bot.notify.slack_client import make_client
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.outcomes.ingest import ingest
from bot.store.models import Delivery, Execution, SendingLog

CHANNEL = "C0DAILY"
T1 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=1)
KEY1 = "2026-11-24T09:00:00+00:00"
KEY2 = "2026-11-25T09:00:00+00:00"

DAILY = f"""
- ref: daily
  name: Daily deals
  audience: buyers
  from: news@shop.example
  subject: "Deals for {{{{ first_name }}}}"
  text: "Hello"
  slack_channel: {CHANNEL}
  recurrence:
    cron: "0 10 * * *"
    timezone: Europe/Paris
    request_confirmation: false
"""


def blocks_of(call: Call) -> list[dict]:  # type: ignore[type-arg]
    blocks = call.body.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def stats_value(call: Call) -> str:
    [value] = [
        e["value"]
        for b in blocks_of(call)
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == ids.COMPUTE_STATS
    ]
    return str(value)


def fields(call: Call) -> str:
    return json.dumps(blocks_of(call))


def click_on_message(client: SlackClient, value: str, channel: str, ts: str) -> int:
    """Compute stats clicked on the channel message `ts`, as Slack posts the click."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": ALLOWED, "name": "allowed"},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": "1.2.3",
        "channel": {"id": channel},
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "message": {"ts": ts, "type": "message"},
        "response_url": f"{client.slack_url}/response/older",
        "actions": [
            {
                "action_id": ids.COMPUTE_STATS,
                "block_id": ids.DEPLOYMENT_ACTIONS_BLOCK,
                "type": "button",
                "value": value,
                "action_ts": "1700000000.000001",
            }
        ],
    }
    body = urlencode({"payload": json.dumps(payload)})
    status, _ = post(
        f"{client.app.url}/slack/events", body, sign(body), "application/x-www-form-urlencoded"
    )
    return status


@pytest.fixture
def daily(slack_services: Context, tmp_path: Path) -> Context:
    yml = tmp_path / "r.yml"
    yml.write_text(DAILY)
    import_deliveries(slack_services, CLI, yml)
    prepare_delivery(slack_services, CLI, "daily")
    confirm_send(slack_services, as_user(ALLOWED, [Role.START_DELIVERIES]), "daily")
    return slack_services


@pytest.fixture
def client(daily: Context, mock_slack: MockSlack) -> Iterator[SlackClient]:
    app = LiveApp(daily, start_sender=False).start()
    yield SlackClient(app, mock_slack.url)
    app.stop()


def tick(ctx: Context, at: datetime) -> str:
    """The due work at `at`, with Slack; the ts of the delivery's latest message."""
    ctx.clock.set(at)  # type: ignore[attr-defined]
    due_now(ctx, slack=make_client(ctx.settings))
    with ctx.sessions() as s:
        ts = s.scalar(select(Delivery.deployment_ts).where(Delivery.ref == "daily"))
    assert ts
    return ts


def deployment_posts(mock: MockSlack) -> list[Call]:
    return [c for c in mock.api_calls("chat.postMessage") if "Deployment" in json.dumps(c.body)]


def test_compute_stats_on_an_older_occurrence_updates_its_own_message(
    client: SlackClient, daily: Context, mock_slack: MockSlack
) -> None:
    ctx = daily
    first_ts = tick(ctx, T1)  # the first occurrence is sent: its Deployment message
    second_ts = tick(ctx, T2)  # the second: a message of its own
    assert first_ts != second_ts
    posts = deployment_posts(mock_slack)
    assert len(posts) == 2
    first, second = posts
    assert json.loads(stats_value(first)) == {"execution": KEY1, "ref": "daily"}
    assert json.loads(stats_value(second)) == {"execution": KEY2, "ref": "daily"}

    # Two recipients of the first occurrence open it after the second was sent.
    with ctx.sessions() as s:
        logs = s.scalars(
            select(SendingLog.id)
            .join(Execution, Execution.id == SendingLog.execution_id)
            .where(Execution.key == KEY1)
            .order_by(SendingLog.id)
        ).all()
    ingest(
        ctx,
        [
            FeedbackEvent(
                kind=FeedbackKind.OPEN, source="generic", source_event_id=f"o-{i}", log_id=i
            )
            for i in logs[:2]
        ],
    )

    before = len(mock_slack.api_calls("chat.update"))
    assert click_on_message(client, stats_value(first), CHANNEL, first_ts) == 200
    mock_slack.wait_for(
        lambda: any(
            c.body.get("ts") == first_ts for c in mock_slack.api_calls("chat.update")[before:]
        )
    )
    updated = [c for c in mock_slack.api_calls("chat.update")[before:] if c.body["ts"] == first_ts]
    assert updated[-1].body["channel"] == CHANNEL
    shown = fields(updated[-1])
    assert "*Execution*" in shown and "(finished)" in shown
    assert "40 %" in shown, "2 openers of 5: the first occurrence's own open rate"
    assert json.loads(stats_value(updated[-1]))["execution"] == KEY1
    # The latest message is brought up to date too, and keeps the second occurrence.
    latest = mock_slack.wait_for(
        lambda: [
            c for c in mock_slack.api_calls("chat.update")[before:] if c.body["ts"] == second_ts
        ]
    )
    assert "*Latest execution*" in fields(latest[-1]) and "40 %" not in fields(latest[-1])
    assert json.loads(stats_value(latest[-1]))["execution"] == KEY2
    assert len(deployment_posts(mock_slack)) == 2, "no new message"
