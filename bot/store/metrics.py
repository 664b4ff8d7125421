"""What `/metrics` reads from the database: the gauges a person graphs, and the counts
every process adds to (failed Slack calls)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.domain.executions import ExecutionState
from bot.domain.logs import LogStatus
from bot.store.models import Execution, SendingLog, SlackCallFailure

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


def count_slack_failure(session: Session, method: str, now: datetime) -> None:
    """One more failed call of `method`: one upsert, so concurrent processes add up."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = module.insert(SlackCallFailure).values(
        method=method[:100], failures=1, last_failed_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[SlackCallFailure.method],
            set_={
                "failures": SlackCallFailure.failures + 1,
                "last_failed_at": statement.excluded.last_failed_at,
            },
        )
    )


def slack_failures(session: Session) -> dict[str, int]:
    """Failed calls by Slack Web API method, since the database was made."""
    rows = session.execute(select(SlackCallFailure.method, SlackCallFailure.failures))
    return {method: int(count) for method, count in rows}
