"""The send guard through the real sender and a real SMTP relay, on SQLite and PostgreSQL.

The relay (tests/smtp_relay.py) refuses every recipient whose name starts with `hard`
(550 at RCPT), so a chosen share of refusals is a chosen share of such names, placed
where the batches will meet them. The sender claims logs in the order the profiles
were imported, 100 a batch here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from scenario import CLI, as_user, settings_for
from smtp_relay import Relay
from sqlalchemy import func, select

from bot.clock import FixedClock
from bot.config import Settings
from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.domain.roles import Role
from bot.engine.sender import Sender
from bot.engine.transports.smtp import SmtpTransport
from bot.notify.fake import FakeNotifications
from bot.services.deliveries import guard
from bot.services.deliveries.guard_views import GuardAlertView
from bot.services.deliveries.lifecycle import confirm_send, resume_delivery
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.deliveries.sending import send_due
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.services.messages.deployment import DeploymentFollower
from bot.store.models import AuditEntry, Delivery, Execution, SendingLog

START = [Role.START_DELIVERIES]
ALICE = as_user("U0ALICE", START)

DELIVERY = """
- ref: promo
  name: Promo
  audience: buyers
  from: Shop <news@shop.example>
  subject: "A deal for you"
  text: "Hi {{ first_name }}"
  slack_channel: C0PROMO
GUARD
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, send_batch_size=100)


def recipients(count: int, hard_every: dict[range, int]) -> list[str]:
    """`count` addresses; in each range, every n-th one is refused by the relay."""
    out = []
    for i in range(count):
        every = next((n for r, n in hard_every.items() if i in r), 0)
        if every and i % every == 0:
            out.append(f"hard{i}@stale.example")
        else:
            out.append(f"u{i}@x.example")
    return out


def load(ctx: Context, tmp_path: Path, emails: Sequence[str], guard_yaml: str = "") -> int:
    csv = tmp_path / "p.csv"
    csv.write_text("email,first_name\n" + "".join(f"{e},N{i}\n" for i, e in enumerate(emails)))
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(DELIVERY.replace("GUARD", guard_yaml))
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    confirm_send(ctx, ALICE, "promo")
    with ctx.sessions() as s:
        execution_id = s.scalar(select(Execution.id))
    assert execution_id is not None
    return execution_id


def send(ctx: Context, relay: Relay) -> DeliveryState:
    """One round of the sending step (`send_due`: the real sender with its guard, then
    the retries due); the delivery's state after it."""

    async def go() -> None:
        t = SmtpTransport("127.0.0.1", relay.port, pool_size=3, timeout=10.0)
        try:
            await send_due(ctx, t)
        finally:
            await t.close()

    asyncio.run(go())
    with ctx.sessions() as s:
        return s.scalars(select(Delivery.state)).one()


def queued_and_done(ctx: Context) -> tuple[int, int]:
    with ctx.sessions() as s:
        rows = s.scalars(select(SendingLog.status)).all()
    queued = sum(1 for r in rows if r.value == "queued")
    return queued, len(rows) - queued


def alerts(notifications: FakeNotifications) -> list[GuardAlertView]:
    views = [said.view for said in notifications.of_kind("guard") if not said.update]
    assert all(isinstance(v, GuardAlertView) for v in views)
    return views  # type: ignore[return-value]


def post(ctx: Context, notifications: FakeNotifications) -> int:
    return asyncio.run(DeploymentFollower(ctx, notifications).reconcile())


def guard_audit(ctx: Context) -> list[tuple[str, dict[str, object]]]:
    with ctx.sessions() as s:
        rows = s.execute(
            select(AuditEntry.action, AuditEntry.detail)
            .where(AuditEntry.actor == "guard")
            .order_by(AuditEntry.id)
        ).all()
    return [(a, d) for a, d in rows]


