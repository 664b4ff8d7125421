"""Approval requests of occurrences, their votes, and the state of their Slack message.

A request's state changes by compare-and-set from `open`; the first write of a click's
transaction is that guarded UPDATE (the write lock on SQLite, the row lock on
PostgreSQL), so clicks on one request are applied one at a time. Each person's
approval is one row (unique per request and person): a quorum counts people.

`version` grows with every change a person could see; the message in Slack is up to
date when `synced_version` has caught up with it, so a message that could not be
posted or updated (Slack down, not connected) is brought up to date later, never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bot.domain.approval import RequestState
from bot.domain.errors import NotFound
from bot.domain.exclusions import ExclusionReason
from bot.store.db import affected
from bot.store.models import (
    ApprovalRequest,
    ApprovalVote,
    Delivery,
    ExclusionLog,
    Execution,
    KpiCounter,
)

# How long one process may take to post a request before another may post it instead.
POSTING_TIMEOUT = timedelta(minutes=5)


def find(session: Session, ref: str, key: str) -> tuple[ApprovalRequest, Execution, Delivery]:
    row = session.execute(
        select(ApprovalRequest, Execution, Delivery)
        .join(Execution, Execution.id == ApprovalRequest.execution_id)
        .join(Delivery, Delivery.id == ApprovalRequest.delivery_id)
        .where(Delivery.ref == ref, Execution.key == key)
    ).one_or_none()
    if row is None:
        raise NotFound(
            f"there is no approval request for occurrence {key} of {ref!r}; "
            "this button is out of date"
        )
    return row[0], row[1], row[2]


def get(session: Session, request_id: int) -> ApprovalRequest:
    request = session.get(ApprovalRequest, request_id)
    if request is None:
        raise NotFound(f"no approval request {request_id}")
    return request


def lock(session: Session, request: ApprovalRequest, now: datetime) -> ApprovalRequest:
    """Serialise the clicks on one request: the guarded UPDATE first, then a fresh read."""
    session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == request.id, ApprovalRequest.state == RequestState.OPEN)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(request)
    return request


def voters(session: Session, request_id: int) -> list[tuple[str, datetime]]:
    """(user, when) of each distinct approval, oldest first."""
    rows = session.execute(
        select(ApprovalVote.user_id, ApprovalVote.at)
        .where(ApprovalVote.request_id == request_id)
        .order_by(ApprovalVote.at, ApprovalVote.id)
    )
    return [(user, at) for user, at in rows]


def add_vote(session: Session, request_id: int, user: str, now: datetime) -> None:
    session.add(ApprovalVote(request_id=request_id, user_id=user, at=now))


def changed(session: Session, request_id: int, now: datetime) -> None:
    """Something a person can see changed: the Slack message must show it."""
    session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == request_id)
        .values(version=ApprovalRequest.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def close(
    session: Session,
    request_id: int,
    to: RequestState,
    by: Sequence[str],
    now: datetime,
    reason: str | None = None,
) -> bool:
    """Decide an open request (approved, skipped or expired); False when it was not open."""
    return bool(
        affected(
            session.execute(
                update(ApprovalRequest)
                .where(ApprovalRequest.id == request_id, ApprovalRequest.state == RequestState.OPEN)
                .values(
                    state=to,
                    decided_by=list(by),
                    decided_at=now,
                    reason=reason,
                    version=ApprovalRequest.version + 1,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
        )
    )


def create(
    session: Session,
    *,
    delivery: Delivery,
    execution_id: int,
    occurrence: datetime,
    expires_at: datetime,
    now: datetime,
) -> None:
    session.add(
        ApprovalRequest(
            execution_id=execution_id,
            delivery_id=delivery.id,
            occurrence_at=occurrence,
            required=max(delivery.approvals_required, 1),
            state=RequestState.OPEN,
            expires_at=expires_at,
            decided_by=[],
            channel=delivery.slack_channel,
            version=1,
            synced_version=0,
            created_at=now,
            updated_at=now,
        )
    )


def past_deadline(session: Session, now: datetime) -> list[tuple[int, int]]:
    """(request id, execution id) of open requests whose deadline has come."""
    rows = session.execute(
        select(ApprovalRequest.id, ApprovalRequest.execution_id).where(
            ApprovalRequest.state == RequestState.OPEN, ApprovalRequest.expires_at <= now
        )
    ).all()
    return [(r, e) for r, e in rows]


def open_of_delivery(session: Session, delivery_id: int) -> list[int]:
    return list(
        session.scalars(
            select(ApprovalRequest.id).where(
                ApprovalRequest.delivery_id == delivery_id,
                ApprovalRequest.state == RequestState.OPEN,
            )
        )
    )


# --- the Slack message -----------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """What the request's message shows, read in one session."""

    request_id: int
    ref: str
    key: str
    occurrence_at: datetime
    to_deliver: int
    exclusions: dict[ExclusionReason, int]
    approvals: list[tuple[str, datetime]]
    required: int
    state: RequestState
    decided_by: list[str]
    decided_at: datetime | None
    reason: str | None
    version: int


