"""The hourly digests: one row per slot (unique), its snapshots and the parts to post.

The unique slot is what makes several schedulers post a digest once: the process that
moves the row from `pending` to `posting` (compare-and-set) posts it; a claim left by
a process that died is taken over after LEASE.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from bot.domain.digest import DigestPartKind, DigestState
from bot.domain.kpi import Counters
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import Delivery, Digest, DigestPart, DigestSnapshot, Execution, KpiCounter

LEASE = timedelta(minutes=10)


def state_of(session: Session, slot: datetime) -> DigestState | None:
    return session.scalar(select(Digest.state).where(Digest.slot_at == slot))


def _claimable(now: datetime) -> ColumnElement[bool]:
    return or_(
        Digest.state == DigestState.PENDING,
        and_(Digest.state == DigestState.POSTING, Digest.claimed_at < now - LEASE),
    )


def open_slot(session: Session, slot: datetime, channel: str, now: datetime) -> None:
    """The slot's row exists (pending unless another process got there); older ones that
    were never posted are superseded: only the latest digest is ever due."""
    session.execute(
        update(Digest)
        .where(Digest.slot_at < slot, _claimable(now))
        .values(state=DigestState.SUPERSEDED, claim_token=None)
    )
    session.execute(
        insert_ignoring_conflicts(session, Digest).values(
            slot_at=slot, channel=channel, state=DigestState.PENDING, created_at=now, attempts=0
        )
    )


def claim(session: Session, slot: datetime, now: datetime) -> tuple[int, str] | None:
    """Take the slot's digest for this process: (digest id, claim token), or None."""
    token = secrets.token_hex(16)
    claimed = session.execute(
        update(Digest)
        .where(Digest.slot_at == slot, _claimable(now))
        .values(
            state=DigestState.POSTING,
            claim_token=token,
            claimed_at=now,
            attempts=Digest.attempts + 1,
        )
        .returning(Digest.id)
    ).scalar_one_or_none()
    return (claimed, token) if claimed is not None else None


def release(session: Session, digest_id: int, token: str, **values: Any) -> None:
    session.execute(
        update(Digest)
        .where(Digest.id == digest_id, Digest.claim_token == token)
        .values(claim_token=None, **values)
    )


def held(session: Session, digest_id: int, token: str) -> Digest | None:
    """The digest, locked, if this process still holds its claim."""
    digest = session.get(Digest, digest_id, with_for_update=True)
    if digest is None or digest.claim_token != token:
        return None
    return digest


def channel_of(session: Session, digest_id: int) -> str | None:
    return session.scalar(select(Digest.channel).where(Digest.id == digest_id))


@dataclass(frozen=True)
class ActiveExecution:
    execution_id: int
    ref: str
    name: str
    key: str
    validity_ends_at: datetime
    counters: Counters


def active_executions(session: Session, now: datetime) -> list[ActiveExecution]:
    """Every started execution still inside its validity period, largest first, one query."""
    rows = session.execute(
        select(
            Execution.id,
            Execution.key,
            Execution.validity_ends_at,
            Delivery.ref,
            Delivery.name,
            KpiCounter.to_deliver,
            KpiCounter.pending,
            KpiCounter.sent,
            KpiCounter.failed,
            KpiCounter.unique_opens,
            KpiCounter.unique_clicks,
        )
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .outerjoin(KpiCounter, KpiCounter.execution_id == Execution.id)
        .where(Execution.started_at.is_not(None), Execution.validity_ends_at > now)
    ).all()
    active = [
        ActiveExecution(
            execution_id=r[0],
            key=r[1],
            validity_ends_at=r[2],
            ref=r[3],
            name=r[4],
            counters=Counters(
                to_deliver=r[5] or 0,
                pending=r[6] or 0,
                sent=r[7] or 0,
                failed=r[8] or 0,
                unique_opens=r[9] or 0,
                unique_clicks=r[10] or 0,
            ),
        )
        for r in rows
        if r[2] is not None  # always: the query asks for an end after now
    ]
    active.sort(key=lambda a: (-a.counters.relayed, -a.counters.to_deliver, a.ref, a.key))
    return active


