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
7. open rate and click-through rate are refreshed, hourly per execution;
8. the KPI digest of the latest `DIGEST_CRON` slot is posted, once (`services.digest`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.engine.transports import Transport
from bot.services.deliveries.lifecycle import start_due
from bot.services.deliveries.sending import send_due
from bot.services.digest import DigestReport, run_digest
from bot.services.messages.approval_requests import sync_requests
from bot.services.notifications import Notifications
from bot.services.outcomes.mailbox import MailboxReport, read_feedback_mailbox
from bot.services.outcomes.validity import expire_due, refresh_indicators
from bot.services.recurring.occurrences import OccurrenceRun, run_occurrences


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


async def run_due(
    ctx: Context,
    *,
    transports: Callable[[], Transport],
    notifications: Notifications,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DueReport:
    """Run every step due at `ctx.clock.now()`.

    `transports` makes the transport this run relays through (closed at the end);
    `should_stop` (the process shutting down) ends sending after the batch in flight,
    and what is left is due again at the next start.
    """
    report = DueReport(started=start_due(ctx))
    recurring = run_occurrences(ctx)
    report.occurrences = recurring.occurrences
    report.approvals_expired = recurring.expired_requests
    report.approval_messages = await sync_requests(ctx, notifications)
    transport = transports()
    try:
        sent = await send_due(ctx, transport, on_batch=on_batch, should_stop=should_stop)
    finally:
        await transport.close()
    report.sent, report.retried = sent.sent, sent.retried
    # Bounces are read before the validity check, so that a bounce waiting in the
    # mailbox resolves its log with its own reason rather than "not defined".
    report.mailbox = await asyncio.to_thread(read_feedback_mailbox, ctx)
    report.expired_logs = expire_due(ctx)
    report.indicators_refreshed = refresh_indicators(ctx)
    report.digest = await run_digest(ctx, notifications)  # after the refresh: fresh rates
    return report
