"""The audit trail, read back: who imported, prepared, confirmed, paused, approved, granted.

The entries are written in the transaction of each act (`store.audit.record`); this is
where a person reads them (`python -m bot audit list`). Reading the whole trail, every
subject's, is an administrator's; a delivery's own trail is for whoever may see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.context import Context
from bot.domain.roles import Actor, Permission
from bot.store import audit

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    action: str
    subject_kind: str
    subject_ref: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subject": {"kind": self.subject_kind, "ref": self.subject_ref},
            "detail": self.detail,
        }


def audit_trail(
    ctx: Context,
    actor: Actor,
    *,
    ref: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[AuditRecord]:
    """The latest `limit` entries (at most `MAX_ENTRIES`), oldest first."""
    actor.require(Permission.VIEW_ALL_LOGS if ref is None else Permission.VIEW_DELIVERIES)
    with ctx.sessions() as s:
        rows = audit.entries(s, ref=ref, since=since, limit=max(1, min(limit, MAX_ENTRIES)))
        return [
            AuditRecord(r.at, r.actor, r.action, r.subject_kind, r.subject_ref, dict(r.detail))
            for r in rows
        ]
