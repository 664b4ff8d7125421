"""Take feedback events from any source and apply them once (SPEC sections 6–8).

Every parser (webhooks, bounce messages, the tracking endpoints) produces
`FeedbackEvent`s; this service matches each to its sending log (by the log id the
message carried, else by its Message-ID), drops events already taken (by source and
source event id, through a unique key), and applies the rest in one transaction:
log transitions and counters through `ctx.outcomes`, complaints to the denylist,
opens and clicks to the tracking log. An event for no known message is counted as
unmatched and acknowledged, so the provider does not retry it forever.

Open rate and click-through rate are not moved here: the hourly indicator job and
**Compute stats** recount them from the tracking log (SPEC section 6).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.context import Context
from bot.feedback.events import FeedbackEvent, FeedbackKind
from bot.services.outcomes import LogEvent, apply_log_events, record_complaint
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import FeedbackReceipt, SendingLog, TrackingLog

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    unmatched: int = 0
    unmatched_ids: list[str] = field(default_factory=list)


def _match(session: Session, events: Sequence[FeedbackEvent]) -> dict[int, tuple[int, int, int]]:
    """Event index -> (sending log id, execution id, profile id), for those we know."""
    by_id = {e.log_id for e in events if e.log_id is not None}
    by_mid = {e.message_id for e in events if e.log_id is None and e.message_id}
    rows = []
    if by_id:
        rows += session.execute(
            select(
                SendingLog.id, SendingLog.execution_id, SendingLog.profile_id, SendingLog.message_id
            ).where(SendingLog.id.in_(by_id))
        ).all()
    if by_mid:
        rows += session.execute(
            select(
                SendingLog.id, SendingLog.execution_id, SendingLog.profile_id, SendingLog.message_id
            ).where(SendingLog.message_id.in_(by_mid))
        ).all()
    ids = {r[0]: (r[0], r[1], r[2]) for r in rows}
    mids = {r[3]: (r[0], r[1], r[2]) for r in rows if r[3]}
    found: dict[int, tuple[int, int, int]] = {}
    for i, e in enumerate(events):
        hit = ids.get(e.log_id) if e.log_id is not None else mids.get(e.message_id or "")
        if hit:
            found[i] = hit
    return found


_RECEIPTS = FeedbackReceipt.__table__
_TRACKING = TrackingLog.__table__


def _claim_receipts(
    session: Session,
    now: datetime,
    events: Sequence[FeedbackEvent],
    matched: dict[int, tuple[int, int, int]],
) -> set[int]:
    """Insert a receipt per matched event; return the indexes that were new.

    All rows in one executemany (`INSERT … ON CONFLICT DO NOTHING RETURNING`): the
    database's unique key alone decides what is new, so an event taken by an earlier
    request, or by a concurrent one that commits first, comes back as a duplicate.
    Keys go in sorted order so that two concurrent batches on PostgreSQL wait for
    each other rather than deadlock.
    """
    first: dict[tuple[str, str], int] = {}
    for i in sorted(matched):
        first.setdefault((events[i].source, events[i].source_event_id), i)
    keys = sorted(first)
    rows = [
        {
            "source": source,
            "source_event_id": event_id,
            "kind": events[first[source, event_id]].kind.value,
            "sending_log_id": matched[first[source, event_id]][0],
            "received_at": now,
        }
        for source, event_id in keys
    ]
    if not rows:
        return set()
    # Compiled once and cached; SQLAlchemy sends the rows as multi-row VALUES batches
    # ("insertmanyvalues") and gathers what each batch RETURNs.
    stmt = insert_ignoring_conflicts(session, _RECEIPTS, ["source", "source_event_id"]).returning(
        _RECEIPTS.c.source, _RECEIPTS.c.source_event_id
    )
    return {first[source, event_id] for source, event_id in session.execute(stmt, rows)}


def ingest(ctx: Context, events: Sequence[FeedbackEvent]) -> IngestReport:
    """Apply `events` in order, each at most once; raise on a database failure (→ 5xx)."""
    report = IngestReport(received=len(events))
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        matched = _match(s, events)
        for i, e in enumerate(events):
            if i not in matched:
                report.unmatched += 1
                report.unmatched_ids.append(f"{e.source}:{e.source_event_id}")
        fresh = _claim_receipts(s, now, events, matched)
        report.duplicates = len(matched) - len(fresh)
        log_events: list[LogEvent] = []
        hits: list[dict[str, object]] = []
        for i in sorted(fresh):
            e = events[i]
            log_id, execution_id, profile_id = matched[i]
            if e.kind.log_event is not None:
                log_events.append(
                    LogEvent(log_id, e.kind.log_event, e.reason, e.smtp_status, e.diagnostic)
                )
            elif e.kind is FeedbackKind.COMPLAINT:
                record_complaint(s, now, profile_id)
            else:
                hits.append(
                    {
                        "execution_id": execution_id,
                        "sending_log_id": log_id,
                        "profile_id": profile_id,
                        "kind": "open" if e.kind is FeedbackKind.OPEN else "click",
                        "url": e.url,
                        "user_agent": e.user_agent,
                        "occurred_at": e.occurred_at or now,
                    }
                )
        if hits:  # one executemany, not an ORM object per hit
            s.execute(_TRACKING.insert(), hits)
        apply_log_events(s, now, log_events)
        report.applied = len(fresh)
    if report.unmatched:
        log.warning(
            "%d feedback events matched no message: %s", report.unmatched, report.unmatched_ids[:5]
        )
    return report