def _snapshot_counters(row: DigestSnapshot) -> Counters:
    return Counters(
        to_deliver=row.to_deliver,
        pending=row.pending,
        sent=row.sent,
        failed=row.failed,
        unique_opens=row.unique_opens,
        unique_clicks=row.unique_clicks,
    )


def previous_posted(session: Session, slot: datetime) -> tuple[datetime, int] | None:
    """The latest digest posted before `slot`: what readers last saw, the base of changes."""
    row = session.execute(
        select(Digest.slot_at, Digest.id)
        .where(Digest.slot_at < slot, Digest.state == DigestState.POSTED)
        .order_by(Digest.slot_at.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def snapshots(session: Session, digest_id: int) -> dict[int, Counters]:
    return {
        row.execution_id: _snapshot_counters(row)
        for row in session.scalars(
            select(DigestSnapshot).where(DigestSnapshot.digest_id == digest_id)
        )
    }


def history(
    session: Session, execution_ids: Sequence[int], before: datetime
) -> dict[int, list[tuple[datetime, Counters]]]:
    """Each execution's counters in every digest posted before `before`, oldest first."""
    found: dict[int, list[tuple[datetime, Counters]]] = {i: [] for i in execution_ids}
    if not execution_ids:
        return found
    rows = session.execute(
        select(Digest.slot_at, DigestSnapshot)
        .join(Digest, Digest.id == DigestSnapshot.digest_id)
        .where(
            DigestSnapshot.execution_id.in_(list(execution_ids)),
            Digest.state == DigestState.POSTED,
            Digest.slot_at < before,
        )
        .order_by(Digest.slot_at)
    ).all()
    for at, snap in rows:
        found[snap.execution_id].append((at, _snapshot_counters(snap)))
    return found


def store_built(
    session: Session,
    digest: Digest,
    now: datetime,
    active: Sequence[ActiveExecution],
    parts: Sequence[tuple[DigestPartKind, dict[str, Any]]],
) -> None:
    """What the first attempt built: every execution's counters, and the parts to post."""
    digest.built_at = now
    if active:
        session.execute(
            insert(DigestSnapshot),
            [
                {"digest_id": digest.id, "execution_id": a.execution_id, **_stored(a.counters)}
                for a in active
            ],
        )
    if parts:
        session.execute(
            insert(DigestPart),
            [
                {"digest_id": digest.id, "seq": i, "kind": kind, "payload": payload}
                for i, (kind, payload) in enumerate(parts)
            ],
        )


def empty(session: Session, digest: Digest, token: str, now: datetime) -> None:
    """Nothing was active at the slot: nothing is posted, and no one will try again."""
    release(session, digest.id, token, state=DigestState.EMPTY, built_at=now)
    session.refresh(digest)


def _stored(c: Counters) -> dict[str, int]:
    return {
        "to_deliver": c.to_deliver,
        "pending": c.pending,
        "sent": c.sent,
        "failed": c.failed,
        "unique_opens": c.unique_opens,
        "unique_clicks": c.unique_clicks,
    }


def prune(session: Session, before: datetime) -> None:
    """Delete the snapshots and parts of digests older than `before` (the rows stay)."""
    old = select(Digest.id).where(Digest.slot_at < before).scalar_subquery()
    session.execute(delete(DigestSnapshot).where(DigestSnapshot.digest_id.in_(old)))
    session.execute(delete(DigestPart).where(DigestPart.digest_id.in_(old)))


def unposted(session: Session, digest_id: int) -> list[tuple[int, DigestPartKind, dict[str, Any]]]:
    return [
        (p.id, p.kind, p.payload)
        for p in session.scalars(
            select(DigestPart)
            .where(DigestPart.digest_id == digest_id, DigestPart.slack_ref.is_(None))
            .order_by(DigestPart.seq)
        )
    ]


def record_part(
    session: Session, digest_id: int, token: str, part_id: int, ref: str, now: datetime
) -> None:
    """The part is in Slack: never post it again; and the claim is still alive."""
    session.execute(
        update(DigestPart)
        .where(DigestPart.id == part_id, DigestPart.slack_ref.is_(None))
        .values(slack_ref=ref, posted_at=now)
    )
    session.execute(
        update(Digest)
        .where(Digest.id == digest_id, Digest.claim_token == token)
        .values(claimed_at=now)
    )
