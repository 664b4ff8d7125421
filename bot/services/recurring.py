"""Occurrences of recurring deliveries: the step of the due work that runs them (SPEC 4).

A recurring delivery is confirmed once, like any other (`/confirm-send`, OK): it then
stays `in-progress` while its recurrence is active, `paused` stops its occurrences
and `stopped` ends it for good. Each occurrence gets its own *execution* (its own
logs and KPIs), keyed by the occurrence instant, or by its period when the delivery
aggregates by day, week or month.

At each tick, for each active recurring delivery:

1. the latest occurrence between the delivery's cursor and now is found (only the
   latest: a process that was down runs a missed occurrence once, not once per tick);
2. the cursor is moved onto it with a compare-and-set UPDATE: of two processes, one
   wins, the other does nothing;
3. its execution is created (or found, within an aggregation period) and prepared
   against the audience as it is now (`prepare.prepare_execution`);
4. it starts sending, or, when the delivery requests confirmation, an approval
   request is stored and waits for `bot.services.approvals`.

A process that dies between taking an occurrence and settling it leaves the execution
`preparing` with a lease; once the lease has run out another tick takes the
preparation over (preparing is idempotent: it only adds what is missing), so a crash
delays an occurrence, never loses it.

Approval requests not decided by their deadline (the next occurrence, or the
delivery's `approval_expiry` when sooner) expire here too, before new occurrences
run, and their occurrence is never sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.blocks.approval import EXPIRED_REASON
from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.domain.recurrence import approval_deadline, latest_between, period_key
from bot.domain.schedule import Aggregation, format_duration
from bot.services import audit
from bot.services.executions import ensure_counter
from bot.services.prepare import ExecutionPreparation, prepare_execution
from bot.services.sending import cancel_unsent
from bot.store.models import ApprovalRequest, Delivery, Execution

log = logging.getLogger(__name__)

# How long a process may take to prepare an occurrence before another takes it over.
PREPARE_LEASE = timedelta(minutes=10)


class ExecutionState:
    """States of a recurring delivery's execution (the delivery keeps its own)."""

    PREPARING = "preparing"
    PENDING_APPROVAL = "pending-approval"
    IN_PROGRESS = DeliveryState.IN_PROGRESS.value
    FINISHED = DeliveryState.FINISHED.value
    SKIPPED = "skipped"
    EXPIRED = "expired"
    FAILED = DeliveryState.FAILED.value
    STOPPED = DeliveryState.STOPPED.value


@dataclass(frozen=True)
class OccurrenceRun:
    """What one occurrence did: `outcome` is sending, awaiting-approval, empty or failed."""

    ref: str
    key: str
    occurrence_at: datetime
    outcome: str
    added: int
    to_deliver: int


@dataclass
class RecurringReport:
    occurrences: list[OccurrenceRun] = field(default_factory=list)
    expired_requests: int = 0


def start_execution(session: Session, now: datetime, delivery: Delivery, execution_id: int) -> None:
    """Let the sender take the execution; its validity period starts at its first send.

    A new execution gets a new Deployment message (the previous occurrence's message
    keeps its final figures); a later occurrence of an aggregation period extends the
    validity so its newcomers get the full period too.
    """
    execution = session.get(Execution, execution_id, populate_existing=True)
    assert execution is not None
    validity = now + timedelta(seconds=delivery.validity_seconds)
    if execution.started_at is None:
        execution.started_at = now
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(deployment_ts=None, deployment_channel=None)
            .execution_options(synchronize_session=False)
        )
    if execution.validity_ends_at is None or execution.validity_ends_at < validity:
        execution.validity_ends_at = validity
    execution.finished_at = None
    execution.state = ExecutionState.IN_PROGRESS


