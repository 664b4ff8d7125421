"""Reads that span the tables for a person: a profile's marketing history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.domain.failures import FailureReason
from bot.domain.feedback import TrackingKind
from bot.domain.logs import FailureType, LogStatus
from bot.store.models import Delivery, Execution, SendingLog, TrackingLog


class HistoryRow(NamedTuple):
    email: str
    status: LogStatus
    failure_type: FailureType | None
    failure_reason: FailureReason | None
    relayed_at: datetime | None
    created_at: datetime
    ref: str
    name: str
    execution: str
    opens: int
    clicks: int


def history(session: Session, profile_ids: Sequence[int], limit: int) -> list[HistoryRow]:
    """The messages of these profiles, newest first, with their opens and clicks."""

    def hits(kind: TrackingKind):  # type: ignore[no-untyped-def]
        return (
            select(func.count())
            .where(TrackingLog.sending_log_id == SendingLog.id, TrackingLog.kind == kind)
            .scalar_subquery()
        )

    rows = session.execute(
        select(
            SendingLog.email,
            SendingLog.status,
            SendingLog.failure_type,
            SendingLog.failure_reason,
            SendingLog.relayed_at,
            SendingLog.created_at,
            Delivery.ref,
            Delivery.name,
            Execution.key,
            hits(TrackingKind.OPEN),
            hits(TrackingKind.CLICK),
        )
        .join(Execution, Execution.id == SendingLog.execution_id)
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .where(SendingLog.profile_id.in_(list(profile_ids)))
        .order_by(SendingLog.created_at.desc(), SendingLog.id.desc())
        .limit(limit)
    ).all()
    return [HistoryRow(*row) for row in rows]