def accepted_once(relay: Relay, emails: Sequence[str]) -> None:
    """Every recipient the relay accepts got exactly one message; the refused got none."""
    got = relay.recorder.by_rcpt()
    assert all(len(v) == 1 for v in got.values())
    assert sorted(got) == sorted(e for e in emails if not e.startswith("hard"))


def test_ten_percent_refused_pauses_with_an_alert_and_a_resume_holds_until_new_answers_cross(
    ctx: Context, relay: Relay, tmp_path: Path, clock: FixedClock
) -> None:
    # 0-199: 10 % refused; 200-399: none; 400-599: one in 7; 600-699: none.
    emails = recipients(700, {range(0, 200): 10, range(400, 600): 7})
    load(ctx, tmp_path, emails)
    fake = FakeNotifications()

    # 100 relayed: under the minimum of 200. 200 relayed, 20 refused: 10 % > 5 %.
    assert send(ctx, relay) is DeliveryState.PAUSED
    assert queued_and_done(ctx) == (500, 200), "paused after the batch that crossed"
    assert len(relay.recorder.received) == 180
    assert post(ctx, fake) >= 1
    (alert,) = alerts(fake)
    assert fake.of_kind("guard")[0].channel == "C0PROMO"
    assert (alert.counted, alert.failed, alert.state) == (200, 20, DeliveryState.PAUSED)
    assert alert.reasons == (("user unknown", 20),)
    assert alert.domains == (("stale.example", 20),)
    assert alert.queued == 500
    trail = guard_audit(ctx)
    assert [a for a, _ in trail] == ["delivery.pause", "guard.alert"]
    assert trail[0][1]["rate"] == 0.1 and trail[1][1]["channel"] == "C0PROMO"
    post(ctx, fake)
    assert len(alerts(fake)) == 1, "an alert is posted once"
    assert guard.check(ctx, 1) is None, "nothing pauses a paused send again"

    clock.advance(timedelta(minutes=1))
    resume_delivery(ctx, ALICE, "promo")
    clock.advance(timedelta(minutes=1))
    # After the Resume: 200-399 are clean; with the old answers, 300 relayed and 20
    # refused (6.7 %) would pause at once; only the new ones count. In 400-599 one in 7
    # is refused: 300 new answers with 14 refused (4.7 %) do not cross, 400 with 28 do.
    assert send(ctx, relay) is DeliveryState.PAUSED
    assert queued_and_done(ctx) == (100, 600)
    post(ctx, fake)
    _first, second = alerts(fake)
    assert (second.counted, second.failed) == (400, 28)
    assert [a for a, _ in guard_audit(ctx)] == ["delivery.pause", "guard.alert"] * 2

    clock.advance(timedelta(minutes=1))
    resume_delivery(ctx, ALICE, "promo")
    clock.advance(timedelta(minutes=1))
    assert send(ctx, relay) is DeliveryState.FINISHED
    assert queued_and_done(ctx) == (0, 700)
    accepted_once(relay, emails)
    post(ctx, fake)
    assert len(alerts(fake)) == 2
    # Both were drawn again for the finished delivery, in place (no button left).
    updated = [said for said in fake.of_kind("guard") if said.update]
    assert {u.view.state for u in updated} == {DeliveryState.FINISHED}  # type: ignore[union-attr]
    assert len({u.ts for u in updated}) == 2


def test_two_percent_refused_sends_to_the_end(ctx: Context, relay: Relay, tmp_path: Path) -> None:
    emails = recipients(600, {range(0, 600): 50})
    load(ctx, tmp_path, emails)
    assert send(ctx, relay) is DeliveryState.FINISHED
    fake = FakeNotifications()
    post(ctx, fake)
    assert alerts(fake) == [] and guard_audit(ctx) == []
    accepted_once(relay, emails)


