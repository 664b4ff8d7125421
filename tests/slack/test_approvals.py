"""Approvals of a recurring delivery's occurrences, walked with an injected clock.

Signed clicks go to the real HTTP app; the approval requests, their updates and the
private answers are read from the mock Slack; the messages from the real SMTP relay;
decisions and votes from the database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import ALLOWED, DENIED, EMAILS, LiveApp, SlackClient
from mock_slack import Call, MockSlack
from scenario import CLI, as_user, due_now
from smtp_relay import Relay
from sqlalchemy import select

from bot.blocks import ids
from bot.context import Context
from bot.domain.approval import Choice
from bot.domain.roles import Role
from bot.jobs.due_work import DueReport
from bot.notify.slack_client import make_client
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.roles import grant
from bot.store.models import (
    ApprovalRequest,
    ApprovalVote,
    AuditEntry,
    Delivery,
    Execution,
    SendingLog,
)

SECOND = "U0SECOND"  # also holds start-deliveries
CHANNEL = "C0APPROVE"
T1 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Paris: the first occurrence
T2 = T1 + timedelta(days=1)
KEY1 = "2026-11-24T09:00:00+00:00"

WEEKLY = """
- ref: daily
  name: Daily deals
  audience: buyers
  from: news@shop.example
  subject: "Deals for {{ first_name }}"
  text: "Hello"
  slack_channel: C0APPROVE
  recurrence:
    cron: "0 10 * * *"
    timezone: Europe/Paris
