"""Sending logs: claims for relaying, recording what the relay said, and their ends.

A log is claimed (an atomic UPDATE that names the claim's token) before its message
is relayed and released in the same write that records the relay's answer, so two
senders never relay one log, and after a crash the logs still claimed are the only
ones that may have reached the relay without their answer being recorded.

Every write a sender makes about its claimed logs names its token and is refused
(`ClaimLost`) when the logs are no longer its own: a sender whose claim was taken over
(it stalled, was stopped, lost its network) records nothing over the new owner's work.
Who may take a claim over is decided above (`bot.engine.claims`): this module only
releases the tokens it is told to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from bot.domain.logs import Event, FailureType, LogEvent, LogStatus
from bot.store.db import bound_idle
from bot.store.models import Delivery, Execution, Profile, SendingLog, table
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
    """Atomically take the next queued logs of the execution for the sender `token`:
    those whose wave has come (a recipient-local send), or all."""
    return _take(
        session,
        [SendingLog.status == LogStatus.QUEUED, due_now(now)],
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
    bound_idle(session)
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


class ClaimLost(Exception):
    """The logs are no longer claimed by this token: another sender has taken them over."""


def release_tokens(session: Session, prefix: str | None = None) -> list[int]:
    """Free the claims whose token starts with `prefix` (all claims with None); the
    executions they were in. Those logs will be sent (again)."""
    stmt = select(SendingLog.execution_id).where(SendingLog.claim_token.is_not(None))
    if prefix is not None:
        stmt = stmt.where(SendingLog.claim_token.startswith(prefix, autoescape=True))
    executions = sorted(set(session.scalars(stmt.distinct())))
    if executions:
        freed = update(SendingLog).where(SendingLog.claim_token.is_not(None))
        if prefix is not None:
            freed = freed.where(SendingLog.claim_token.startswith(prefix, autoescape=True))
        session.execute(
            freed.values(claim_token=None, claimed_at=None).execution_options(
                synchronize_session=False
            )
        )
    return executions


def _held(session: Session, log_ids: Sequence[int], token: str) -> None:
    """Lock the logs and check they are all still claimed by `token`, or `ClaimLost`."""
    bound_idle(session)
    ids = sorted(set(log_ids))
    query = select(SendingLog.id).where(SendingLog.id.in_(ids), SendingLog.claim_token == token)
    held = set(session.scalars(query.with_for_update()))
    if len(held) != len(ids):
        raise ClaimLost(f"{len(ids) - len(held)} of {len(ids)} logs are no longer claimed")


def due_now(now: datetime) -> ColumnElement[bool]:
    """A queued log the sender may take at `now`: no wave, or its wave has come."""
    return or_(SendingLog.send_at.is_(None), SendingLog.send_at <= now)


def waits_for_wave(now: datetime) -> ColumnElement[bool]:
    """A queued log whose wave comes after `now`: its execution is not finished yet."""
    return and_(SendingLog.status == LogStatus.QUEUED, SendingLog.send_at > now)


def waiting_for_wave(session: Session, execution_id: int, now: datetime) -> bool:
    """Queued logs of the execution wait for a later wave."""
    query = select(SendingLog.id).where(
        SendingLog.execution_id == execution_id, waits_for_wave(now)
    )
    return session.scalar(query.limit(1)) is not None


def by_wave(session: Session, execution_id: int) -> dict[datetime, tuple[int, int]]:
    """Per wave of a recipient-local send: (still queued, never to be sent: Ignored)."""
    rows = session.execute(
        select(SendingLog.send_at, SendingLog.status, func.count())
        .where(
            SendingLog.execution_id == execution_id,
            SendingLog.status.in_([LogStatus.QUEUED, LogStatus.IGNORED]),
            SendingLog.send_at.is_not(None),
        )
        .group_by(SendingLog.send_at, SendingLog.status)
    ).all()
    found: dict[datetime, tuple[int, int]] = {}
    for at, status, n in rows:
        if at is None:
            continue
        queued, ignored = found.get(at, (0, 0))
        found[at] = (queued + n, ignored) if status == LogStatus.QUEUED else (queued, ignored + n)
    return found


def claimed_count(session: Session, execution_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(SendingLog)
            .where(SendingLog.execution_id == execution_id, SendingLog.claim_token.is_not(None))
        )
        or 0
    )


def release(session: Session, log_ids: Iterable[int], token: str) -> None:
    """Give back logs this token claimed and did not relay (a pause, an outage, a stop)."""
    ids = list(log_ids)
    if ids:
        session.execute(
            update(SendingLog)
            .where(SendingLog.id.in_(ids), SendingLog.claim_token == token)
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
        answered_at=bindparam("answered_at"),
        claim_token=None,
        claimed_at=None,
    )
)


def record_relayed(
    session: Session,
    now: datetime,
    events: Sequence[LogEvent],
    relayed: Sequence[Relayed],
    token: str,
) -> None:
    """The relay's answers: their events, each log's Message-ID and retry, claims released.

    Only while `token` still holds every one of these logs (`ClaimLost` otherwise).
    The executemany UPDATEs (pipelined on PostgreSQL) come before the counters: a
    sender stopped in the middle of a pipeline (SIGSTOP, a cut link), where no idle
    timeout applies, then holds only its own logs, not the counter row the other
    senders of the execution wait for.
    """
    _held(session, [r.log_id for r in relayed], token)
    if relayed:
        session.connection().execute(
            _RECORD,
            [
                {
                    "log_id": r.log_id,
                    "message_id": r.message_id,
                    "retry_at": r.retry_at,
                    "answered_at": now,
                }
                for r in relayed
            ],
        )
    # The events last: they end with the execution's counters, the one row every
    # sender of the execution writes (`apply_log_events`).
    apply_log_events(session, now, events)


def record_unrenderable(
    session: Session, now: datetime, reasons: Sequence[tuple[int, str]], token: str
) -> None:
    """A message that no longer renders is not sent: Ignored, with the reason kept."""
    _held(session, [i for i, _ in reasons], token)
    apply_log_events(
        session, now, [LogEvent(i, Event.CANCELLED, diagnostic=why) for i, why in reasons]
    )
    release(session, [i for i, _ in reasons], token)


def cancel_unsent(
    session: Session,
    now: datetime,
    execution_id: int,
    include_claimed: bool,
    claimed_by: str | None = None,
) -> int:
    """Queued logs become Ignored (never relayed): the unclaimed ones, those claimed by
    `claimed_by`, and every claimed one when `include_claimed` (nobody sends them)."""
    stmt = select(SendingLog.id).where(
        SendingLog.execution_id == execution_id, SendingLog.status == LogStatus.QUEUED
    )
    if not include_claimed:
        stmt = stmt.where(
            or_(SendingLog.claim_token.is_(None), SendingLog.claim_token == claimed_by)
            if claimed_by
            else SendingLog.claim_token.is_(None)
        )
    ids = list(session.scalars(stmt))
    apply_log_events(session, now, [LogEvent(i, Event.CANCELLED) for i in ids])
    if ids:  # an Ignored log is nobody's to send
        session.execute(
            update(SendingLog)
            .where(SendingLog.id.in_(ids), SendingLog.claim_token.is_not(None))
            .values(claim_token=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
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


@dataclass(frozen=True)
class MessageSource:
    """What one sent message was made of: its delivery's templates and its recipient."""

    log_id: int
    email: str
    ref: str
    name: str
    sender: str
    reply_to: str | None
    subject: str
    html: str | None
    text: str | None
    first_name: str | None
    last_name: str | None
    timezone: str | None
    attributes: dict[str, Any]


def message_source(session: Session, log_id: int) -> MessageSource | None:
    """The delivery and the profile of sending log `log_id`, in one query (the web
    version of that message); None when there is no such log."""
    row = session.execute(
        select(
            SendingLog.id,
            SendingLog.email,
            Delivery.ref,
            Delivery.name,
            Delivery.sender,
            Delivery.reply_to,
            Delivery.subject,
            Delivery.html,
            Delivery.text,
            Profile.first_name,
            Profile.last_name,
            Profile.timezone,
            Profile.attributes,
        )
        .join(Execution, Execution.id == SendingLog.execution_id)
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .join(Profile, Profile.id == SendingLog.profile_id)
        .where(SendingLog.id == log_id)
    ).one_or_none()
    if row is None:
        return None
    return MessageSource(
        log_id=row.id,
        email=row.email,
        ref=row.ref,
        name=row.name,
        sender=row.sender,
        reply_to=row.reply_to,
        subject=row.subject,
        html=row.html,
        text=row.text,
        first_name=row.first_name,
        last_name=row.last_name,
        timezone=row.timezone,
        attributes=row.attributes or {},
    )
