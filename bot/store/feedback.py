"""Feedback taken in: which sending log an event is about, and each event once.

An event is applied at most once however often it arrives: its receipt (source and
source event id) has a unique key, and the database alone decides which receipts are
new, also between concurrent requests.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain.feedback import FeedbackKind
from bot.domain.logs import LogStatus
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import (
    Delivery,
    Execution,
    FeedbackReceipt,
    SendingLog,
    TrackingLog,
    table,
)


@dataclass(frozen=True, slots=True)
class Target:
    """The sending log an event is about, with what matching and applying it need."""

    log_id: int
    execution_id: int
    profile_id: int
    email: str
    status: LogStatus
    message_id: str | None
    delivery_ref: str


def targets(
    session: Session, log_ids: Collection[int], message_ids: Collection[str]
) -> tuple[dict[int, Target], dict[str, Target]]:
    """The logs with these ids, and those with these (stored) Message-IDs."""
    base = (
        select(
            SendingLog.id,
            SendingLog.execution_id,
            SendingLog.profile_id,
            SendingLog.email,
            SendingLog.status,
            SendingLog.message_id,
            Delivery.ref,
        )
        .join(Execution, Execution.id == SendingLog.execution_id)
        .join(Delivery, Delivery.id == Execution.delivery_id)
    )
    rows: list[Any] = []
    if log_ids:
        rows += session.execute(base.where(SendingLog.id.in_(log_ids))).all()
    if message_ids:
        rows += session.execute(base.where(SendingLog.message_id.in_(message_ids))).all()
    found = [Target(*row) for row in rows]
    return {t.log_id: t for t in found}, {t.message_id: t for t in found if t.message_id}


_RECEIPTS = table(FeedbackReceipt)


@dataclass(frozen=True, slots=True)
class Receipt:
    source: str
    source_event_id: str
    kind: FeedbackKind
    log_id: int


def take_receipts(
    session: Session, now: datetime, receipts: Sequence[Receipt]
) -> set[tuple[str, str]]:
    """Insert the receipts; return the (source, event id) keys that were new.

    One executemany of `INSERT … ON CONFLICT DO NOTHING RETURNING`, in sorted key order
    so that two concurrent batches on PostgreSQL wait for each other, not deadlock.
    """
    if not receipts:
        return set()
    rows = [
        {
            "source": r.source,
            "source_event_id": r.source_event_id,
            "kind": r.kind,
            "sending_log_id": r.log_id,
            "received_at": now,
        }
        for r in sorted(receipts, key=lambda r: (r.source, r.source_event_id))
    ]
    stmt = insert_ignoring_conflicts(session, _RECEIPTS, ["source", "source_event_id"]).returning(
        _RECEIPTS.c.source, _RECEIPTS.c.source_event_id
    )
    return {(source, event_id) for source, event_id in session.execute(stmt, rows)}


_TRACKING = table(TrackingLog)


def add_hits(session: Session, hits: Sequence[dict[str, Any]]) -> None:
    """Opens and clicks, one executemany (not an ORM object per hit)."""
    if hits:
        session.execute(_TRACKING.insert(), list(hits))