@pytest.mark.parametrize(
    "guard_yaml", ["  guard: off", "  guard: {rate: 0.2}", "  guard: {minimum: 500, window: 500}"]
)
def test_a_delivery_own_guard_settings(
    ctx: Context, relay: Relay, tmp_path: Path, guard_yaml: str
) -> None:
    emails = recipients(400, {range(0, 400): 10})  # 10 %: the global guard would pause
    load(ctx, tmp_path, emails, guard_yaml)
    assert send(ctx, relay) is DeliveryState.FINISHED
    assert guard_audit(ctx) == []
    accepted_once(relay, emails)


def test_without_a_channel_the_pause_holds_and_nothing_is_posted(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    emails = recipients(300, {range(0, 300): 5})
    csv = tmp_path / "p.csv"
    csv.write_text("email\n" + "".join(f"{e}\n" for e in emails))
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(DELIVERY.replace("  slack_channel: C0PROMO\n", "").replace("GUARD", ""))
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    confirm_send(ctx, ALICE, "promo")
    assert send(ctx, relay) is DeliveryState.PAUSED
    fake = FakeNotifications()
    post(ctx, fake)
    assert alerts(fake) == []
    assert [a for a, _ in guard_audit(ctx)] == ["delivery.pause"]


def test_an_alert_slack_missed_is_posted_by_the_next_reconcile(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    load(ctx, tmp_path, recipients(300, {range(0, 300): 5}))
    assert send(ctx, relay) is DeliveryState.PAUSED
    down = FakeNotifications(fail_next=10)
    post(ctx, down)
    assert alerts(down) == []
    fake = FakeNotifications()
    post(ctx, fake)
    assert len(alerts(fake)) == 1


def test_answers_recorded_while_paused_do_not_count_after_the_resume(
    ctx: Context, relay: Relay, tmp_path: Path, clock: FixedClock
) -> None:
    # 0-199: one in 10 soft-refused (451 every time); 200-399: clean.
    emails = [
        f"soft{i}@busy.example" if i < 200 and i % 10 == 0 else f"u{i}@x.example"
        for i in range(400)
    ]
    load(ctx, tmp_path, emails)
    assert send(ctx, relay) is DeliveryState.PAUSED
    assert queued_and_done(ctx) == (200, 200)
    # While paused, the soft bounces' retries come due and are refused again: 20 more
    # refusals, answered after the guard's pause.
    clock.advance(timedelta(minutes=61))
    assert send(ctx, relay) is DeliveryState.PAUSED
    with ctx.sessions() as s:
        assert s.scalar(select(func.sum(SendingLog.retry_count))) == 20
    clock.advance(timedelta(minutes=1))
    resume_delivery(ctx, ALICE, "promo")
    clock.advance(timedelta(minutes=1))
    # Counting them, the 200 clean answers after the Resume would read 20 of 220 (9 %).
    assert send(ctx, relay) is DeliveryState.FINISHED
    assert [a for a, _ in guard_audit(ctx)] == ["delivery.pause"]


def test_two_senders_that_both_read_a_crossing_window_pause_it_once(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    execution_id = load(ctx, tmp_path, recipients(400, {range(0, 400): 10}))
    batches = iter([False, False, True])  # two batches without the guard, then stop

    async def relay_two_batches() -> None:
        t = SmtpTransport("127.0.0.1", relay.port, pool_size=3, timeout=10.0)
        try:
            await Sender(ctx, t, should_stop=lambda: next(batches)).run(execution_id)
        finally:
            await t.close()

    asyncio.run(relay_two_batches())
    assert queued_and_done(ctx) == (200, 200)
    # Two senders of the execution (two worker slots) check the same window at once.
    barrier = threading.Barrier(2)

    def check() -> guard.Tripped | None:
        barrier.wait()
        return guard.check(ctx, execution_id)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: check(), range(2)))
    assert sorted(r is not None for r in results) == [False, True]
    assert [a for a, _ in guard_audit(ctx)] == ["delivery.pause"]
    fake = FakeNotifications()
    post(ctx, fake)
    assert len(alerts(fake)) == 1
