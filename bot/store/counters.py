"""KPI counters of an execution: read live, or recounted from the logs.

The live counters move with every log transition; `recount` is the ground truth
they must always equal (and what **Compute stats** writes back).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, distinct, func, select, update
from sqlalchemy.orm import Session

from bot.domain.feedback import TrackingKind
from bot.domain.kpi import Counters
from bot.domain.logs import LogStatus
from bot.store.models import Execution, KpiCounter, SendingLog, TrackingLog


def live_counters(session: Session, execution_id: int) -> Counters:
    row = session.get(KpiCounter, execution_id)
    if row is None:
        return Counters()
    return Counters(
        to_deliver=row.to_deliver,
        queued=row.queued,
        pending=row.pending,
        sent=row.sent,
        failed=row.failed,
        ignored=row.ignored,
        unique_opens=row.unique_opens,
        unique_clicks=row.unique_clicks,
    )


def recount(session: Session, execution_id: int) -> Counters:
    """Counters computed from the sending and tracking logs, in two queries."""
    by_status = dict(
        session.execute(
            select(SendingLog.status, func.count())
            .where(SendingLog.execution_id == execution_id)
            .group_by(SendingLog.status)
        ).all()
    )
    openers, clickers = tracked_counts(session, execution_id)
    counter = session.get(KpiCounter, execution_id)
    return Counters(
        to_deliver=counter.to_deliver if counter else sum(by_status.values()),
        queued=by_status.get(LogStatus.QUEUED, 0),
        pending=by_status.get(LogStatus.PENDING, 0),
        sent=by_status.get(LogStatus.SENT, 0),
        failed=by_status.get(LogStatus.FAILED, 0),
        ignored=by_status.get(LogStatus.IGNORED, 0),
        unique_opens=openers,
        unique_clicks=clickers,
    )


def tracked_counts(session: Session, execution_id: int) -> tuple[int, int]:
    """Unique openers and unique clickers, in one pass over the tracking log.

    A click counts as an open: openers are everyone with any hit.
    """
    openers, clickers = session.execute(
        select(
            func.count(distinct(TrackingLog.profile_id)),
            func.count(
                distinct(case((TrackingLog.kind == TrackingKind.CLICK, TrackingLog.profile_id)))
            ),
        ).where(TrackingLog.execution_id == execution_id)
    ).one()
    return openers or 0, clickers or 0


def compute_stats(session: Session, execution_id: int, now: datetime) -> Counters:
    """**Compute stats**: recount every KPI from the logs and make the counters say so."""
    counter = session.get(KpiCounter, execution_id, with_for_update=True)
    fresh = recount(session, execution_id)
    if counter is not None:
        for name, value in fresh.as_dict().items():
            setattr(counter, name, value)
        counter.rates_refreshed_at = now
        counter.updated_at = now
    return fresh


def reset(session: Session, execution_id: int, to_deliver: int, now: datetime) -> None:
    """A fresh preparation: everyone queued, nothing relayed, no opens or clicks yet."""
    session.execute(
        update(KpiCounter)
        .where(KpiCounter.execution_id == execution_id)
        .values(
            to_deliver=to_deliver,
            queued=to_deliver,
            pending=0,
            sent=0,
            failed=0,
            ignored=0,
            unique_opens=0,
            unique_clicks=0,
            rates_refreshed_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def add_queued(session: Session, execution_id: int, added: int, now: datetime) -> int:
    """Newcomers of a later occurrence join the queue; the execution's new "to deliver"."""
    session.execute(
        update(KpiCounter)
        .where(KpiCounter.execution_id == execution_id)
        .values(
            to_deliver=KpiCounter.to_deliver + added,
            queued=KpiCounter.queued + added,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    to_deliver = session.scalar(
        select(KpiCounter.to_deliver).where(KpiCounter.execution_id == execution_id)
    )
    return int(to_deliver or 0)


def to_deliver_of(session: Session, execution_id: int) -> int:
    value = session.scalar(
        select(KpiCounter.to_deliver).where(KpiCounter.execution_id == execution_id)
    )
    return int(value or 0)


def refresh_rates(session: Session, since: datetime, now: datetime, period: timedelta) -> int:
    """Recount unique openers and clickers of the executions not recounted since `since`.

    `since` is the boundary the rates must be fresh from (`domain.digest.rates_due_since`);
    those still inside their validity period, or out of it for less than a `period`, get
    one last recount. A tick every few seconds costs one indexed query when nothing is
    due. Rows locked by a concurrent refresh are skipped, not waited for.
    """
    due = list(
        session.scalars(
            select(KpiCounter.execution_id)
            .join(Execution, Execution.id == KpiCounter.execution_id)
            .where(
                Execution.started_at.is_not(None),
                Execution.validity_ends_at > since - period,
                (KpiCounter.rates_refreshed_at.is_(None)) | (KpiCounter.rates_refreshed_at < since),
            )
            .with_for_update(skip_locked=True)
        )
    )
    for execution_id in due:
        openers, clickers = tracked_counts(session, execution_id)
        session.execute(
            update(KpiCounter)
            .where(KpiCounter.execution_id == execution_id)
            .values(unique_opens=openers, unique_clicks=clickers, rates_refreshed_at=now)
        )
    return len(due)
