"""The audit log: who did what to which delivery, role or profile, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
