"""Apply message outcomes: log status, KPI counters and address health, in one write.

Every source of outcomes (the relay's SMTP answers, webhooks, bounce messages, the
validity job, a stop) hands its events here. The decisions are the domain's
(`domain.logs.apply_event`, `domain.quarantine`); this module only loads the rows,
writes what changed, and moves the counters by the same deltas in the caller's
transaction, so the counters always equal a recount of the logs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from bot.domain import quarantine
from bot.domain.logs import (
    Event,
    FailureType,
    LogEvent,
    LogState,
    LogStatus,
    Mode,
    apply_event,
)
from bot.domain.quarantine import AddressHealth, EmailStatus
from bot.store.models import Delivery, Execution, KpiCounter, Profile, SendingLog, table

_COUNTER = {status: getattr(KpiCounter, status.value) for status in LogStatus}


# apply_log_events works on plain rows, not ORM objects: one SELECT of these columns
# and one executemany UPDATE per call. Loading and flushing ORM objects cost the
# sender ~20 % of its time at 500 logs per batch (docs/benchmarks.md, Sending).
_READ = (
    SendingLog.id,
    SendingLog.execution_id,
    SendingLog.profile_id,
    SendingLog.status,
    SendingLog.failure_type,
    SendingLog.final,
    SendingLog.delivered,
    SendingLog.failure_reason,
    SendingLog.relayed_at,
    SendingLog.smtp_status,
    SendingLog.diagnostic,
    SendingLog.updated_at,
    SendingLog.event_at,
    SendingLog.next_retry_at,
)
_WRITTEN = (
    "status",
    "failure_type",
    "final",
    "delivered",
    "failure_reason",
    "relayed_at",
    "smtp_status",
    "diagnostic",
    "updated_at",
    "event_at",
    "next_retry_at",
)
_LOGS = table(SendingLog)
_WRITE = (
    update(_LOGS)
    .where(_LOGS.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _WRITTEN})
)


def _state(log: dict[str, Any]) -> LogState:
    failure = FailureType(log["failure_type"]) if log["failure_type"] else None
    return LogState(LogStatus(log["status"]), failure, bool(log["final"]), bool(log["delivered"]))


def _health_effect(event: Event, changed: bool, before: LogState) -> str | None:
    """Which quarantine rule an event triggers, if any (duplicates trigger none)."""
    if event is Event.HARD_BOUNCE and changed:
        return "hard"
    if event is Event.SOFT_BOUNCE and not before.final and before.failure is not FailureType.HARD:
        # The 1-day spacing of counted errors absorbs a repeated report of one bounce.
        return "soft"
    if event is Event.DELIVERED and changed:
        return "delivered"
    return None


def apply_log_events(session: Session, now: datetime, events: Sequence[LogEvent]) -> None:
    """Apply events in order inside the caller's transaction."""
    if not events:
        return
    ids = sorted({e.sending_log_id for e in events})
    logs = {
        row.id: row._asdict()
        for row in session.execute(select(*_READ).where(SendingLog.id.in_(ids)).with_for_update())
    }
    modes = _modes(session, {log["execution_id"] for log in logs.values()})
    deltas: dict[int, dict[LogStatus, int]] = defaultdict(lambda: defaultdict(int))
    health: dict[int, list[str]] = defaultdict(list)
    for e in events:
        log = logs.get(e.sending_log_id)
        if log is None:
            raise LookupError(f"no sending log {e.sending_log_id}")
        before = _state(log)
        outcome = apply_event(modes[log["execution_id"]], before, e.event)
        for status, d in outcome.deltas.items():
            deltas[log["execution_id"]][status] += d
        _write_event(log, e, before, outcome.state, now)
        effect = _health_effect(e.event, outcome.state != before, before)
        if effect:
            health[log["profile_id"]].append(effect)
    _write_logs(session, logs.values())
    _update_health(session, now, health)
    # Last, a plain UPDATE per execution: the counter row is shared by every writer of
    # the execution, so it is locked for as short a time as the transaction allows,
    # and never while a pipelined executemany of this transaction is still being sent.
    _move_counters(session, now, deltas)


def _write_event(
    log: dict[str, Any], e: LogEvent, before: LogState, after: LogState, now: datetime
) -> None:
    """The loaded row as the event leaves it: status, reason, timestamps, diagnostic."""
    if after != before:
        log["status"] = after.status
        log["failure_type"] = after.failure
        log["final"] = after.final
        log["delivered"] = after.delivered
        if after.failure in (FailureType.HARD, FailureType.SOFT) and e.reason:
            log["failure_reason"] = e.reason
        elif after.failure is None:
            log["failure_reason"] = None
        log["updated_at"] = now
        if before.failure is FailureType.SOFT and after.failure is not FailureType.SOFT:
            # Resolved (delivered, hard-bounced, spent): no retry is due any more, so
            # "soft bounce, then delivered" leaves the row as "delivered, then soft".
            log["next_retry_at"] = None
    if e.event is Event.RELAYED and log["relayed_at"] is None:
        log["relayed_at"] = now
    if e.smtp_status or e.diagnostic:
        log["smtp_status"] = e.smtp_status or log["smtp_status"]
        log["diagnostic"] = e.diagnostic or log["diagnostic"]
    log["event_at"] = now


