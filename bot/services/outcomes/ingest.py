"""Take feedback events from any source and apply them once (SPEC sections 6–8).

Every parser (webhooks, bounce messages, the tracking endpoints) produces
`FeedbackEvent`s; this service matches each to its sending log (by the log id the
message carried, else by its Message-ID), drops events already taken (by source and
source event id, through a unique key), and applies the rest in one transaction:
log transitions and counters through `store.outcomes`, complaints to the denylist,
opens and clicks to the tracking log. An event for no known message is counted as
unmatched and acknowledged, so the provider does not retry it forever.

Open rate and click-through rate are not moved here: the hourly indicator job and
**Compute stats** recount them from the tracking log (SPEC section 6).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.context import Context, Session
from bot.domain.failures import FailureReason
from bot.domain.feedback import FeedbackKind
from bot.domain.logs import LogEvent
from bot.feedback.events import FeedbackEvent
from bot.store import feedback
from bot.store.feedback import Receipt, Target
from bot.store.outcomes import apply_log_events, record_complaint

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    unmatched: int = 0
    unmatched_ids: list[str] = field(default_factory=list)


def _match(session: Session, events: Sequence[FeedbackEvent]) -> dict[int, Target]:
    """Event index -> its sending log, for the events about a message we know.

    By the log id the message carried, else by its Message-ID (stored by the sender).
    """
    by_id = {e.log_id for e in events if e.log_id is not None}
    by_mid = {e.message_id for e in events if e.log_id is None and e.message_id}
    ids, mids = feedback.targets(session, by_id, by_mid)
    found: dict[int, Target] = {}
    for i, e in enumerate(events):
        hit = ids.get(e.log_id) if e.log_id is not None else mids.get(e.message_id or "")
        if hit:
            found[i] = hit
    return found


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
        first: dict[tuple[str, str], int] = {}
        for i in sorted(matched):
            first.setdefault((events[i].source, events[i].source_event_id), i)
        new = feedback.take_receipts(
            s,
            now,
            [
                Receipt(source, event_id, events[i].kind, matched[i].log_id)
                for (source, event_id), i in first.items()
            ],
        )
        fresh = sorted(first[key] for key in new)
        report.duplicates = len(matched) - len(fresh)
        log_events: list[LogEvent] = []
        hits: list[dict[str, object]] = []
        for i in fresh:
            e, target = events[i], matched[i]
            if e.kind.log_event is not None:
                reason = FailureReason(e.reason) if e.reason else None
                log_events.append(
                    LogEvent(target.log_id, e.kind.log_event, reason, e.smtp_status, e.diagnostic)
                )
            elif e.kind is FeedbackKind.COMPLAINT:
                record_complaint(s, now, target.profile_id)
            else:
                hits.append(
                    {
                        "execution_id": target.execution_id,
                        "sending_log_id": target.log_id,
                        "profile_id": target.profile_id,
                        "kind": e.kind.tracking,
                        "url": e.url,
                        "user_agent": e.user_agent,
                        "occurred_at": e.occurred_at or now,
                    }
                )
        feedback.add_hits(s, hits)
        apply_log_events(s, now, log_events)
        report.applied = len(fresh)
    if report.unmatched:
        log.warning(
            "%d feedback events matched no message: %s", report.unmatched, report.unmatched_ids[:5]
        )
    return report
