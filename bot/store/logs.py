"""Sending logs: claims for relaying, recording what the relay said, and their ends.

A log is claimed (an atomic UPDATE that names the claim's token) before its message
is relayed and released in the same write that records the relay's answer, so two
senders never relay one log, and after a crash the logs still claimed are the only
ones that may have reached the relay without their answer being recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.orm import Session

from bot.domain.logs import Event, FailureType, LogEvent, LogStatus
from bot.store.db import affected
from bot.store.models import Execution, Profile, SendingLog, table
from bot.store.outcomes import apply_log_events


@dataclass(frozen=True, slots=True, order=True)
class Claimed:
    """A log taken by a sender: which message to whom, and the attempt it is."""

    log_id: int
    profile_id: int
    email: str
    retry_count: int = 0


@dataclass(frozen=True, slots=True)
class Relayed:
    """What recording an answer writes beside the log's status: its id and next retry."""

    log_id: int
    message_id: str
    retry_at: datetime | None


def claim_queued(
    session: Session, execution_id: int, token: str, now: datetime, limit: int
) -> list[Claimed]:
    """Atomically take the next queued logs of the execution for the sender `token`."""
    return _take(
        session,
        [SendingLog.status == LogStatus.QUEUED],
        execution_id,
        token,
        now,
        limit,
    )


def claim_retries(
    session: Session, execution_id: int, token: str, now: datetime, limit: int
) -> list[Claimed]:
    """Take soft-bounced logs whose retry is due, counting the attempt as it is claimed.

    next_retry_at stays until the answer is recorded: after a crash the released log
    is still due and is tried again.
    """
    return _take(
        session,
        [
            SendingLog.failure_type == FailureType.SOFT,
            SendingLog.final.is_(False),
            SendingLog.next_retry_at <= now,
        ],
        execution_id,
        token,
        now,
        limit,
        retry_count=SendingLog.retry_count + 1,
    )


def _take(
    session: Session,
    which: list[ColumnElement[bool]],
    execution_id: int,
    token: str,
    now: datetime,
    limit: int,
    **values: Any,
) -> list[Claimed]:
    """One UPDATE … RETURNING that claims up to `limit` unclaimed logs matching `which`.

    On PostgreSQL the candidate rows are locked with SKIP LOCKED, so two senders'
    batches never overlap; on SQLite the UPDATE holds the write lock.
    """
    candidates = (
        select(SendingLog.id)
        .where(SendingLog.execution_id == execution_id, SendingLog.claim_token.is_(None), *which)
        .order_by(SendingLog.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    rows = session.execute(
        update(SendingLog)
        .where(SendingLog.id.in_(candidates.scalar_subquery()))
        .values(claim_token=token, claimed_at=now, **values)
        .returning(SendingLog.id, SendingLog.profile_id, SendingLog.email, SendingLog.retry_count)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(Claimed(r[0], r[1], r[2], r[3]) for r in rows)


def claim_holders(session: Session, execution_id: int) -> list[tuple[str, datetime | None]]:
    """(token, oldest claim) of every sender holding logs of the execution."""
    rows = session.execute(
        select(SendingLog.claim_token, func.min(SendingLog.claimed_at))
        .where(SendingLog.execution_id == execution_id, SendingLog.claim_token.is_not(None))
        .group_by(SendingLog.claim_token)
    ).all()
    return [(token, at) for token, at in rows if token]


def release_holders(session: Session, execution_id: int, tokens: Sequence[str]) -> int:
    """Free the claims of senders that are gone: those logs will be sent (again)."""
    return affected(
        session.execute(
            update(SendingLog)
            .where(SendingLog.execution_id == execution_id, SendingLog.claim_token.in_(tokens))
            .values(claim_token=None, claimed_at=None)
        )
    )


def claimed_count(session: Session, execution_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(SendingLog)
            .where(SendingLog.execution_id == execution_id, SendingLog.claim_token.is_not(None))
        )
        or 0
    )


def release(session: Session, log_ids: Iterable[int]) -> None:
    ids = list(log_ids)
    if ids:
        session.execute(
            update(SendingLog)
            .where(SendingLog.id.in_(ids))
            .values(claim_token=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )


_LOGS = table(SendingLog)
_RECORD = (
    update(_LOGS)
    .where(_LOGS.c.id == bindparam("log_id"))
    .values(
        message_id=bindparam("message_id"),
        next_retry_at=bindparam("retry_at"),
        claim_token=None,
        claimed_at=None,
    )
)


def record_relayed(
    session: Session, now: datetime, events: Sequence[LogEvent], relayed: Sequence[Relayed]
) -> None:
    """The relay's answers: their events, each log's Message-ID and retry, claims released."""
    apply_log_events(session, now, events)
    if relayed:
        session.connection().execute(
            _RECORD,
            [
                {"log_id": r.log_id, "message_id": r.message_id, "retry_at": r.retry_at}
                for r in relayed
            ],
        )


def record_unrenderable(
    session: Session, now: datetime, reasons: Sequence[tuple[int, str]]
) -> None:
    """A message that no longer renders is not sent: Ignored, with the reason kept."""
    apply_log_events(
        session, now, [LogEvent(i, Event.CANCELLED, diagnostic=why) for i, why in reasons]
    )
    release(session, [i for i, _ in reasons])


def cancel_unsent(session: Session, now: datetime, execution_id: int, include_claimed: bool) -> int:
    """Queued logs become Ignored (never relayed); claimed ones only when `include_claimed`
    (their sender is done with them, or will find its send over)."""
    stmt = select(SendingLog.id).where(
        SendingLog.execution_id == execution_id, SendingLog.status == LogStatus.QUEUED
    )
    if not include_claimed:
        stmt = stmt.where(SendingLog.claim_token.is_(None))
    ids = list(session.scalars(stmt))
    apply_log_events(session, now, [LogEvent(i, Event.CANCELLED) for i in ids])
    return len(ids)


def open_past_validity(session: Session, now: datetime, limit: int) -> list[int]:
    """Logs not yet final of executions whose validity period has ended (a chunk)."""
    return list(
        session.scalars(
            select(SendingLog.id)
            .join(Execution, Execution.id == SendingLog.execution_id)
            .where(
                Execution.validity_ends_at <= now,
                SendingLog.final.is_(False),
                SendingLog.failure_type.is_distinct_from(FailureType.HARD),
                SendingLog.claim_token.is_(None),
            )
            .limit(limit)
        )
    )


def relayed_since(session: Session, execution_ids: Sequence[int], since: datetime) -> int:
    """Messages of these executions relayed after `since` (a range of an index)."""
    if not execution_ids:
        return 0
    return (
        session.scalar(
            select(func.count())
            .select_from(SendingLog)
            .where(SendingLog.execution_id.in_(execution_ids), SendingLog.relayed_at > since)
        )
        or 0
    )


def recipients(
    session: Session, profile_ids: Sequence[int]
) -> dict[int, tuple[str | None, str | None, str | None, dict[str, Any]]]:
    """(first name, last name, time zone, attributes) of the profiles a batch goes to."""
    rows = session.execute(
        select(
            Profile.id, Profile.first_name, Profile.last_name, Profile.timezone, Profile.attributes
        ).where(Profile.id.in_(profile_ids))
    )
    return {r[0]: (r[1], r[2], r[3], r[4] or {}) for r in rows}
