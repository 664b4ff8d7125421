"""Everything scheduled that is due at an instant: what `jobs run-due` and the tick run.

The database decides what is due; running the same instant twice does nothing more
the second time, and an instant missed while the process was down is caught up once:

1. `at` deliveries confirmed and waiting whose contact date has come start;
2. recurring deliveries: approval requests past their deadline expire, then the
   latest occurrence due of each one runs (`services.recurring.occurrences`), and
   approval requests are posted or updated through the Notifications port;
3. in-progress executions send what is still queued;
4. soft bounces whose retry is due are sent again (inside the validity period);
5. bounce messages waiting in the feedback mailbox, if one is configured, are
   ingested (`services.outcomes.mailbox`), before the expiry below, so a late
   bounce resolves its log with its own reason;
6. executions whose validity period has ended resolve every open log (SPEC section 6);
7. open rate and click-through rate are recounted once per hour boundary (and per
   digest slot, `domain.digest.rates_due_since`), before step 8 builds the digest;
8. the KPI digest of the latest `DIGEST_CRON` slot is posted, once (`services.digest`);
9. Deployment messages that Slack missed (it was down when the state changed) are
   posted again from the database (`DeploymentFollower.reconcile`).

Each step runs on its own: one that fails is logged with its error and reported in
`failures`, and the steps after it still run (a bounce mailbox that cannot be read
must not stop the expiry or the digest). Inside the sending step each execution is
isolated the same way (`services.deliveries.sending`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.engine.transports import Transport
from bot.services.deliveries.lifecycle import start_due
from bot.services.deliveries.sending import SendReport, send_due
from bot.services.digest import DigestReport, run_digest
from bot.services.messages.approval_requests import sync_requests
from bot.services.messages.deployment import DeploymentFollower
from bot.services.notifications import Notifications
from bot.services.outcomes.mailbox import MailboxReport, read_feedback_mailbox
from bot.services.outcomes.validity import expire_due, refresh_indicators
from bot.services.progress import Progress
from bot.services.recurring.occurrences import OccurrenceRun, RecurringReport, run_occurrences

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class DueReport:
    started: list[str] = field(default_factory=list)
    occurrences: list[OccurrenceRun] = field(default_factory=list)
    approvals_expired: int = 0
    approval_messages: int = 0  # approval requests posted or updated in Slack
    # ref (one-off) or "ref@key" (an occurrence) -> its state after sending
    sent: dict[str, DeliveryState] = field(default_factory=dict)
    retried: int = 0
    expired_logs: int = 0
    indicators_refreshed: int = 0
    digest: DigestReport | None = None
    mailbox: MailboxReport = field(default_factory=MailboxReport)
    deployments_reposted: int = 0
    # ref or "ref@key" -> why it could not be sent (its execution is failed)
    failed: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # steps that failed, with their error
    deferred: list[str] = field(default_factory=list)  # sends handed to the workers
    relay_unavailable: str | None = None  # sending stopped: the relay stayed down


async def run_due(
    ctx: Context,
    *,
    transports: Callable[[], Transport],
    notifications: Notifications,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sending: Callable[[], Awaitable[SendReport]] | None = None,
    relay_wait: float | None = None,
    progress: Progress | None = None,
) -> DueReport:
    """Run every step due at `ctx.clock.now()`.

    `transports` makes the transport this run relays through (closed at the end);
    `should_stop` (the process shutting down) ends sending after the batch in flight,
    and what is left is due again at the next start. `sending` replaces the sending
    step: the PostgreSQL mode defers it to the workers (`bot.jobs.queue`). `relay_wait`
    bounds the retries of one relay outage (`jobs run-due`); the rest waits for the next
    round. `progress` is told how far the sending here is (`jobs run-due`'s bar).
    """
    report = DueReport()

    async def step(name: str, work: Callable[[], Awaitable[T]], default: T) -> T:
        try:
            return await work()
        except Exception as exc:
            log.exception("due work: %s failed; the other steps go on", name)
            report.failures.append(f"{name}: {type(exc).__name__}: {exc}"[:500])
            return default

    def sync(fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
        async def run() -> T:
            return fn()

        return run

    report.started = await step("start", sync(lambda: start_due(ctx)), [])
    recurring = await step("recurring", sync(lambda: run_occurrences(ctx)), RecurringReport())
    report.occurrences = recurring.occurrences
    report.approvals_expired = recurring.expired_requests
    report.approval_messages = await step(
        "approval requests", lambda: sync_requests(ctx, notifications), 0
    )

    async def send_here() -> SendReport:
        transport = transports()
        try:
            return await send_due(
                ctx,
                transport,
                on_batch=on_batch,
                should_stop=should_stop,
                relay_wait=relay_wait,
                progress=progress,
            )
        finally:
            await transport.close()

    sent = await step("sending", sending or send_here, SendReport())
    report.sent, report.retried, report.failed = sent.sent, sent.retried, sent.failed
    report.deferred, report.relay_unavailable = sent.deferred, sent.relay_unavailable
    # Bounces are read before the validity check, so that a bounce waiting in the
    # mailbox resolves its log with its own reason rather than "not defined".
    report.mailbox = await step(
        "mailbox", lambda: asyncio.to_thread(read_feedback_mailbox, ctx), MailboxReport()
    )
    report.expired_logs = await step("expiry", sync(lambda: expire_due(ctx)), 0)
    report.indicators_refreshed = await step("indicators", sync(lambda: refresh_indicators(ctx)), 0)
    # After the refresh: fresh rates.
    report.digest = await step("digest", lambda: run_digest(ctx, notifications), None)
    report.deployments_reposted = await step(
        "deployment messages", lambda: DeploymentFollower(ctx, notifications).reconcile(), 0
    )
    return report
