"""Everything scheduled that is due at an instant: what `jobs run-due` and the tick run.

The database decides what is due; running the same instant twice does nothing more
the second time, and an instant missed while the process was down is caught up once:

1. `at` deliveries confirmed and waiting whose contact date has come start;
2. recurring deliveries: approval requests past their deadline expire, then the
   latest occurrence due of each one runs (bot.services.recurring), and approval
   requests are posted or updated in Slack when a client is given;
3. in-progress executions send what is still queued;
4. soft bounces whose retry is due are sent again (inside the validity period);
5. bounce messages waiting in the feedback mailbox, if one is configured, are
   ingested (`bot.services.feedback_mailbox`), before the expiry below, so a late
   bounce resolves its log with its own reason;
6. executions whose validity period has ended resolve every open log (SPEC section 6);
7. open rate and click-through rate are refreshed, hourly per execution;
8. the KPI digest of the latest `DIGEST_CRON` slot is posted, once (bot.services.digest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select, update

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import Event
from bot.engine.sender import Sender
from bot.engine.transports import Transport, make_transport
from bot.services.approvals import sync_messages
from bot.services.digest import DigestReport, run_digest
from bot.services.feedback_mailbox import MailboxReport, read_feedback_mailbox
from bot.services.outcomes import LogEvent, apply_log_events
from bot.services.recurring import OccurrenceRun, run_occurrences
from bot.services.sending import start_delivery
from bot.services.stats import tracked_counts
from bot.store.models import Delivery, Execution, KpiCounter, SendingLog

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

CHUNK = 1000


@dataclass
class DueReport:
    started: list[str] = field(default_factory=list)
    occurrences: list[OccurrenceRun] = field(default_factory=list)
    approvals_expired: int = 0
    approval_messages: int = 0  # approval requests posted or updated in Slack
    # ref (one-off) or "ref@key" (an occurrence) -> its state after sending
    sent: dict[str, str] = field(default_factory=dict)
    retried: int = 0
    expired_logs: int = 0
    indicators_refreshed: int = 0
    digest: DigestReport | None = None
    mailbox: MailboxReport = field(default_factory=MailboxReport)


def start_due(ctx: Context) -> list[str]:
    """Start `at` deliveries whose date has come (also dates missed while down)."""
    now = ctx.clock.now()
    with ctx.sessions() as s:
        refs = list(
            s.scalars(
                select(Delivery.ref).where(
                    Delivery.state == DeliveryState.START_PENDING.value,
                    Delivery.scheduled_at <= now,
                )
            )
        )
    started = []
    for ref in refs:
        try:
            start_delivery(ctx, ref, actor="scheduler")
            started.append(ref)
        except DomainError:
            continue  # another process started it first
    return started


def expire_due(ctx: Context) -> int:
    """Resolve the open logs of executions whose validity period has ended."""
    now = ctx.clock.now()
    total = 0
    while True:
        with ctx.sessions.begin() as s:
            ids = list(
                s.scalars(
                    select(SendingLog.id)
                    .join(Execution, Execution.id == SendingLog.execution_id)
                    .where(
                        Execution.validity_ends_at <= now,
                        SendingLog.final.is_(False),
                        SendingLog.failure_type.is_distinct_from("hard"),
                        SendingLog.claim_token.is_(None),
                    )
                    .limit(CHUNK)
                )
            )
            if not ids:
                return total
            apply_log_events(
                s, now, [LogEvent(i, Event.EXPIRED, reason="not defined") for i in ids]
            )
            total += len(ids)


INDICATOR_PERIOD = timedelta(hours=1)


def refresh_indicators(ctx: Context) -> int:
    """The hourly job: recount unique openers and clickers of executions still in validity.

    Each execution is refreshed at most once an hour (its `rates_refreshed_at`), so a
    tick every few seconds costs one indexed query when nothing is due.
    """
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        due = list(
            s.scalars(
                select(KpiCounter.execution_id)
                .join(Execution, Execution.id == KpiCounter.execution_id)
                .where(
                    Execution.started_at.is_not(None),
                    Execution.validity_ends_at > now - INDICATOR_PERIOD,
                    (KpiCounter.rates_refreshed_at.is_(None))
                    | (KpiCounter.rates_refreshed_at <= now - INDICATOR_PERIOD),
                )
                .with_for_update(skip_locked=True)
            )
        )
        for execution_id in due:
            openers, clickers = tracked_counts(s, execution_id)
            s.execute(
                update(KpiCounter)
                .where(KpiCounter.execution_id == execution_id)
                .values(
                    unique_opens=openers,
                    unique_clicks=clickers,
                    rates_refreshed_at=now,
                )
            )
    return len(due)


async def run_due(
    ctx: Context,
    transport_factory: Callable[[], Transport] | None = None,
    on_batch: Callable[[int], None] | None = None,
    slack: AsyncWebClient | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DueReport:
    """Run every step due at `ctx.clock.now()`.

    `should_stop` (the sender process shutting down) ends sending after the batch in
    flight; what is left is due again at the next start.

    `slack` is the Web API client for the steps that post to Slack (approval requests,
    the digest); None when Slack is not connected, and those steps then wait.
    """
    report = DueReport(started=start_due(ctx))
    recurring = run_occurrences(ctx)
    report.occurrences = recurring.occurrences
    report.approvals_expired = recurring.expired_requests
    report.approval_messages = await sync_messages(ctx, slack)
    transport = (transport_factory or (lambda: make_transport(ctx.settings)))()
    try:
        sender = Sender(ctx, transport, on_batch=on_batch, should_stop=should_stop)
        with ctx.sessions() as s:
            sending = s.execute(
                select(Execution.id, Delivery.ref, Execution.key)
                .join(Delivery, Delivery.id == Execution.delivery_id)
                .where(
                    Delivery.state == DeliveryState.IN_PROGRESS.value,
                    or_(
                        and_(Delivery.recurrence_cron.is_(None), Execution.key == "main"),
                        and_(
                            Delivery.recurrence_cron.is_not(None),
                            Execution.key != "main",
                            Execution.state == DeliveryState.IN_PROGRESS.value,
                        ),
                    ),
                )
                .order_by(Execution.id)
            ).all()
            retrying = s.execute(
                select(Execution.id)
                .join(SendingLog, SendingLog.execution_id == Execution.id)
                .where(
                    SendingLog.failure_type == "soft",
                    SendingLog.final.is_(False),
                    SendingLog.next_retry_at <= ctx.clock.now(),
                )
                .distinct()
            ).all()
        for execution_id, ref, key in sending:
            name = ref if key == "main" else f"{ref}@{key}"
            report.sent[name] = (await sender.run(execution_id)).value
        for (execution_id,) in retrying:
            report.retried += await sender.retry(execution_id)
    finally:
        await transport.close()
    # Bounces are read before the validity check, so that a bounce waiting in the
    # mailbox resolves its log with its own reason rather than "not defined".
    report.mailbox = await asyncio.to_thread(read_feedback_mailbox, ctx)
    report.expired_logs = expire_due(ctx)
    report.indicators_refreshed = refresh_indicators(ctx)
    report.digest = await run_digest(ctx, slack)  # after the refresh: fresh rates
    return report
