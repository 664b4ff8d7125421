"""The send guard's alert in Slack: posted by the server that follows the send, with the
Deployment message's Resume and Stop send, answered by the same role-checked listeners.

The live app runs its real sender (a thread, against the real SMTP relay, which
refuses recipients named `hard…`); the clicks are signed requests to its HTTP app.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from harness import ALLOWED, DENIED, LiveApp, SlackClient
from mock_slack import Call, MockSlack
from scenario import CLI, detail_json
from sqlalchemy import select

from bot.blocks import ids
from bot.clock import FixedClock
from bot.context import Context
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.store.models import AuditEntry, GuardAlert

T0 = datetime.fromisoformat("2026-11-23T09:00:00+00:00")


class SteppingClock(FixedClock):
    """An injected clock that moves a millisecond at each reading: every answer the
    sender records is later than the Resume before it, as on a real clock."""

    def __init__(self, at: datetime) -> None:
        super().__init__(at)
        self.lock = threading.Lock()

    def now(self) -> datetime:
        with self.lock:
            self.advance(timedelta(milliseconds=1))
            return super().now()


@pytest.fixture
def clock() -> FixedClock:
    return SteppingClock(T0)


@pytest.fixture
def risky(slack_services: Context, tmp_path: Path) -> Context:
    """`risky` in #C0RISK: 60 recipients, 5 of the first 20 refused; its own guard
    (a window of 20, paused from 20 answers on); batches of 10."""
    ctx = slack_services.with_settings(send_batch_size=10)
    emails = [
        f"hard{i}@stale.example" if i < 20 and i % 4 == 0 else f"r{i}@x.example" for i in range(60)
    ]
    csv = tmp_path / "risky.csv"
    csv.write_text("email\n" + "".join(f"{e}\n" for e in emails))
    import_profiles(ctx, CLI, csv, "risky")
    yml = tmp_path / "risky.yml"
    yml.write_text(
        "- ref: risky\n  name: Risky <list> & co\n  audience: risky\n  from: news@shop.example\n"
        "  subject: Hi\n  text: Hello\n  slack_channel: C0RISK\n"
        "  guard: {rate: 0.05, window: 20, minimum: 20}\n"
    )
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "risky")
    return ctx


@pytest.fixture
def client(risky: Context, mock_slack: MockSlack) -> Iterator[SlackClient]:
    app = LiveApp(risky).start()
    yield SlackClient(app, mock_slack.url)
    app.stop()


def alerts(mock: MockSlack) -> list[Call]:
    return [
        c for c in mock.api_calls("chat.postMessage") if "paused by the guard" in json.dumps(c.body)
    ]


def alert_updates(mock: MockSlack, ts: str) -> list[Call]:
    return [c for c in mock.api_calls("chat.update") if c.body.get("ts") == ts]


def posted_ts(ctx: Context) -> str:
    """Where the (only) alert was posted, as the database keeps it."""
    with ctx.sessions() as s:
        (ts,) = s.scalars(select(GuardAlert.ts)).all()
    assert ts is not None
    return ts


def blocks_of(call: Call) -> list[dict[str, object]]:
    blocks = call.body.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks  # type: ignore[no-any-return]


def action_ids(call: Call) -> list[str]:
    return [
        e["action_id"]  # type: ignore[index]
        for b in blocks_of(call)
        if b["type"] == "actions"
        for e in b["elements"]  # type: ignore[attr-defined]
    ]


def guard_actions(ctx: Context) -> list[str]:
    with ctx.sessions() as s:
        return list(
            s.scalars(
                AuditEntry.__table__.select()  # type: ignore[attr-defined]
                .with_only_columns(AuditEntry.action)
                .where(AuditEntry.actor == "guard")
                .order_by(AuditEntry.id)
            )
        )


def test_the_alert_and_its_buttons(
    client: SlackClient, mock_slack: MockSlack, risky: Context
) -> None:
    value = ids.button_value("risky")
    client.click(ids.CONFIRM_SEND, value, ALLOWED)
    mock_slack.wait_for(lambda: alerts(mock_slack))
    (alert,) = alerts(mock_slack)
    assert alert.body["channel"] == "C0RISK"
    assert action_ids(alert) == [ids.RESUME, ids.STOP]
    text = json.dumps(blocks_of(alert))
    assert "*25 %* of the last 20 relayed" in text
    assert "user unknown (5)" in text and "stale.example (5)" in text
    assert "Risky &lt;list&gt; &amp; co" in json.dumps(alert.body), "the name is escaped"
    detail = detail_json(risky, "risky")
    assert detail["state"] == "paused"
    assert detail["logs"]["queued"] == 40, "paused after the batch that crossed"

    client.click(ids.RESUME, value, DENIED)
    refused = "do not allow you to resume"
    mock_slack.wait_for(lambda: any(refused in json.dumps(c.body) for c in mock_slack.responses()))
    assert detail_json(risky, "risky")["state"] == "paused"

    # Resume from the alert: the rest is clean. Counting the old answers, the batch
    # after the Resume would leave 2 refusals in the last 20 (10 %) and pause again;
    # only the answers after the Resume count.
    client.click(ids.RESUME, value, ALLOWED)
    mock_slack.wait_for(lambda: detail_json(risky, "risky")["state"] == "finished")
    detail = detail_json(risky, "risky")
    assert detail["logs"]["queued"] == 0 and detail["kpis"]["sent"] == 60
    assert len(alerts(mock_slack)) == 1, "not paused again by the old answers"
    assert guard_actions(risky) == ["delivery.pause", "guard.alert"]
    # The alert was drawn again as the delivery moved on: no Resume once resumed, no
    # button at all once finished.
    ts = posted_ts(risky)
    mock_slack.wait_for(lambda: any(action_ids(c) == [] for c in alert_updates(mock_slack, ts)))
    assert all(ids.RESUME not in action_ids(c) for c in alert_updates(mock_slack, ts))


def test_stop_send_from_the_alert(
    client: SlackClient, mock_slack: MockSlack, risky: Context
) -> None:
    value = ids.button_value("risky")
    client.click(ids.CONFIRM_SEND, value, ALLOWED)
    mock_slack.wait_for(lambda: alerts(mock_slack))
    client.click(ids.STOP, value, ALLOWED)
    mock_slack.wait_for(lambda: detail_json(risky, "risky")["state"] == "stopped")
    detail = detail_json(risky, "risky")
    assert (detail["logs"]["ignored"], detail["logs"]["queued"]) == (40, 0)
    ts = posted_ts(risky)
    mock_slack.wait_for(lambda: [action_ids(c) for c in alert_updates(mock_slack, ts)] == [[]])
