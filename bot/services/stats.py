"""KPI counters of an execution: read live, or recounted from the logs.

The live counters move with every log transition; `recount` is the ground truth
they must always equal (and what **Compute stats** writes back).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

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
        queued=by_status.get(LogStatus.QUEUED.value, 0),
        pending=by_status.get(LogStatus.PENDING.value, 0),
        sent=by_status.get(LogStatus.SENT.value, 0),
        failed=by_status.get(LogStatus.FAILED.value, 0),
        ignored=by_status.get(LogStatus.IGNORED.value, 0),
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
            func.count(distinct(case((TrackingLog.kind == "click", TrackingLog.profile_id)))),
        ).where(TrackingLog.execution_id == execution_id)
    ).one()
    return openers or 0, clickers or 0


def executions_of(session: Session, delivery_id: int) -> list[Execution]:
    return list(
        session.scalars(
            select(Execution).where(Execution.delivery_id == delivery_id).order_by(Execution.id)
        )
    )


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
