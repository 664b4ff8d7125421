"""The audit log: who did what to which delivery, role or profile, and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bot.clock import Clock
from bot.store.models import AuditEntry


def record(
    session: Session,
    clock: Clock,
    *,
    actor: str,
    action: str,
    subject_kind: str,
    subject_ref: str,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=clock.now(),
        actor=actor,
        action=action,
        subject_kind=subject_kind,
        subject_ref=subject_ref,
        detail=detail or {},
    )
    session.add(entry)
    return entry