def facts(session: Session, request_id: int) -> RequestFacts:
    request = get(session, request_id)
    execution = session.get(Execution, request.execution_id)
    if execution is None:
        raise NotFound(f"no execution {request.execution_id}")
    ref = session.scalar(select(Delivery.ref).where(Delivery.id == request.delivery_id))
    to_deliver = session.scalar(
        select(KpiCounter.to_deliver).where(KpiCounter.execution_id == execution.id)
    )
    exclusions = {
        ExclusionReason(reason): count
        for reason, count in session.execute(
            select(ExclusionLog.reason, func.count())
            .where(ExclusionLog.execution_id == execution.id)
            .group_by(ExclusionLog.reason)
        )
    }
    return RequestFacts(
        request_id=request.id,
        ref=str(ref),
        key=execution.key,
        occurrence_at=request.occurrence_at,
        to_deliver=int(to_deliver or 0),
        exclusions=exclusions,
        approvals=voters(session, request.id),
        required=request.required,
        state=request.state,
        decided_by=[str(u) for u in request.decided_by or []],
        decided_at=request.decided_at,
        reason=request.reason,
        version=request.version,
    )


def unsynced(session: Session, only: int | None = None) -> list[int]:
    """Requests to post (open, not posted yet) or to update (message out of date)."""
    stmt = select(ApprovalRequest.id).where(
        ApprovalRequest.channel.is_not(None),
        or_(
            (ApprovalRequest.ts.is_(None)) & (ApprovalRequest.state == RequestState.OPEN),
            (ApprovalRequest.ts.is_not(None))
            & (ApprovalRequest.synced_version < ApprovalRequest.version),
        ),
    )
    if only is not None:
        stmt = stmt.where(ApprovalRequest.id == only)
    return list(session.scalars(stmt.order_by(ApprovalRequest.id)))


def location(session: Session, request_id: int) -> tuple[str | None, str | None]:
    """(channel, ts) of the request's message; ts None until it is posted."""
    row = session.execute(
        select(ApprovalRequest.channel, ApprovalRequest.ts).where(ApprovalRequest.id == request_id)
    ).one()
    return row[0], row[1]


def claim_post(session: Session, request_id: int, now: datetime) -> bool:
    """This process posts the message; another may only once POSTING_TIMEOUT has passed."""
    return bool(
        affected(
            session.execute(
                update(ApprovalRequest)
                .where(
                    ApprovalRequest.id == request_id,
                    ApprovalRequest.ts.is_(None),
                    or_(
                        ApprovalRequest.posting_at.is_(None),
                        ApprovalRequest.posting_at < now - POSTING_TIMEOUT,
                    ),
                )
                .values(posting_at=now)
                .execution_options(synchronize_session=False)
            )
        )
    )


def posted(session: Session, request_id: int, channel: str, ts: str, version: int) -> None:
    session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == request_id)
        .values(channel=channel, ts=ts, posting_at=None, synced_version=version)
    )


def release_post(session: Session, request_id: int) -> None:
    session.execute(
        update(ApprovalRequest).where(ApprovalRequest.id == request_id).values(posting_at=None)
    )


def synced(session: Session, request_id: int, version: int) -> None:
    session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == request_id, ApprovalRequest.synced_version < version)
        .values(synced_version=version)
    )


def open_requests(session: Session) -> list[tuple[str, str, datetime, int, int, datetime]]:
    """Every open request: (ref, key, occurrence, approvals so far, required, deadline),
    the soonest deadline first."""
    votes = (
        select(func.count())
        .select_from(ApprovalVote)
        .where(ApprovalVote.request_id == ApprovalRequest.id)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Delivery.ref,
            Execution.key,
            ApprovalRequest.occurrence_at,
            votes,
            ApprovalRequest.required,
            ApprovalRequest.expires_at,
        )
        .join(Execution, Execution.id == ApprovalRequest.execution_id)
        .join(Delivery, Delivery.id == ApprovalRequest.delivery_id)
        .where(ApprovalRequest.state == RequestState.OPEN)
        .order_by(ApprovalRequest.expires_at, ApprovalRequest.id)
    ).all()
    return [(r[0], r[1], r[2], int(r[3]), r[4], r[5]) for r in rows]


def open_ids(session: Session) -> list[int]:
    """The ids of every open request, the soonest deadline first (the Home tab's order)."""
    return list(
        session.scalars(
            select(ApprovalRequest.id)
            .where(ApprovalRequest.state == RequestState.OPEN)
            .order_by(ApprovalRequest.expires_at, ApprovalRequest.id)
        )
    )
