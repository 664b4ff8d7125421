"""The sender against a real SMTP server on loopback, on SQLite and PostgreSQL.

Deliveries are imported and prepared through the real ctx, confirmed, and sent
through the pooled SMTP transport to an aiosmtpd relay that records what it accepts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from scenario import CLI, as_user, detail_json
from smtp_relay import Relay, free_port
from sqlalchemy import func, select, update

from bot.bootstrap import Root
from bot.clock import FixedClock
from bot.context import Context
from bot.domain.errors import DomainError, NotFound, PermissionDenied
from bot.domain.lifecycle import DeliveryState
from bot.domain.roles import Role
from bot.engine.claims import LocalClaim
from bot.engine.sender import Backoff, Sender
from bot.engine.tokens import TokenSigner
from bot.engine.transports import Envelope, Fence, OnResult, RelayResult
from bot.engine.transports.smtp import SmtpTransport
from bot.services.deliveries.lifecycle import (
    confirm_send,
    pause_delivery,
    resume_delivery,
    stop_delivery,
)
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.deliveries.views import (
    RATE_WINDOW,
    compute_stats,
    marketing_history,
    read_deployment,
)
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.store.models import Execution, KpiCounter, Profile, SendingLog

START = [Role.START_DELIVERIES]

DELIVERY = """
- ref: promo
  name: Promo
  audience: buyers
  from: Shop <news@shop.example>
  subject: "{{ first_name }}, a deal for you"
  html: '<p>Hi {{ first_name }}</p><a href="https://shop.example/deal?u={{ first_name }}">Deal</a>'
  text: "Hi {{ first_name }}"
  efs: EFS
