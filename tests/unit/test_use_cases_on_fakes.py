"""Use cases on the fakes of the two ports: what they send and what they say to people.

The database is real (SQLite, migrated per test): the correctness of claims and
counters lives in SQL. The relay is `MemoryTransport` and Slack is
`FakeNotifications`, so these tests read what a person would be told as views, not
as Block Kit, and need no server.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from scenario import as_user, detail_json, prepare_one

from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.domain.roles import Role
from bot.engine.sender import Sender
from bot.engine.transports import MemoryTransport
from bot.jobs.due_work import run_due
from bot.notify.fake import FakeNotifications
from bot.services.deliveries.lifecycle import confirm_send, pause_delivery
from bot.services.deliveries.sending import send_due
from bot.services.deliveries.views import DeploymentView
from bot.services.messages.deployment import DeploymentFollower
from bot.store import executions

ALICE = as_user("U0ALICE", [Role.START_DELIVERIES])
EMAILS = [f"user{i}@x.example" for i in range(7)]


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def confirmed(ctx: Context, tmp_path: Path) -> Context:
    ctx = ctx.with_settings(send_batch_size=3)
    prepare_one(ctx, tmp_path, EMAILS, slack_channel="C0DEPLOY")
    confirm_send(ctx, ALICE, "big")
    return ctx


def test_sending_due_relays_each_recipient_once(confirmed: Context) -> None:
    transport = MemoryTransport(answers={"user3@x.example": ("hard", 550)})
    report = asyncio.run(send_due(confirmed, transport))
    assert report.sent == {"big": DeliveryState.FINISHED}
    assert sorted(transport.recipients()) == sorted(e for e in EMAILS if e != "user3@x.example")
    kpis = detail_json(confirmed, "big")["kpis"]
    assert (kpis["sent"], kpis["bounces_errors_pct"]) == (7, round(100 / 7, 2))


def test_a_relay_that_is_down_loses_nobody(confirmed: Context) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    transport = MemoryTransport(unavailable=2)
    with confirmed.sessions() as s:
        execution_id = executions.to_send(s, confirmed.clock.now())[0][0]
    state = asyncio.run(Sender(confirmed, transport, sleep=sleep).run(execution_id))
    assert state is DeliveryState.FINISHED and waits == [1.0, 2.0]
    assert sorted(transport.recipients()) == sorted(EMAILS)


def test_the_deployment_message_is_posted_then_updated_in_place(confirmed: Context) -> None:
    fake = FakeNotifications()
    follower = DeploymentFollower(confirmed, fake, min_interval=0.0)
    asyncio.run(follower.refresh("big"))
    asyncio.run(send_due(confirmed, MemoryTransport()))
    asyncio.run(follower.refresh("big"))
    first, last = fake.of_kind("deployment")
    assert (first.channel, first.update, last.update, last.ts) == (
        "C0DEPLOY",
        False,
        True,
        first.ts,
    ), "posted once, then updated where it is"
    assert isinstance(last.view, DeploymentView)
    assert last.view.detail.state is DeliveryState.FINISHED
    assert last.view.detail.figures.kpis.sent == 7


def test_updates_wait_while_slack_fails_and_the_next_one_is_right(confirmed: Context) -> None:
    fake = FakeNotifications(fail_next=1)
    follower = DeploymentFollower(confirmed, fake, min_interval=0.0)
    assert asyncio.run(follower.refresh("big")) is None, "Slack refused: nothing recorded"
    pause_delivery(confirmed, ALICE, "big")
    shown = asyncio.run(follower.refresh("big"))
    assert shown is not None and shown.detail.state is DeliveryState.PAUSED
    assert [s.update for s in fake.of_kind("deployment")] == [False]


def test_without_slack_the_due_work_sends_and_says_nothing(confirmed: Context) -> None:
    fake = FakeNotifications(connected=False)
    transport = MemoryTransport()
    confirmed.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    report = asyncio.run(run_due(confirmed, transports=lambda: transport, notifications=fake))
    assert report.sent == {"big": "finished"} and transport.closed
    assert report.digest is not None and report.digest.status == "off"
    assert fake.said == []
    assert detail_json(confirmed, "big")["kpis"]["sent"] == len(EMAILS)
