"""The audit trail, read back: who imported, prepared, confirmed, paused, approved, granted.

The entries are written in the transaction of each act (`store.audit.record`); this is
where a person reads them (`python -m bot audit list`, `/campaign audit`). Reading the
whole trail, every subject's, is an administrator's; a delivery's own trail is for
whoever may see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.context import Context
from bot.domain.roles import Actor, Permission
from bot.store import audit
from bot.store.models import AuditEntry

MAX_ENTRIES = 10_000
PAGE_SIZE = 25  # entries on one page of `/campaign audit`: a Slack message holds 50 blocks


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


def _record(entry: AuditEntry) -> AuditRecord:
    return AuditRecord(
        entry.at,
        entry.actor,
        entry.action,
        entry.subject_kind,
        entry.subject_ref,
        dict(entry.detail),
    )


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
        return [_record(r) for r in rows]


@dataclass(frozen=True)
class AuditPage:
    """Page `page` (from 1) of a trail, newest first: `ref`'s, or every subject's (None).

    `upto` is the newest entry of the trail when its first page was read; the next
    pages are read as of it, so that an act recorded meanwhile shifts nothing.
    """

    ref: str | None
    page: int
    size: int
    total: int
    upto: int
    records: list[AuditRecord]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def has_older(self) -> bool:
        return self.page < self.pages


def audit_page(
    ctx: Context,
    actor: Actor,
    *,
    ref: str | None = None,
    page: int = 1,
    upto: int | None = None,
    size: int = PAGE_SIZE,
) -> AuditPage:
    """A page of the trail for a person in Slack, with the same role rules as `audit_trail`."""
    actor.require(Permission.VIEW_ALL_LOGS if ref is None else Permission.VIEW_DELIVERIES)
    page = max(1, page)
    with ctx.sessions() as s:
        rows, total, upto = audit.newest(
            s, ref=ref, upto=upto, offset=(page - 1) * size, limit=size
        )
        records = [_record(r) for r in rows]
    return AuditPage(ref, page, size, total, upto, records)
