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
4. it settles (`domain.executions.settle`): it starts sending, or, when the delivery
   requests confirmation, an approval request is stored and waits for a decision.

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

from bot.context import Context, Session
from bot.domain.approval import EXPIRED_REASON, RequestState
from bot.domain.executions import ExecutionState, OccurrenceOutcome, settle
from bot.domain.recurrence import approval_deadline, latest_between, next_after, period_key
from bot.domain.schedule import format_duration
from bot.services.deliveries.prepare import ExecutionPreparation, prepare_execution
from bot.store import approvals, audit, deliveries, executions, logs
from bot.store.models import ApprovalRequest, Delivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OccurrenceRun:
    """What one occurrence did."""

    ref: str
    key: str
    occurrence_at: datetime
    outcome: OccurrenceOutcome
    added: int
    to_deliver: int


@dataclass
class RecurringReport:
    occurrences: list[OccurrenceRun] = field(default_factory=list)
    expired_requests: int = 0


def expire_requests(ctx: Context) -> int:
    """Open approval requests past their deadline expire; their occurrence is never sent."""
    now = ctx.clock.now()
    expired = 0
    with ctx.sessions.begin() as s:
        for request_id, execution_id in approvals.past_deadline(s, now):
            request = approvals.get(s, request_id)
            execution = executions.get(s, execution_id)
            delivery = execution.delivery
            reason = _expiry_reason(delivery, request)
            if not approvals.close(s, request_id, RequestState.EXPIRED, (), now, reason):
                continue
            expired += 1
            executions.move(
                s,
                execution_id,
                ExecutionState.PENDING_APPROVAL,
                ExecutionState.EXPIRED,
                finished_at=now,
            )
            not_sent = logs.cancel_unsent(s, now, execution_id, include_claimed=True)
            audit.record(
                s,
                now,
                actor="scheduler",
                action="approval.expired",
                subject_kind="delivery",
                subject_ref=delivery.ref,
                detail={"occurrence": execution.key, "reason": reason, "not_sent": not_sent},
            )
    return expired


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
        active = deliveries.active_recurrences(s)
    due = []
    for delivery_id, cron, tz, cursor in active:
        occurrence = latest_between(cron, tz, cursor, now)
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
        if not deliveries.take_occurrence(s, delivery_id, cursor, occurrence):
            return None
        d = deliveries.reload(s, delivery_id)
        key = period_key(d.aggregation, occurrence, d.recurrence_timezone or "UTC")
        return executions.create_occurrence(s, d.id, key, occurrence, now).id


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
        d = deliveries.reload(s, delivery_id)
        execution = executions.reload(s, execution_id)
        fresh = execution.state is ExecutionState.PREPARING
        settled = settle(
            fresh=fresh,
            failed=prepared is None or prepared.failed,
            to_deliver=prepared.to_deliver if prepared else 0,
            added=prepared.added if prepared else 0,
            request_confirmation=d.request_confirmation,
        )
        if settled.state is not None:
            values = {"lease_until": None, **({"finished_at": now} if settled.ends else {})}
            if not executions.move(
                s, execution_id, ExecutionState.PREPARING, settled.state, **values
            ):
                return None
        if settled.outcome is OccurrenceOutcome.AWAITING_APPROVAL:
            expiry = d.approval_expiry_seconds
            approvals.create(
                s,
                delivery=d,
                execution_id=execution_id,
                occurrence=occurrence,
                expires_at=approval_deadline(
                    d.recurrence_cron or "",
                    d.recurrence_timezone or "UTC",
                    occurrence,
                    timedelta(seconds=expiry) if expiry else None,
                ),
                now=now,
            )
        elif settled.outcome is OccurrenceOutcome.SENDING:
            executions.start(s, now, d, execution_id)
        run = OccurrenceRun(
            d.ref,
            execution.key,
            occurrence,
            settled.outcome,
            prepared.added if prepared else 0,
            prepared.to_deliver if prepared else 0,
        )
        _audit(s, now, run, prepared)
        return run


def _audit(
    session: Session, now: datetime, run: OccurrenceRun, prepared: ExecutionPreparation | None
) -> None:
    detail: dict[str, object] = {
        "occurrence": run.key,
        "occurrence_at": run.occurrence_at.isoformat(),
        "outcome": run.outcome.value,
        "added": run.added,
        "to_deliver": run.to_deliver,
    }
    if run.outcome is OccurrenceOutcome.FAILED:
        detail["errors"] = (
            [e.to_json() for e in prepared.errors]
            if prepared
            else "unexpected error (see the logs)"
        )
    audit.record(
        session,
        now,
        actor="scheduler",
        action="occurrence.run",
        subject_kind="delivery",
        subject_ref=run.ref,
        detail=detail,
    )


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
        stale = executions.stale_preparations(s, now)
    runs = []
    for execution_id, delivery_id, occurrence, lease in stale:
        with ctx.sessions.begin() as s:
            taken = executions.renew_lease(s, execution_id, lease, now)
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


@dataclass(frozen=True)
class Upcoming:
    """The next occurrence of a recurring delivery, and how it will go."""

    at: datetime
    timezone: str
    request_confirmation: bool


def next_occurrence(ctx: Context, ref: str) -> Upcoming | None:
    """When the next occurrence of a recurring delivery runs (None for a one-off)."""
    now = ctx.clock.now()
    with ctx.sessions() as s:
        d = deliveries.get(s, ref)
        if not d.recurrence_cron:
            return None
        tz = d.recurrence_timezone or "UTC"
        after = max(d.recurrence_cursor or now, now)
        return Upcoming(next_after(d.recurrence_cron, tz, after), tz, d.request_confirmation)
