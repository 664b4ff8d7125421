"""What `/metrics` reads from the database: the gauges a person graphs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.domain.executions import ExecutionState
from bot.domain.logs import LogStatus
from bot.store.models import Execution, SendingLog

RATE_WINDOW = timedelta(minutes=1)


def gauges(session: Session, now: datetime) -> dict[str, float]:
    """Recipients queued in executions that send, executions in progress, and messages
    relayed per second over the last minute (`RATE_WINDOW`)."""
    sending = select(Execution.id).where(Execution.state == ExecutionState.IN_PROGRESS)
    in_progress = session.scalar(select(func.count()).select_from(sending.subquery())) or 0
    queued = (
        session.scalar(
            select(func.count())
            .select_from(SendingLog)
            .where(
                SendingLog.execution_id.in_(sending),
                SendingLog.status == LogStatus.QUEUED,
            )
        )
        or 0
    )
    relayed = (
        session.scalar(
            select(func.count())
            .select_from(SendingLog)
            .where(
                SendingLog.execution_id.in_(sending),
                SendingLog.relayed_at > now - RATE_WINDOW,
            )
        )
        or 0
    )
    return {
        "queued_recipients": float(queued),
        "executions_in_progress": float(in_progress),
        "relay_rate": relayed / RATE_WINDOW.total_seconds(),
    }
