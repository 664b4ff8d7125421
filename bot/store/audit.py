"""The audit log: who did what to which delivery, role or profile, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.store.models import AuditEntry


def record(
    session: Session,
    at: datetime,
    *,
    actor: str,
    action: str,
    subject_kind: str,
    subject_ref: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """One entry, in the transaction of the act it records: both land, or neither."""
    session.add(
        AuditEntry(
            at=at,
            actor=actor,
            action=action,
            subject_kind=subject_kind,
            subject_ref=subject_ref,
            detail=detail or {},
        )
    )


def count_since(session: Session, *, actor: str, action: str, since: datetime) -> int:
    """How many `action` entries `actor` made after `since` (a rate limit's count)."""
    stmt = select(func.count()).where(
        AuditEntry.actor == actor, AuditEntry.action == action, AuditEntry.at > since
    )
    return int(session.scalar(stmt) or 0)


def entries(
    session: Session, *, ref: str | None, since: datetime | None, limit: int
) -> list[AuditEntry]:
    """The latest `limit` entries (about `ref` and after `since` when given), oldest first."""
    query = select(AuditEntry)
    if ref is not None:
        query = query.where(AuditEntry.subject_ref == ref)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    latest = list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
    return latest[::-1]


def newest(
    session: Session, *, ref: str | None, upto: int | None, offset: int, limit: int
) -> tuple[list[AuditEntry], int, int]:
    """One page of the trail, newest first, as of entry `upto`; the total and `upto`.

    Pages are cut below the newest entry when the first page was read (`upto`), so
    entries written while someone pages through do not shift page 2 by a few rows.
    """
    about = [AuditEntry.subject_ref == ref] if ref is not None else []
    if upto is None:
        upto = session.scalar(select(func.max(AuditEntry.id)).where(*about)) or 0
    where = [AuditEntry.id <= upto, *about]
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0
    query = select(AuditEntry).where(*where).order_by(AuditEntry.id.desc())
    return list(session.scalars(query.offset(offset).limit(limit))), total, upto