"""


def load(ctx: Context, tmp_path: Path, emails: Sequence[str], efs: bool = False) -> int:
    """Import, prepare and confirm `promo` for `emails`; return its execution id."""
    csv = tmp_path / "p.csv"
    csv.write_text("email,first_name\n" + "".join(f"{e},Name{i}\n" for i, e in enumerate(emails)))
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(DELIVERY.replace("EFS", "true" if efs else "false"))
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    confirm_send(ctx, as_user("U0ALICE", START), "promo")
    with ctx.sessions() as s:
        return s.scalar(select(Execution.id))


def transport(relay: Relay) -> SmtpTransport:
    return SmtpTransport(
        "127.0.0.1", relay.port, pool_size=3, timeout=10.0, local_hostname="gl.test"
    )


def send(ctx: Context, t, execution_id: int, **kw) -> DeliveryState:  # type: ignore[no-untyped-def]
    async def go() -> DeliveryState:
        try:
            return await Sender(ctx, t, **kw).run(execution_id)
        finally:
            await t.close()

    return asyncio.run(go())


def statuses(ctx: Context) -> dict[str, str]:
    with ctx.sessions() as s:
        return dict(s.execute(select(SendingLog.email, SendingLog.status)).all())


def test_every_recipient_once_personalised_with_headers_and_tracked_links(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    emails = [f"user{i}@x.example" for i in range(23)]
    eid = load(ctx, tmp_path, emails)
    assert send(ctx, transport(relay), eid, batch_size=5) is DeliveryState.FINISHED

    got = relay.recorder.by_rcpt()
    assert sorted(got) == sorted(emails)
    assert all(len(v) == 1 for v in got.values())
    signer = TokenSigner(ctx.settings.tracking_secret.get_secret_value())
    with ctx.sessions() as s:
        logs = {lg.email: lg for lg in s.scalars(select(SendingLog))}
    for i, e in enumerate(emails):
        msg = message_from_bytes(got[e][0].data, policy=policy.default)
        assert msg["Subject"] == f"Name{i}, a deal for you"
        assert msg["X-Greenlight-Log"] == str(logs[e].id)
        assert msg["Message-ID"] == logs[e].message_id
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = msg.get_body(("html",)).get_content()
        token = html.split("/t/c/", 1)[1].split('"', 1)[0]
        click = signer.read_click(token)
        assert click is not None and click.url == f"https://shop.example/deal?u=Name{i}"
        assert "/t/o/" in html
    detail = detail_json(ctx, "promo")
    assert detail["state"] == "finished"
    assert detail["kpis"]["sent"] == 23 and detail["kpis"]["delivered_pct"] == 100.0


def test_hard_and_soft_answers_end_in_the_right_logs_kpis_and_quarantine(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    emails = ["ok1@x.example", "hard1@x.example", "soft1@x.example", "ok2@x.example"]
    eid = load(ctx, tmp_path, emails, efs=True)
    send(ctx, transport(relay), eid)
    assert statuses(ctx) == {
        "ok1@x.example": "pending",
        "hard1@x.example": "failed",
        "soft1@x.example": "failed",
        "ok2@x.example": "pending",
    }
    with ctx.sessions() as s:
        soft = s.scalar(select(SendingLog).where(SendingLog.email == "soft1@x.example"))
        assert soft.failure_type == "soft" and soft.next_retry_at is not None
        hard = s.scalar(select(SendingLog).where(SendingLog.email == "hard1@x.example"))
        assert (hard.failure_type, hard.failure_reason, hard.smtp_status) == (
            "hard",
            "user unknown",
            "550",
        )
        status = dict(s.execute(select(Profile.email, Profile.email_status)).all())
    assert status["hard1@x.example"] == "quarantine"
    assert status["soft1@x.example"] == "erroneous"
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["sent"], k["delivered_pct"], k["bounces_errors_pct"]) == (4, 0.0, 50.0)


def test_relay_down_then_back_loses_nothing_and_sends_nothing_twice(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    emails = [f"u{i}@x.example" for i in range(12)]
    eid = load(ctx, tmp_path, emails)
    relay.stop()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            relay.start()

    state = send(ctx, transport(relay), eid, batch_size=4, sleep=sleep)
    assert state is DeliveryState.FINISHED
    assert waits == [1.0, 2.0], "backs off, doubling"
    got = relay.recorder.by_rcpt()
    assert sorted(got) == sorted(emails) and all(len(v) == 1 for v in got.values())
    assert set(statuses(ctx).values()) == {"sent"}


class Steering:
    """A transport wrapper that runs an action after its n-th batch (a click mid-send)."""

    def __init__(self, inner: SmtpTransport, after: int, action) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.after, self.action, self.batches = inner, after, action, 0

    async def send(
        self,
        batch: Sequence[Envelope],
        fence: Fence | None = None,
        on_result: OnResult | None = None,
    ) -> list[RelayResult]:
        results = await self.inner.send(batch, fence, on_result)
        self.batches += 1
        if self.batches == self.after:
            self.action()
        return results

    async def close(self) -> None:
        await self.inner.close()


def test_pause_after_the_batch_in_flight_then_resume_from_where_it_stopped(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    emails = [f"u{i}@x.example" for i in range(20)]
    eid = load(ctx, tmp_path, emails)
    pausing = Steering(
        transport(relay), 2, lambda: pause_delivery(ctx, as_user("U0BOB", START), "promo")
    )
    assert send(ctx, pausing, eid, batch_size=5) is DeliveryState.PAUSED
    assert len(relay.recorder.received) == 10
    assert list(statuses(ctx).values()).count("queued") == 10
    progress = read_deployment(ctx, "promo").progress
    assert progress is not None
    assert (progress.state, progress.relayed, progress.to_deliver) == ("paused", 10, 20)
    window = RATE_WINDOW.total_seconds()
    assert progress.rate_per_s == round(10 / window, 1), "10 relayed in the rate window"

    resume_delivery(ctx, as_user("U0BOB", START), "promo")
    assert send(ctx, transport(relay), eid, batch_size=5) is DeliveryState.FINISHED
    got = relay.recorder.by_rcpt()
    assert sorted(got) == sorted(emails) and all(len(v) == 1 for v in got.values())


def test_stop_never_sends_the_rest(ctx: Context, relay: Relay, tmp_path: Path) -> None:
    emails = [f"u{i}@x.example" for i in range(20)]
    eid = load(ctx, tmp_path, emails)
    stopping = Steering(
        transport(relay), 1, lambda: stop_delivery(ctx, as_user("U0BOB", START), "promo")
    )
    assert send(ctx, stopping, eid, batch_size=5) is DeliveryState.STOPPED
    assert len(relay.recorder.received) == 5
    values = list(statuses(ctx).values())
    assert (values.count("sent"), values.count("ignored")) == (5, 15)
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["sent"], k["delivered_pct"]) == (5, 100.0)


def test_confirm_is_refused_without_the_role_and_only_once(ctx: Context, tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("email\na@x.example\n")
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(DELIVERY.replace("EFS", "false"))
    import_deliveries(ctx, CLI, yml)
    with pytest.raises(DomainError, match="not prepared yet"):
        confirm_send(ctx, as_user("U0ALICE", START), "promo")
    prepare_delivery(ctx, CLI, "promo")
    with pytest.raises(PermissionDenied, match="do not allow you to confirm a delivery"):
        confirm_send(ctx, as_user("U0EVE", [Role.PREPARE_DELIVERIES]), "promo")
    confirm_send(ctx, as_user("U0ALICE", START), "promo")
    with pytest.raises(DomainError, match="already confirmed"):
        confirm_send(ctx, as_user("U0ALICE", START), "promo")
    d = detail_json(ctx, "promo")
    assert (d["state"], d["confirmed_by"]) == ("in-progress", "U0ALICE")


def test_claims_left_by_a_dead_sender_are_sent_on_the_next_run(
    root: Root, ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    emails = [f"u{i}@x.example" for i in range(6)]
    eid = load(ctx, tmp_path, emails)
    # A sender that claimed a batch and died before relaying it.
    claimed = Sender(ctx, transport(relay), claim=LocalClaim("local.dead"), batch_size=4)._claim(
        eid
    )
    assert len(claimed) == 4
    with root.send_lock(wait=False):  # the next process to send takes the lock
        assert send(ctx, transport(relay), eid, backoff=Backoff()) is DeliveryState.FINISHED
    got = relay.recorder.by_rcpt()
    assert sorted(got) == sorted(emails) and all(len(v) == 1 for v in got.values())


def test_compute_stats_equals_live_counters_and_history_lists_the_message(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    eid = load(ctx, tmp_path, ["ok@x.example", "hard1@x.example", "soft1@x.example"])
    send(ctx, transport(relay), eid)
    live = detail_json(ctx, "promo")
    recomputed = compute_stats(ctx, CLI, "promo").to_json()
    assert (recomputed["kpis"], recomputed["logs"]) == (live["kpis"], live["logs"])
    with ctx.sessions.begin() as s:  # counters drift (as after a lost update)...
        s.execute(update(KpiCounter).values(sent=0, failed=0))
    assert detail_json(ctx, "promo")["kpis"] != live["kpis"]
    assert compute_stats(ctx, CLI, "promo").to_json()["kpis"] == live["kpis"]  # ...and heal

    [row] = marketing_history(ctx, CLI, "HARD1@x.example")
    assert (row.ref, row.status, row.failure_reason) == ("promo", "failed", "user unknown")
    assert (row.opens, row.clicks) == (0, 0)
    with pytest.raises(NotFound):
        marketing_history(ctx, CLI, "nobody@x.example")


def test_one_poisoned_recipient_and_one_closing_domain_stall_nothing(
    ctx: Context, relay: Relay, tmp_path: Path, clock: FixedClock
) -> None:
    """Before: both were taken for a relay outage, the batch retried every 60 s and the
    delivery stalled. Now each is its recipient's temporary failure, retried as such."""
    emails = [f"user{i}@x.example" for i in range(300)]
    emails[17] = "poison17@x.example"
    emails[203] = "closing203@x.example"
    eid = load(ctx, tmp_path, emails)
    assert send(ctx, transport(relay), eid, batch_size=50) is DeliveryState.FINISHED
    received = relay.recorder.by_rcpt()
    assert len(received) == 298 and all(len(v) == 1 for v in received.values())
    assert relay.recorder.transmissions == {"poison17@x.example": 2}
    with ctx.sessions() as s:
        soft = dict(
            s.execute(
                select(SendingLog.email, SendingLog.next_retry_at).where(
                    SendingLog.failure_type == "soft"
                )
            ).all()
        )
    assert set(soft) == {"poison17@x.example", "closing203@x.example"}
    assert all(at is not None for at in soft.values()), "retried later, as any soft bounce"

    # Each retry transmits the poisoned message at most twice more; retries are bounded.
    for _ in range(ctx.settings.max_retries + 1):
        clock.advance(timedelta(minutes=ctx.settings.retry_interval_minutes + 1))

        async def retry() -> int:
            t = transport(relay)
            try:
                return await Sender(ctx, t).retry(eid)
            finally:
                await t.close()

        asyncio.run(retry())
    assert relay.recorder.transmissions["poison17@x.example"] == 2 * (1 + ctx.settings.max_retries)
    with ctx.sessions() as s:
        final = s.scalar(select(SendingLog.final).where(SendingLog.email == "poison17@x.example"))
    assert final is True


def test_a_stop_during_a_relay_back_off_does_not_wait_it_out(ctx: Context, tmp_path: Path) -> None:
    eid = load(ctx, tmp_path, [f"user{i}@x.example" for i in range(5)])
    down = SmtpTransport("127.0.0.1", free_port(), timeout=5.0, local_hostname="gl.test")
    asked: list[float] = []
    cut_short: list[bool] = []
    stopping = False

    async def sleep(seconds: float) -> None:  # a back-off that would last its whole length
        nonlocal stopping
        asked.append(seconds)
        stopping = True  # the shutdown comes during the wait
        try:
            await asyncio.Future()  # never done by itself
        except asyncio.CancelledError:
            cut_short.append(True)
            raise

    state = send(
        ctx, down, eid, backoff=Backoff(first=30.0), sleep=sleep, should_stop=lambda: stopping
    )
    assert state is DeliveryState.IN_PROGRESS, "left for the next start"
    assert asked == [30.0] and cut_short == [True], "the 30 s back-off was cut short"
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).where(SendingLog.claim_token.is_not(None))) == 0
