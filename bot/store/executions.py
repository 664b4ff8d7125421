"""Executions: the unit sending logs and KPI counters hang off (bot.domain.executions).

A one-off delivery's only execution, keyed MAIN_KEY, is created the first time
something needs it (its preparation, in practice). Recurring executions, one per
occurrence or aggregation period, are created when their occurrence is taken. States
change by compare-and-set, as deliveries' do.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from bot.domain.errors import NotFound
from bot.domain.executions import MAIN_KEY, PREPARE_LEASE, ExecutionState
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import FailureType, LogStatus
from bot.domain.schedule import ScheduleMode
from bot.store import deliveries, logs
from bot.store.db import affected
from bot.store.models import Delivery, Execution, KpiCounter, SendingLog


def get(session: Session, execution_id: int) -> Execution:
    execution = session.get(Execution, execution_id)
    if execution is None:
        raise NotFound(f"no execution {execution_id}")
    return execution


def reload(session: Session, execution_id: int) -> Execution:
    execution = session.get(Execution, execution_id, populate_existing=True)
    if execution is None:
        raise NotFound(f"no execution {execution_id}")
    return execution


def of_delivery(session: Session, delivery_id: int) -> list[Execution]:
    return list(
        session.scalars(
            select(Execution).where(Execution.delivery_id == delivery_id).order_by(Execution.id)
        )
    )


def by_key(session: Session, delivery_id: int, key: str) -> Execution | None:
    return session.scalar(
        select(Execution).where(Execution.delivery_id == delivery_id, Execution.key == key)
    )


def ensure_counter(session: Session, execution_id: int, now: datetime) -> KpiCounter:
    """The execution's KPI counter row, created at zero if it does not exist yet."""
    counter = session.get(KpiCounter, execution_id)
    if counter is None:
        counter = KpiCounter(execution_id=execution_id, updated_at=now)
        session.add(counter)
        session.flush()
    return counter


def main_execution(session: Session, delivery: Delivery, now: datetime) -> Execution:
    """The single execution of a one-off delivery, with its KPI counter row."""
    execution = by_key(session, delivery.id, MAIN_KEY)
    if execution is None:
        execution = Execution(delivery_id=delivery.id, key=MAIN_KEY, created_at=now)
        session.add(execution)
        session.flush()
    ensure_counter(session, execution.id, now)
    return execution


def create_occurrence(
    session: Session, delivery_id: int, key: str, occurrence: datetime, now: datetime
) -> Execution:
    """The execution of an occurrence (or the period it falls in), preparing under a lease."""
    execution = by_key(session, delivery_id, key)
    if execution is None:
        execution = Execution(
            delivery_id=delivery_id,
            key=key,
            occurrence_at=occurrence,
            state=ExecutionState.PREPARING,
            lease_until=now + PREPARE_LEASE,
            created_at=now,
        )
        session.add(execution)
        session.flush()
    ensure_counter(session, execution.id, now)
    return execution


def move(
    session: Session,
    execution_id: int,
    expected: ExecutionState | Collection[ExecutionState],
    to: ExecutionState,
    **values: Any,
) -> bool:
    """Set the state to `to` (and `values`) if it is `expected`; False when it was not."""
    states = [expected] if isinstance(expected, ExecutionState) else list(expected)
    return bool(
        affected(
            session.execute(
                update(Execution)
                .where(Execution.id == execution_id, Execution.state.in_(states))
                .values(state=to, **values)
                .execution_options(synchronize_session=False)
            )
        )
    )


def start(session: Session, now: datetime, delivery: Delivery, execution_id: int) -> bool:
    """Let the sender take the execution; its validity period starts at its first send.

    A new execution gets a new Deployment message (the previous one keeps its final
    figures); a later occurrence of an aggregation period extends the validity so
    that its newcomers get the whole period too. False when the execution ended in a
    way that is never undone (skipped, expired, stopped).
    """
    execution = reload(session, execution_id)
    validity = now + timedelta(seconds=delivery.validity_seconds)
    values: dict[str, Any] = {"finished_at": None}
    if execution.started_at is None:
        values["started_at"] = now
        if delivery.recurrence_cron:
            deliveries.forget_deployment(session, delivery.id)
    if execution.validity_ends_at is None or execution.validity_ends_at < validity:
        values["validity_ends_at"] = validity
    sendable = [s for s in ExecutionState if s not in _NEVER_RESTARTED]
    return move(session, execution_id, sendable, ExecutionState.IN_PROGRESS, **values)


# An execution that ended one of these ways is never sent again.
_NEVER_RESTARTED = frozenset(
    {ExecutionState.SKIPPED, ExecutionState.EXPIRED, ExecutionState.STOPPED}
)


