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
    relayed per second over the last minute (`RATE_WINDOW`); one pass over their logs."""
    sending = select(Execution.id).where(Execution.state == ExecutionState.IN_PROGRESS)
    in_progress = session.scalar(select(func.count()).select_from(sending.subquery())) or 0
    queued, relayed = session.execute(
        select(
            func.count().filter(SendingLog.status == LogStatus.QUEUED),
            func.count().filter(SendingLog.relayed_at > now - RATE_WINDOW),
        ).where(SendingLog.execution_id.in_(sending))
    ).one()
    return {
        "queued_recipients": float(queued or 0),
        "executions_in_progress": float(in_progress),
        "relay_rate": (relayed or 0) / RATE_WINDOW.total_seconds(),
    }
