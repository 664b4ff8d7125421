"""What a preparation reads and writes: the audience as plain rows, the logs in bulk.

Phase 1 of a preparation streams the audience's columns (no ORM objects); phase 2
writes in one transaction whose first statement is the guarded UPDATE of the delivery
(`claim`), so a concurrent confirm, edit or preparation cannot slip in between what
phase 1 saw and what phase 2 writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.orm import Session

from bot.domain.exclusions import ExclusionReason
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import LogStatus
from bot.domain.quarantine import EmailStatus
from bot.store.db import affected
from bot.store.models import AudienceMember, Delivery, ExclusionLog, Profile, SendingLog

CHUNK = 5_000  # rows per bulk INSERT statement
READ_BATCH = 2_000  # rows fetched at a time while streaming the audience

_T = TypeVar("_T")


class Member(NamedTuple):
    id: int
    email: str
    email_key: str
    first_name: str | None
    last_name: str | None
    timezone: str | None
    attributes: dict[str, Any] | None
    email_status: EmailStatus


def member_count(session: Session, audience_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(AudienceMember)
            .where(AudienceMember.audience_id == audience_id)
        )
        or 0
    )


def _members(audience_id: int) -> Select[tuple[Any, ...]]:
    return (
        select(
            Profile.id,
            Profile.email,
            Profile.email_key,
            Profile.first_name,
            Profile.last_name,
            Profile.timezone,
            Profile.attributes,
            Profile.email_status,
        )
        .join(AudienceMember, AudienceMember.profile_id == Profile.id)
        .where(AudienceMember.audience_id == audience_id)
        .order_by(Profile.id)
    )


def members(session: Session, audience_id: int) -> Iterator[Member]:
    """The audience's profiles as plain rows, lowest id first, fetched in batches."""
    stmt = _members(audience_id).execution_options(yield_per=READ_BATCH)
    for row in session.execute(stmt):
        yield Member(*row)


def claim(session: Session, delivery_id: int, seen_hash: str, new_state: DeliveryState) -> bool:
    """Move the delivery to its new state only if it is as phase 1 saw it (state and content)."""
    return bool(
        affected(
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.state.in_([DeliveryState.EDITING, DeliveryState.READY]),
                    Delivery.definition_hash == seen_hash,
                )
                .values(state=new_state)
                .execution_options(synchronize_session=False)
            )
        )
    )


def _chunks(rows: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    """Slices of `rows`: the insert dicts are built one chunk at a time, not all at once."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def insert_logs(
    session: Session,
    now: datetime,
    execution_id: int,
    exclusions: Sequence[tuple[int, str, ExclusionReason]],
    recipients: Sequence[tuple[int, str]],
    send_at: Sequence[datetime] | None = None,
) -> None:
    """Bulk-insert exclusion logs and queued sending logs of the execution; `send_at`,
    when given, is each recipient's wave (a recipient-local send), in the same order."""
    for chunk in _chunks(exclusions):
        session.execute(
            insert(ExclusionLog),
            [
                {
                    "execution_id": execution_id,
                    "profile_id": pid,
                    "email": email,
                    "reason": reason,
                    "created_at": now,
                }
                for pid, email, reason in chunk
            ],
        )
    for start in range(0, len(recipients), CHUNK):
        batch = recipients[start : start + CHUNK]
        waves = send_at[start : start + CHUNK] if send_at is not None else [None] * len(batch)
        session.execute(
            insert(SendingLog),
            [
                {
                    "execution_id": execution_id,
                    "profile_id": pid,
                    "email": email,
                    "status": LogStatus.QUEUED,
                    "final": False,
                    "retry_count": 0,
                    "send_at": at,
                    "created_at": now,
                    "updated_at": now,
                }
                for (pid, email), at in zip(batch, waves, strict=True)
            ],
        )


def clear(session: Session, execution_id: int) -> None:
    """What a previous preparation wrote: its queued logs and its exclusion logs."""
    session.execute(
        delete(SendingLog).where(
            SendingLog.execution_id == execution_id, SendingLog.status == LogStatus.QUEUED
        )
    )
    session.execute(delete(ExclusionLog).where(ExclusionLog.execution_id == execution_id))


def exclusion_counts(session: Session, execution_id: int) -> dict[ExclusionReason, int]:
    rows = session.execute(
        select(ExclusionLog.reason, func.count())
        .where(ExclusionLog.execution_id == execution_id)
        .group_by(ExclusionLog.reason)
        .order_by(ExclusionLog.reason)
    ).all()
    return {ExclusionReason(reason): count for reason, count in rows}


def known(session: Session, execution_id: int) -> tuple[set[int], set[str]]:
    """Profiles the execution already holds a log of, and its recipients' address keys."""
    profiles = set(
        session.scalars(
            select(SendingLog.profile_id).where(SendingLog.execution_id == execution_id)
        )
    )
    profiles |= set(
        session.scalars(
            select(ExclusionLog.profile_id).where(ExclusionLog.execution_id == execution_id)
        )
    )
    keys = {
        email.lower()
        for email in session.scalars(
            select(SendingLog.email).where(SendingLog.execution_id == execution_id)
        )
    }
    return profiles, keys


def sample_member(session: Session, audience_id: int, email: str | None) -> Member | None:
    """The audience's profile with this address (letter case aside), or, without one,
    its first profile: the recipient a preview is rendered for."""
    stmt = _members(audience_id)
    if email is not None:
        stmt = stmt.where(Profile.email_key == email.lower())
    row = session.execute(stmt.limit(1)).first()
    return Member(*row) if row is not None else None