EXTRA
"""


def text_of(call: Call) -> str:
    return json.dumps(call.body)


def blocks_of(call: Call) -> list[dict]:  # type: ignore[type-arg]
    blocks = call.body.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def action_ids(call: Call) -> list[str]:
    return [
        e["action_id"] for b in blocks_of(call) if b["type"] == "actions" for e in b["elements"]
    ]


def button_value(call: Call) -> str:
    [value] = {e["value"] for b in blocks_of(call) if b["type"] == "actions" for e in b["elements"]}
    return value


def requests(mock: MockSlack) -> list[Call]:
    return [c for c in mock.api_calls("chat.postMessage") if "Approval" in text_of(c)]


def updates(mock: MockSlack) -> list[Call]:
    return [c for c in mock.api_calls("chat.update") if "Approval" in text_of(c)]


def recurring(ctx: Context, tmp_path: Path, extra: str = "", confirm: bool = True) -> None:
    yml = tmp_path / "r.yml"
    yml.write_text(WEEKLY.replace("EXTRA", extra))
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "daily")
    grant(ctx, CLI, SECOND, "start-deliveries")
    if confirm:
        confirm_send(ctx, as_user(ALLOWED, [Role.START_DELIVERIES]), "daily")


def tick(ctx: Context, at: datetime, connected: bool = True) -> DueReport:
    ctx.clock.set(at)  # type: ignore[attr-defined]
    slack = make_client(ctx.settings) if connected else None
    return due_now(ctx, slack=slack)


def request_row(ctx: Context, key: str = KEY1) -> ApprovalRequest:
    with ctx.sessions() as s:
        return s.scalars(
            select(ApprovalRequest)
            .join(Execution, Execution.id == ApprovalRequest.execution_id)
            .where(Execution.key == key)
        ).one()


def clicks(ctx: Context) -> list[dict]:  # type: ignore[type-arg]
    with ctx.sessions() as s:
        rows = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "approval.click").order_by(AuditEntry.id)
        ).all()
        return [{"actor": r.actor, **r.detail} for r in rows]


def sent_by_the_runner(ctx: Context, key: str) -> None:
    """Wait until the sender the approval kicked has finished the occurrence.

    The test's own ticks then never send alongside it: what the relay holds is what
    the approval alone caused.
    """
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with ctx.sessions() as s:
            state = s.scalar(select(Execution.state).where(Execution.key == key))
        if state == "finished":
            return
        time.sleep(0.05)
    raise AssertionError(f"occurrence {key} was not sent (state {state})")


def received(relay: Relay) -> dict[str, int]:
    return {rcpt: len(msgs) for rcpt, msgs in relay.recorder.by_rcpt().items()}


def answers(mock: MockSlack, n: int) -> list[str]:
    mock.wait_for(lambda: len(mock.responses()) >= n)
    return [text_of(c) for c in mock.responses()]


@pytest.fixture
def app(
    slack_services: Context, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[LiveApp]:
    extra = getattr(request, "param", "")
    recurring(slack_services, tmp_path, extra)
    live = LiveApp(slack_services).start()
    deadline = time.monotonic() + 15
    while live.server.runner.rounds < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the runner's start-up round, at T0: nothing is due then
    yield live
    live.stop()


@pytest.fixture
def client(app: LiveApp, mock_slack: MockSlack) -> SlackClient:
    return SlackClient(app, mock_slack.url)


def test_an_allowed_user_approves_once_and_the_occurrence_is_sent(
    client: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    report = tick(slack_services, T1)
    assert [(r.key, r.outcome) for r in report.occurrences] == [(KEY1, "awaiting-approval")]
    [posted] = requests(mock_slack)
    assert posted.body["channel"] == CHANNEL
    assert action_ids(posted) == [ids.APPROVE_OCCURRENCE, ids.SKIP_OCCURRENCE]
    assert "*To deliver*\\n5" in text_of(posted) and "10:00" in text_of(posted)
    assert relay.recorder.received == [], "nothing leaves before the approval"
    value = button_value(posted)

    client.click(ids.APPROVE_OCCURRENCE, value, DENIED)
    assert "do not allow you to approve an occurrence" in answers(mock_slack, 1)[0]
    assert mock_slack.responses()[0].body["response_type"] == "ephemeral"
    assert request_row(slack_services).state == "open"

    client.click(ids.APPROVE_OCCURRENCE, value, ALLOWED)
    client.click(ids.APPROVE_OCCURRENCE, value, ALLOWED, {"X-Slack-Retry-Num": "1"})
    texts = answers(mock_slack, 3)[1:]
    assert sum("You approved" in t for t in texts) == 1
    assert sum("was already approved by <@U0ALLOWED>" in t for t in texts) == 1

    update = mock_slack.wait_for(lambda: updates(mock_slack))[-1]
    assert (update.body["channel"], update.body["ts"]) == (CHANNEL, request_row(slack_services).ts)
    assert "Approved by <@U0ALLOWED>" in text_of(update) and action_ids(update) == []

    # The approval kicked the sender: the occurrence goes out, and its Deployment message.
    sent_by_the_runner(slack_services, KEY1)
    deployment = mock_slack.wait_for(
        lambda: [c for c in mock_slack.api_calls("chat.postMessage") if "Deployment" in text_of(c)]
    )[0]
    assert deployment.body["channel"] == CHANNEL
    assert "Latest execution" in text_of(deployment)
    tick(slack_services, T1 + timedelta(seconds=30))
    assert received(relay) == dict.fromkeys(EMAILS, 1)
    row = request_row(slack_services)
    assert (row.state, row.decided_by, row.decided_at) == ("approved", [ALLOWED], T1)
    assert [(c["actor"], c["result"]) for c in clicks(slack_services)] == [
        (DENIED, "refused: no role"),
        (ALLOWED, "approved: sending"),
        (ALLOWED, "already approved"),
    ]


@pytest.mark.parametrize("app", ["    approvals_required: 2"], indirect=True)
def test_a_quorum_of_two_distinct_approvers(
    client: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    tick(slack_services, T1)
    [posted] = requests(mock_slack)
    value = button_value(posted)
    assert "2 people have approved" in text_of(posted)

    client.click(ids.APPROVE_OCCURRENCE, value, ALLOWED)
    assert "recorded: 1 of 2" in answers(mock_slack, 1)[0]
    update = mock_slack.wait_for(lambda: updates(mock_slack))[-1]
    assert "1 of 2 approvals" in text_of(update) and ids.APPROVE_OCCURRENCE in action_ids(update)
    client.click(ids.APPROVE_OCCURRENCE, value, ALLOWED)
    assert "You already approved" in answers(mock_slack, 2)[1]
    tick(slack_services, T1 + timedelta(minutes=1))
    assert relay.recorder.received == [], "one approver is not enough"
    assert request_row(slack_services).state == "open"

    client.click(ids.APPROVE_OCCURRENCE, value, SECOND)
    assert "You approved" in answers(mock_slack, 3)[2]
    final = mock_slack.wait_for(
        lambda: [u for u in updates(mock_slack) if "Approved by" in text_of(u)]
    )[-1]
    assert "<@U0ALLOWED> and <@U0SECOND>" in text_of(final) and action_ids(final) == []
    sent_by_the_runner(slack_services, KEY1)
    tick(slack_services, T1 + timedelta(minutes=2))
    assert received(relay) == dict.fromkeys(EMAILS, 1)
    with slack_services.sessions() as s:
        votes = s.scalars(select(ApprovalVote.user_id).order_by(ApprovalVote.id)).all()
    assert votes == [ALLOWED, SECOND]


def test_skip_means_that_occurrence_is_never_sent(
    client: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    tick(slack_services, T1)
    value = button_value(requests(mock_slack)[0])
    client.click(ids.SKIP_OCCURRENCE, value, ALLOWED)
    assert "You skipped" in answers(mock_slack, 1)[0]
    client.click(ids.APPROVE_OCCURRENCE, value, SECOND)
    assert "was already skipped by <@U0ALLOWED>" in answers(mock_slack, 2)[1]
    update = mock_slack.wait_for(
        lambda: [u for u in updates(mock_slack) if "Skipped by" in text_of(u)]
    )[-1]
    assert action_ids(update) == []
    tick(slack_services, T1 + timedelta(minutes=1))
    assert relay.recorder.received == []
    with slack_services.sessions() as s:
        execution = s.scalars(select(Execution).where(Execution.key == KEY1)).one()
        statuses = set(
            s.scalars(select(SendingLog.status).where(SendingLog.execution_id == execution.id))
        )
    assert (execution.state, statuses) == ("skipped", {"ignored"})

    # The next occurrence asks again, and is sent once approved.
    tick(slack_services, T2)
    second = requests(mock_slack)[-1]
    assert len(requests(mock_slack)) == 2 and button_value(second) != value
    client.click(ids.APPROVE_OCCURRENCE, button_value(second), SECOND)
    sent_by_the_runner(slack_services, "2026-11-25T09:00:00+00:00")
    tick(slack_services, T2 + timedelta(minutes=1))
    assert received(relay) == dict.fromkeys(EMAILS, 1)


def test_undecided_request_expires_at_the_next_occurrence(
    client: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    # Slack unreachable for this tick: the request waits in the database.
    tick(slack_services, T1, connected=False)
    assert requests(mock_slack) == []
    assert request_row(slack_services).ts is None
    tick(slack_services, T1 + timedelta(seconds=15))
    tick(slack_services, T1 + timedelta(seconds=30))
    [first] = requests(mock_slack)
    assert request_row(slack_services).ts is not None

    report = tick(slack_services, T2)
    assert report.approvals_expired == 1
    expired = [u for u in updates(mock_slack) if "Expired" in text_of(u)]
    assert len(expired) == 1 and action_ids(expired[0]) == []
    assert "not decided before the next occurrence" in text_of(expired[0])
    assert len(requests(mock_slack)) == 2, "the new occurrence asks again"

    client.click(ids.APPROVE_OCCURRENCE, button_value(first), ALLOWED)
    assert "expired" in answers(mock_slack, 1)[0] and "it was not sent" in answers(mock_slack, 1)[0]
    tick(slack_services, T2 + timedelta(minutes=1))
    assert relay.recorder.received == []
    assert request_row(slack_services).state == "expired"


@pytest.mark.parametrize("app", ["    approval_expiry: 2h"], indirect=True)
def test_an_approval_expiry_shorter_than_the_next_occurrence(
    client: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    tick(slack_services, T1)
    assert tick(slack_services, T1 + timedelta(hours=1, minutes=59)).approvals_expired == 0
    assert tick(slack_services, T1 + timedelta(hours=2)).approvals_expired == 1
    [expired] = [u for u in updates(mock_slack) if "Expired" in text_of(u)]
    assert "not decided within 2h" in text_of(expired)
    assert relay.recorder.received == []


def test_confirming_a_recurring_delivery_starts_its_recurrence(
    idle: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context, tmp_path: Path
) -> None:
    recurring(slack_services, tmp_path, confirm=False)
    idle.command("/confirm-send", "daily", ALLOWED)
    card = answers(mock_slack, 1)[0]
    assert "on its schedule (0 10 * * * Europe/Paris)" in card
    idle.click(ids.CONFIRM_SEND, ids.button_value("daily"), ALLOWED)
    done = answers(mock_slack, 2)[1]
    assert "confirmed *daily*: each occurrence waits for approval" in done
    assert "The first is at 10:00 Europe/Paris on Tue 24 Nov 2026" in done
    assert mock_slack.api_calls("chat.postMessage") == [], "no Deployment before an occurrence"
    with slack_services.sessions() as s:
        keys = s.scalars(select(Execution.key).join(Delivery).where(Delivery.ref == "daily")).all()
    assert keys == ["main"], "only the preview, until the first occurrence"
    tick(slack_services, T1)
    assert len(requests(mock_slack)) == 1 and relay.recorder.received == []


def test_stopping_the_delivery_closes_its_open_request(
    client: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    from bot.services.deliveries.lifecycle import stop_delivery

    tick(slack_services, T1)
    value = button_value(requests(mock_slack)[0])
    stop_delivery(slack_services, as_user(ALLOWED, [Role.START_DELIVERIES]), "daily")
    tick(slack_services, T1 + timedelta(seconds=15))
    [closed] = [u for u in updates(mock_slack) if "Expired" in text_of(u)]
    assert "the delivery was stopped" in text_of(closed) and action_ids(closed) == []
    client.click(ids.APPROVE_OCCURRENCE, value, ALLOWED)
    assert "it was not sent" in answers(mock_slack, 1)[0]
    tick(slack_services, T2)
    assert relay.recorder.received == [] and len(requests(mock_slack)) == 1


@pytest.mark.parametrize("app", ["    approvals_required: 2"], indirect=True)
def test_two_approvers_at_the_same_instant_make_one_decision(
    app: LiveApp, mock_slack: MockSlack, slack_services: Context
) -> None:
    """Occurrence after occurrence, two people approve at once: one of them decides."""
    import threading

    from bot.services.recurring.approvals import decide

    for day in range(6):
        at = T1 + timedelta(days=day)
        tick(slack_services, at)
        key = at.isoformat()
        results: list[str] = []
        barrier = threading.Barrier(2)

        def click(
            user: str,
            key: str = key,
            results: list[str] = results,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            actor = as_user(user, [Role.START_DELIVERIES])
            results.append(decide(slack_services, actor, "daily", key, Choice.APPROVE).outcome)

        threads = [threading.Thread(target=click, args=(u,)) for u in (ALLOWED, SECOND)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == ["approved", "recorded"], f"occurrence {key}"
        row = request_row(slack_services, key)
        assert (row.state, sorted(row.decided_by)) == ("approved", sorted([ALLOWED, SECOND]))