def _write_logs(session: Session, logs: Iterable[dict[str, Any]]) -> None:
    """Every loaded log was touched (its event_at at least): one executemany UPDATE."""
    params = [{"b_id": log["id"], **{f"b_{n}": log[n] for n in _WRITTEN}} for log in logs]
    session.connection().execute(_WRITE, params)
    if len(session.identity_map):
        # A caller that holds some of these logs as ORM objects reads the new values.
        for p in params:
            held = session.identity_map.get(identity_key(SendingLog, p["b_id"]))
            if held is not None:
                session.expire(held)


def _modes(session: Session, execution_ids: set[int]) -> dict[int, Mode]:
    rows = session.execute(
        select(Execution.id, Delivery.efs)
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .where(Execution.id.in_(execution_ids))
    ).all()
    return {eid: Mode.EFS if efs else Mode.STANDARD for eid, efs in rows}


def _move_counters(
    session: Session, now: datetime, deltas: dict[int, dict[LogStatus, int]]
) -> None:
    """Relative updates (`sent = sent + n`), so concurrent writers never lose a count."""
    for execution_id, by_status in deltas.items():
        values = {_COUNTER[s]: _COUNTER[s] + d for s, d in by_status.items() if d}
        if values:
            session.execute(
                update(KpiCounter)
                .where(KpiCounter.execution_id == execution_id)
                .values({**values, KpiCounter.updated_at: now})
            )


_PROFILES = table(Profile)
_WRITE_HEALTH = (
    update(_PROFILES)
    .where(_PROFILES.c.id == bindparam("b_id"))
    .values(
        email_status=bindparam("b_status"),
        error_count=bindparam("b_count"),
        last_counted_error_at=bindparam("b_last"),
        updated_at=bindparam("b_now"),
    )
)
_HEALTH_RULES = {
    "hard": quarantine.hard_error,
    "soft": quarantine.soft_error,
    "delivered": quarantine.delivered,
}


def _update_health(session: Session, now: datetime, effects: dict[int, list[str]]) -> None:
    """Plain rows again, and only the profiles whose health changed are written.

    Most effects are a delivery to a valid address, which changes nothing: writing
    those rows anyway made each batch of delivery reports rewrite every profile.
    """
    if not effects:
        return
    rows = session.execute(
        select(Profile.id, Profile.email_status, Profile.error_count, Profile.last_counted_error_at)
        .where(Profile.id.in_(sorted(effects)))
        .with_for_update()
    ).all()
    changed = []
    for profile_id, status, count, last in rows:
        before = AddressHealth(EmailStatus(status), count, last)
        h = before
        for effect in effects[profile_id]:
            h = _HEALTH_RULES[effect](h, now)
        if h != before:
            changed.append(
                {
                    "b_id": profile_id,
                    "b_status": h.status.value,
                    "b_count": h.error_count,
                    "b_last": h.last_counted_error_at,
                    "b_now": now,
                }
            )
    if changed:
        session.connection().execute(_WRITE_HEALTH, changed)
        for p in changed:
            held = session.identity_map.get(identity_key(Profile, p["b_id"]))
            if held is not None:
                session.expire(held)


def record_complaint(session: Session, now: datetime, profile_id: int) -> None:
    """A spam complaint denylists the address (it is excluded from every later send)."""
    p = session.get(Profile, profile_id, with_for_update=True)
    if p is None:
        raise LookupError(f"no profile {profile_id}")
    h = quarantine.complaint(
        AddressHealth(EmailStatus(p.email_status), p.error_count, p.last_counted_error_at), now
    )
    p.email_status = h.status
    p.updated_at = now


def schedule_retries(
    session: Session, now: datetime, log_ids: Sequence[int], retry_at: datetime, max_retries: int
) -> None:
    """Soft bounces reported after the relay accepted: retry them, as the relay's own would be.

    A log the bounce left awaiting a retry gets its retry time, unless its retries are
    spent: then its failure is final. A log already due keeps its time (a repeated
    report does not push the retry back), and a log in a sender's hands is left to it.
    """
    if not log_ids:
        return
    rows = session.execute(
        select(SendingLog.id, SendingLog.retry_count).where(
            SendingLog.id.in_(sorted(set(log_ids))),
            SendingLog.failure_type == FailureType.SOFT,
            SendingLog.final.is_(False),
            SendingLog.next_retry_at.is_(None),
            SendingLog.claim_token.is_(None),
        )
    ).all()
    spent = [log_id for log_id, tries in rows if tries >= max_retries]
    due = [log_id for log_id, tries in rows if tries < max_retries]
    apply_log_events(session, now, [LogEvent(i, Event.RETRY_FAILED) for i in spent])
    if due:
        session.execute(
            update(SendingLog)
            .where(SendingLog.id.in_(due))
            .values(next_retry_at=retry_at)
            .execution_options(synchronize_session=False)
        )
