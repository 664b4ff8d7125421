"""Take feedback events from any source and apply them once (SPEC sections 6–8).

Every parser (webhooks, bounce messages, the tracking endpoints) produces
`FeedbackEvent`s; this service matches each to its sending log, drops events already
taken (by source and source event id, through a unique key), and applies the rest in
one transaction: log transitions and counters through `store.outcomes`, complaints to
the denylist, opens and clicks to the tracking log.

Matching trusts only what Greenlight signed (`_target`): the keyed tag of its
Message-ID, a stored Message-ID, or a log id carried by a source whose request is
authenticated. A bounce message's own headers prove nothing (anyone can write one),
so from bounce messages a log id alone never matches, and the bounced recipient must
be the log's. An event for no known message is counted as unmatched and
acknowledged, so the provider does not retry it forever.

An outcome about a message not yet recorded as relayed (the relay's answer and the
provider's report can cross) is held back, not stored: the caller asks the provider to
retry (503), or leaves the bounce in its mailbox, and the event is applied once the
log is recorded.

Open rate and click-through rate are not moved here: the hourly indicator job and
**Compute stats** recount them from the tracking log (SPEC section 6).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bot.context import Context, Session
from bot.domain.failures import FailureReason
from bot.domain.feedback import FeedbackKind
from bot.domain.logs import Event, LogEvent, LogStatus
from bot.engine.message import message_tag
from bot.engine.tokens import TokenSigner
from bot.feedback.events import UNSIGNED_SOURCES, FeedbackEvent, greenlight_id
from bot.services.replay import Replayed, SingleUse, give_back, take
from bot.store import feedback
from bot.store.feedback import Receipt, Target
from bot.store.outcomes import apply_log_events, record_complaint, schedule_retries

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    unmatched: int = 0
    unmatched_ids: list[str] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # indexes of events to take again later


def _target(
    e: FeedbackEvent, by_id: dict[int, Target], by_mid: dict[str, Target], signer: TokenSigner
) -> Target | None:
    """The log `e` is about, judged only by what an outsider cannot make up."""
    gl = greenlight_id(e.message_id)
    if gl is not None:
        if e.log_id is not None and e.log_id != gl.log_id:
            return None  # a log-id header that disagrees with the Message-ID
        found = by_id.get(gl.log_id)
        expected = message_tag(signer, found.delivery_ref, found.log_id) if found else ""
        if found is None or not hmac.compare_digest(gl.tag, expected):
            return None
    elif e.message_id and e.message_id in by_mid:
        found = by_mid[e.message_id]
        if e.log_id is not None and e.log_id != found.log_id:
            return None
    elif e.log_id is not None and e.source not in UNSIGNED_SOURCES:
        found = by_id.get(e.log_id)
    else:
        return None
    if found is None:
        return None
    if e.recipient is not None and e.recipient.lower() != found.email.lower():
        return None
    if e.source in UNSIGNED_SOURCES and e.kind.is_bounce and e.recipient is None:
        return None  # a bounce must name whom it bounced
    return found


def _match(
    session: Session, events: Sequence[FeedbackEvent], signer: TokenSigner
) -> dict[int, Target]:
    """Event index -> its sending log, for the events about a message we know."""
    wanted_ids: set[int] = set()
    wanted_mids: set[str] = set()
    for e in events:
        gl = greenlight_id(e.message_id)
        if gl is not None:
            wanted_ids.add(gl.log_id)
        elif e.message_id:
            wanted_mids.add(e.message_id)
        if e.log_id is not None:
            wanted_ids.add(e.log_id)
    by_id, by_mid = feedback.targets(session, wanted_ids, wanted_mids)
    found: dict[int, Target] = {}
    for i, e in enumerate(events):
        hit = _target(e, by_id, by_mid, signer)
        if hit is not None:
            found[i] = hit
    return found


def ingest(
    ctx: Context, events: Sequence[FeedbackEvent], once: SingleUse | None = None
) -> IngestReport:
    """Apply `events` in order, each at most once; raise on a database failure (→ 5xx).

    `once` is the request's single-use signature (Mailgun's token): spent in the
    transaction that applies its events, so a request that fails, or whose events are
    held back, can be retried with it; raises `Replayed` when it was spent before.
    """
    report = IngestReport(received=len(events))
    now = ctx.clock.now()
    signer = TokenSigner.from_settings(ctx.settings)
    with ctx.sessions.begin() as s:
        if once is not None and not take(s, ctx, once):
            raise Replayed(once.source)
        matched = _match(s, events, signer)
        for i, e in enumerate(events):
            if i not in matched:
                report.unmatched += 1
                report.unmatched_ids.append(f"{e.source}:{e.source_event_id}")
            elif e.kind.log_event is not None and matched[i].status is LogStatus.QUEUED:
                report.held.append(i)
                del matched[i]
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
        schedule_retries(
            s,
            now,
            [e.sending_log_id for e in log_events if e.event is Event.SOFT_BOUNCE],
            now + timedelta(minutes=ctx.settings.retry_interval_minutes),
            ctx.settings.max_retries,
        )
        report.applied = len(fresh)
        if once is not None and report.held:
            give_back(s, once)
    if report.held:
        log.info("%d feedback events wait for their message to be recorded", len(report.held))
    if report.unmatched:
        log.warning(
            "%d feedback events matched no message: %s", report.unmatched, report.unmatched_ids[:5]
        )
    return report