def stop_unsent_occurrences(session: Session, delivery_id: int, now: datetime) -> None:
    """A stopped recurring delivery's occurrences still preparing or waiting end with it."""
    session.execute(
        update(Execution)
        .where(
            Execution.delivery_id == delivery_id,
            Execution.state.in_([ExecutionState.PREPARING, ExecutionState.PENDING_APPROVAL]),
        )
        .values(state=ExecutionState.STOPPED, finished_at=now)
        .execution_options(synchronize_session=False)
    )


# --- preparing occurrences ---------------------------------------------------------------


def stale_preparations(session: Session, now: datetime) -> list[tuple[int, int, datetime, Any]]:
    """(id, delivery id, occurrence, lease) of occurrences whose preparing process died."""
    rows = session.execute(
        select(Execution.id, Execution.delivery_id, Execution.occurrence_at, Execution.lease_until)
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .where(
            Execution.state == ExecutionState.PREPARING,
            Execution.lease_until <= now,
            Delivery.state == DeliveryState.IN_PROGRESS,
        )
    ).all()
    return [(i, d, at, lease) for i, d, at, lease in rows if at is not None]


def renew_lease(session: Session, execution_id: int, seen: Any, now: datetime) -> bool:
    """Take over a preparation whose lease ran out; of two processes, one does."""
    return bool(
        affected(
            session.execute(
                update(Execution)
                .where(
                    Execution.id == execution_id,
                    Execution.state == ExecutionState.PREPARING,
                    Execution.lease_until == seen,
                )
                .values(lease_until=now + PREPARE_LEASE)
                .execution_options(synchronize_session=False)
            )
        )
    )


# --- what the sender reads ---------------------------------------------------------------


def to_send(session: Session, now: datetime) -> Sequence[tuple[int, str, str]]:
    """(id, ref, key) of every execution with messages to send, oldest first.

    A one-off delivery's execution while the delivery is in progress; an occurrence of
    a recurring one while both it and its delivery are. A recipient-local send between
    two waves is left out until its next wave comes (nothing to claim, nothing to
    finish): its queued logs all wait for a later instant.
    """
    waiting = (
        select(SendingLog.id)
        .where(SendingLog.execution_id == Execution.id, logs.waits_for_wave(now))
        .exists()
    )
    due = (
        select(SendingLog.id)
        .where(
            SendingLog.execution_id == Execution.id,
            SendingLog.status == LogStatus.QUEUED,
            logs.due_now(now),
        )
        .exists()
    )
    local = Delivery.schedule_mode == ScheduleMode.RECIPIENT_LOCAL
    rows = session.execute(
        select(Execution.id, Delivery.ref, Execution.key)
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .where(
            Delivery.state == DeliveryState.IN_PROGRESS,
            or_(
                and_(Delivery.recurrence_cron.is_(None), Execution.key == MAIN_KEY),
                and_(
                    Delivery.recurrence_cron.is_not(None),
                    Execution.key != MAIN_KEY,
                    Execution.state == ExecutionState.IN_PROGRESS,
                ),
            ),
            or_(~local, due, ~waiting),
        )
        .order_by(Execution.id)
    ).all()
    return [(i, ref, key) for i, ref, key in rows]


def with_retries_due(session: Session, now: datetime) -> list[int]:
    """Executions holding soft bounces whose retry is due (not those that failed: their
    messages cannot be built; the validity period resolves their logs)."""
    return list(
        session.scalars(
            select(Execution.id)
            .join(SendingLog, SendingLog.execution_id == Execution.id)
            .where(
                Execution.state != ExecutionState.FAILED,
                SendingLog.failure_type == FailureType.SOFT,
                SendingLog.final.is_(False),
                SendingLog.next_retry_at <= now,
            )
            .distinct()
            .order_by(Execution.id)
        )
    )


def sending_state(session: Session, execution_id: int) -> DeliveryState:
    """The state the sender obeys: the delivery's; for an occurrence, also its own.

    Pause and stop act on the delivery (every occurrence); an occurrence that is no
    longer in progress (finished, skipped) is not sent further.
    """
    state, cron, execution_state = session.execute(
        select(Delivery.state, Delivery.recurrence_cron, Execution.state)
        .join(Execution, Execution.delivery_id == Delivery.id)
        .where(Execution.id == execution_id)
    ).one()
    running = state is DeliveryState.IN_PROGRESS
    if cron and running and execution_state is not ExecutionState.IN_PROGRESS:
        return DeliveryState.FINISHED
    return DeliveryState(state)


def validity_ended(session: Session, execution_id: int, now: datetime) -> bool:
    ends = session.scalar(select(Execution.validity_ends_at).where(Execution.id == execution_id))
    return ends is not None and ends <= now