def expire_requests(ctx: Context) -> int:
    """Open approval requests past their deadline expire; their occurrence is never sent."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        rows = s.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.state == "open", ApprovalRequest.expires_at <= now)
            .values(
                state="expired",
                decided_at=now,
                version=ApprovalRequest.version + 1,
                updated_at=now,
            )
            .returning(ApprovalRequest.id, ApprovalRequest.execution_id)
            .execution_options(synchronize_session=False)
        ).all()
        for request_id, execution_id in rows:
            request = s.get(ApprovalRequest, request_id, populate_existing=True)
            execution = s.get(Execution, execution_id)
            assert request is not None and execution is not None
            delivery = execution.delivery
            request.reason = _expiry_reason(delivery, request)
            execution.state = ExecutionState.EXPIRED
            execution.finished_at = now
            cancelled = cancel_unsent(s, now, execution_id, include_claimed=True, reason="expired")
            audit.record(
                s,
                ctx.clock,
                actor="scheduler",
                action="approval.expired",
                subject_kind="delivery",
                subject_ref=delivery.ref,
                detail={
                    "occurrence": execution.key,
                    "reason": request.reason,
                    "not_sent": cancelled,
                },
            )
    return len(rows)


def _expiry_reason(delivery: Delivery, request: ApprovalRequest) -> str:
    if delivery.approval_expiry_seconds:
        expiry = timedelta(seconds=delivery.approval_expiry_seconds)
        if request.occurrence_at + expiry == request.expires_at:
            return f"not decided within {format_duration(expiry)}"
    return EXPIRED_REASON


def _due(ctx: Context) -> list[tuple[int, datetime, datetime]]:
    """(delivery id, cursor, occurrence) of every active recurring delivery with one due."""
    now = ctx.clock.now()
    with ctx.sessions() as s:
        rows = s.execute(
            select(
                Delivery.id,
                Delivery.recurrence_cron,
                Delivery.recurrence_timezone,
                Delivery.recurrence_cursor,
            ).where(
                Delivery.recurrence_cron.is_not(None),
                Delivery.state == DeliveryState.IN_PROGRESS.value,
                Delivery.recurrence_cursor.is_not(None),
            )
        ).all()
    due = []
    for delivery_id, cron, tz, cursor in rows:
        occurrence = latest_between(cron, tz or "UTC", cursor, now)
        if occurrence is not None:
            due.append((delivery_id, cursor, occurrence))
    return due


def _claim(ctx: Context, delivery_id: int, cursor: datetime, occurrence: datetime) -> int | None:
    """Take the occurrence (compare-and-set on the cursor) and create its execution.

    Returns the execution id, or None when another process took the occurrence first.
    Both happen in one transaction: an occurrence is never taken without its execution.
    """
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        taken = s.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.state == DeliveryState.IN_PROGRESS.value,
                Delivery.recurrence_cursor == cursor,
            )
            .values(recurrence_cursor=occurrence)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            return None
        d = s.get(Delivery, delivery_id, populate_existing=True)
        assert d is not None
        key = period_key(Aggregation(d.aggregation), occurrence, d.recurrence_timezone or "UTC")
        execution = s.scalar(
            select(Execution).where(Execution.delivery_id == d.id, Execution.key == key)
        )
        if execution is None:
            execution = Execution(
                delivery_id=d.id,
                key=key,
                occurrence_at=occurrence,
                state=ExecutionState.PREPARING,
                lease_until=now + PREPARE_LEASE,
                created_at=now,
            )
            s.add(execution)
            s.flush()
        ensure_counter(s, execution.id, now)
        return execution.id


def _settle(
    ctx: Context,
    delivery_id: int,
    execution_id: int,
    occurrence: datetime,
    prepared: ExecutionPreparation | None,
) -> OccurrenceRun | None:
    """After preparation: send, wait for approval, or record why not.

    A new execution leaves `preparing` by a compare-and-set, so of a slow process and
    the one that took its preparation over, one settles the occurrence.
    """
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        d = s.get(Delivery, delivery_id)
        execution = s.get(Execution, execution_id)
        assert d is not None and execution is not None
        fresh = execution.state == ExecutionState.PREPARING
        if prepared is None or prepared.failed:
            outcome, target = "failed", ExecutionState.FAILED
        elif fresh and prepared.to_deliver == 0:
            outcome, target = "empty", ExecutionState.FINISHED
        elif fresh and d.request_confirmation:
            outcome, target = "awaiting-approval", ExecutionState.PENDING_APPROVAL
        elif fresh or prepared.added:
            outcome, target = "sending", ExecutionState.IN_PROGRESS
        else:
            outcome, target = "nobody new", execution.state
        if fresh:
            settled = s.execute(
                update(Execution)
                .where(Execution.id == execution_id, Execution.state == ExecutionState.PREPARING)
                .values(state=target, lease_until=None)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not settled:
                return None
            s.refresh(execution)
        if outcome in ("failed", "empty") and fresh:
            execution.finished_at = now
        elif outcome == "awaiting-approval":
            expiry = (
                timedelta(seconds=d.approval_expiry_seconds) if d.approval_expiry_seconds else None
            )
            s.add(
                ApprovalRequest(
                    execution_id=execution.id,
                    delivery_id=d.id,
                    occurrence_at=occurrence,
                    required=max(d.approvals_required, 1),
                    state="open",
                    expires_at=approval_deadline(
                        d.recurrence_cron or "", d.recurrence_timezone or "UTC", occurrence, expiry
                    ),
                    decided_by=[],
                    channel=d.slack_channel,
                    version=1,
                    synced_version=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        elif outcome == "sending":
            start_execution(s, now, d, execution.id)
        added = prepared.added if prepared else 0
        to_deliver = prepared.to_deliver if prepared else 0
        detail: dict[str, object] = {
            "occurrence": execution.key,
            "occurrence_at": occurrence.isoformat(),
            "outcome": outcome,
            "added": added,
            "to_deliver": to_deliver,
        }
        if outcome == "failed":
            detail["errors"] = prepared.errors if prepared else "unexpected error (see the logs)"
        audit.record(
            s,
            ctx.clock,
            actor="scheduler",
            action="occurrence.run",
            subject_kind="delivery",
            subject_ref=d.ref,
            detail=detail,
        )
        return OccurrenceRun(d.ref, execution.key, occurrence, outcome, added, to_deliver)


def _prepare(ctx: Context, execution_id: int) -> ExecutionPreparation | None:
    try:
        return prepare_execution(ctx, execution_id)
    except Exception:
        log.exception("preparing execution %s failed", execution_id)
        return None


def run_occurrence(
    ctx: Context, delivery_id: int, cursor: datetime, occurrence: datetime
) -> OccurrenceRun | None:
    """Run one occurrence, if this process wins it; None when another one did."""
    execution_id = _claim(ctx, delivery_id, cursor, occurrence)
    if execution_id is None:
        return None
    return _settle(ctx, delivery_id, execution_id, occurrence, _prepare(ctx, execution_id))


def take_over_preparations(ctx: Context) -> list[OccurrenceRun]:
    """Finish occurrences whose preparing process died (its lease ran out)."""
    now = ctx.clock.now()
    with ctx.sessions() as s:
        stale = s.execute(
            select(
                Execution.id, Execution.delivery_id, Execution.occurrence_at, Execution.lease_until
            )
            .join(Delivery, Delivery.id == Execution.delivery_id)
            .where(
                Execution.state == ExecutionState.PREPARING,
                Execution.lease_until <= now,
                Delivery.state == DeliveryState.IN_PROGRESS.value,
            )
        ).all()
    runs = []
    for execution_id, delivery_id, occurrence, lease in stale:
        with ctx.sessions.begin() as s:
            taken = s.execute(
                update(Execution)
                .where(
                    Execution.id == execution_id,
                    Execution.state == ExecutionState.PREPARING,
                    Execution.lease_until == lease,
                )
                .values(lease_until=now + PREPARE_LEASE)
                .execution_options(synchronize_session=False)
            ).rowcount
        if not taken:
            continue
        run = _settle(ctx, delivery_id, execution_id, occurrence, _prepare(ctx, execution_id))
        if run is not None:
            runs.append(run)
    return runs


def run_occurrences(ctx: Context) -> RecurringReport:
    """The recurring step of the due work: expire stale requests, then run what is due."""
    report = RecurringReport(expired_requests=expire_requests(ctx))
    report.occurrences += take_over_preparations(ctx)
    for delivery_id, cursor, occurrence in _due(ctx):
        run = run_occurrence(ctx, delivery_id, cursor, occurrence)
        if run is not None:
            report.occurrences.append(run)
    return report


def next_occurrence(ctx: Context, ref: str) -> datetime | None:
    """When the next occurrence of a recurring delivery runs (None for a one-off)."""
    from bot.domain.recurrence import next_after
    from bot.services.reporting import get_delivery

    with ctx.sessions() as s:
        d = get_delivery(s, ref)
        if not d.recurrence_cron:
            return None
        after = max(d.recurrence_cursor or ctx.clock.now(), ctx.clock.now())
        return next_after(d.recurrence_cron, d.recurrence_timezone or "UTC", after)
