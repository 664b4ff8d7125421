"""Executions: the unit that logs and KPIs hang off (see bot/store/models.py).

A one-off delivery has exactly one execution, keyed "main"; it is created the first
time something needs it (preparation, in practice). Recurring executions, one per
occurrence or aggregation period, are created by the recurrence scheduling.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.store.models import Delivery, Execution, KpiCounter

MAIN_KEY = "main"


def main_execution(session: Session, delivery: Delivery, now: datetime) -> Execution:
    """The single execution of a one-off delivery, with its KPI counter row."""
    execution = session.scalars(
        select(Execution).where(Execution.delivery_id == delivery.id, Execution.key == MAIN_KEY)
    ).one_or_none()
    if execution is None:
        execution = Execution(delivery_id=delivery.id, key=MAIN_KEY, created_at=now)
        session.add(execution)
        session.flush()
    ensure_counter(session, execution.id, now)
    return execution


def ensure_counter(session: Session, execution_id: int, now: datetime) -> KpiCounter:
    """The execution's KPI counter row, created at zero if it does not exist yet."""
    counter = session.get(KpiCounter, execution_id)
    if counter is None:
        counter = KpiCounter(execution_id=execution_id, updated_at=now)
        session.add(counter)
        session.flush()
    return counter
