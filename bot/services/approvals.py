"""Approving or skipping an occurrence of a recurring delivery (SPEC section 4).

A decision is taken in one transaction that starts by locking the request with a
guarded `UPDATE … WHERE state = 'open'` (the write lock on SQLite, the row lock on
PostgreSQL): two people clicking at once, a double click and Slack's retry of a
click are serialised, and exactly one of them decides. With `approvals_required: N`
each person's approval is one row (unique per request and person), and the click
that brings the N-th distinct approver decides. Every click, refused ones included,
goes to the audit log.

The Slack message is not changed here: the request's `version` grows, and
`sync_messages` brings the message up to date (right after the click, or at the
next tick if Slack failed), so a decision is never lost because Slack was down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bot.blocks.approval import approval_request
from bot.context import Context
from bot.domain.approval import Ballot, Choice, RequestState, Result, cast
from bot.domain.errors import PermissionDenied
from bot.domain.roles import Permission, Role, require
from bot.services import audit
from bot.services.errors import NotFound
from bot.services.recurring import ExecutionState, start_execution
from bot.services.reporting import delivery_detail
from bot.services.sending import cancel_unsent
from bot.store.models import (
    ApprovalRequest,
    ApprovalVote,
    Delivery,
    ExclusionLog,
    Execution,
    KpiCounter,
)

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

APPROVE = "approve"
SKIP = "skip"
POSTING_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class Decision:
    """What a click did.

    `outcome`: "approved" (this click decided: the occurrence is sent), "skipped",
    "recorded" (an approval counted, the quorum is not reached yet), "already-voted"
    (this person had approved already), or "decided" (someone decided before: see
    `state`, `by`, `at`).
    """

    request_id: int
    ref: str
    key: str
    outcome: str
    state: str
    approvals: int
    required: int
    by: list[str] = field(default_factory=list)
    at: datetime | None = None


def _find(session: Session, ref: str, key: str) -> tuple[ApprovalRequest, Execution, Delivery]:
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


def _voters(session: Session, request_id: int) -> list[tuple[str, datetime]]:
    return [
        (user, at)
        for user, at in session.execute(
            select(ApprovalVote.user_id, ApprovalVote.at)
            .where(ApprovalVote.request_id == request_id)
            .order_by(ApprovalVote.at, ApprovalVote.id)
        )
    ]


def _audit_click(
    session: Session, ctx: Context, user: str, ref: str, key: str, **detail: Any
) -> None:
    audit.record(
        session,
        ctx.clock,
        actor=user,
        action="approval.click",
        subject_kind="delivery",
        subject_ref=ref,
        detail={"occurrence": key, **detail},
    )


def decide(
    ctx: Context, ref: str, key: str, user: str, roles: Iterable[Role], choice: str
) -> Decision:
    """Approve or skip occurrence `key` of `ref` for `user`, checked at the click.

    Raises PermissionDenied (recorded in the audit log) for someone without
    `start-deliveries`, NotFound for a request that does not exist.
    """
    if choice not in (APPROVE, SKIP):
        raise ValueError(f"unknown choice {choice!r}")
    # The rule itself is bot.domain.approval.cast; this stores what it decided.
    permission = Permission.APPROVE if choice == APPROVE else Permission.SKIP
    try:
        require(roles, permission)
    except PermissionDenied:
        with ctx.sessions.begin() as s:
            _audit_click(s, ctx, user, ref, key, choice=choice, result="refused: no role")
        raise
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        request, execution, delivery = _find(s, ref, key)
        # The lock first: clicks on one request are applied one at a time.
        s.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request.id, ApprovalRequest.state == "open")
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
        s.refresh(request)
        voters = [u for u, _ in _voters(s, request.id)]
        before = Ballot(
            RequestState(request.state),
            request.required,
            tuple(voters),
            tuple(request.decided_by or ()),
        )
        result, after = cast(before, user, Choice(choice))
        if result is Result.DECIDED:
            detail = f"already {request.state}"
        elif result is Result.ALREADY_VOTED:
            detail = "already approved by them"
        elif result is Result.RECORDED:
            detail = f"approval {len(after.approvers)} of {after.required}"
        elif result is Result.SKIPPED:
            detail = "skipped"
        else:
            detail = "approved: sending"
        _audit_click(s, ctx, user, ref, key, choice=choice, result=detail)
        if result in (Result.RECORDED, Result.APPROVED):
            s.add(ApprovalVote(request_id=request.id, user_id=user, at=now))
        if result in (Result.RECORDED, Result.APPROVED, Result.SKIPPED):
            request.version += 1  # the message in Slack must show it
        if result in (Result.SKIPPED, Result.APPROVED):
            request.state = after.state.value
            request.decided_by = list(after.decided_by)
            request.decided_at = now
        if result is Result.SKIPPED:
            execution.state = ExecutionState.SKIPPED
            execution.finished_at = now
            cancel_unsent(s, now, execution.id, include_claimed=True, reason="skipped")
        elif result is Result.APPROVED:
            start_execution(s, now, delivery, execution.id)
        return Decision(
            request.id,
            ref,
            key,
            result.value,
            after.state.value,
            len(after.approvers),
            after.required,
            list(after.decided_by),
            request.decided_at if after.state is not RequestState.OPEN else None,
        )


def stop_requests(session: Session, now: datetime, delivery_id: int, reason: str) -> int:
    """Close the open requests of a delivery that was stopped: their buttons go."""
    return session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.delivery_id == delivery_id, ApprovalRequest.state == "open")
        .values(
            state="expired",
            reason=reason,
            decided_at=now,
            version=ApprovalRequest.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount


# --- the Slack message --------------------------------------------------------------


def request_message(ctx: Context, request_id: int) -> tuple[dict[str, Any], int]:
    """The request's Slack message as it should look now, and the version it shows."""
    with ctx.sessions() as s:
        request = s.get(ApprovalRequest, request_id)
        if request is None:
            raise NotFound(f"no approval request {request_id}")
        execution = s.get(Execution, request.execution_id)
        assert execution is not None
        ref = s.scalar(select(Delivery.ref).where(Delivery.id == request.delivery_id))
        to_deliver = s.scalar(
            select(KpiCounter.to_deliver).where(KpiCounter.execution_id == execution.id)
        )
        exclusions = dict(
            s.execute(
                select(ExclusionLog.reason, func.count())
                .where(ExclusionLog.execution_id == execution.id)
                .group_by(ExclusionLog.reason)
            ).all()
        )
        approvals = [{"user": u, "at": at} for u, at in _voters(s, request.id)]
        decided = None
        if request.state != "open":
            decided = {
                "decision": request.state,
                "by": list(request.decided_by or []),
                "at": request.decided_at,
                "reason": request.reason,
            }
        occurrence = {
            "key": execution.key,
            "occurrence_at": request.occurrence_at,
            "to_deliver": int(to_deliver or 0),
            "exclusions": exclusions,
        }
        version, required = request.version, request.required
    detail = delivery_detail(ctx, str(ref))
    return approval_request(detail, occurrence, approvals, required, decided), version


def _unsynced(ctx: Context, only: int | None) -> list[int]:
    with ctx.sessions() as s:
        stmt = select(ApprovalRequest.id).where(
            ApprovalRequest.channel.is_not(None),
            or_(
                (ApprovalRequest.ts.is_(None)) & (ApprovalRequest.state == "open"),
                (ApprovalRequest.ts.is_not(None))
                & (ApprovalRequest.synced_version < ApprovalRequest.version),
            ),
        )
        if only is not None:
            stmt = stmt.where(ApprovalRequest.id == only)
        return list(s.scalars(stmt.order_by(ApprovalRequest.id)))


def _claim_post(ctx: Context, request_id: int) -> bool:
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        return bool(
            s.execute(
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
            ).rowcount
        )


def _posted(ctx: Context, request_id: int, channel: str, ts: str, version: int) -> None:
    with ctx.sessions.begin() as s:
        s.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request_id)
            .values(channel=channel, ts=ts, posting_at=None, synced_version=version)
        )


def _release_post(ctx: Context, request_id: int) -> None:
    with ctx.sessions.begin() as s:
        s.execute(
            update(ApprovalRequest).where(ApprovalRequest.id == request_id).values(posting_at=None)
        )


def _synced(ctx: Context, request_id: int, version: int) -> None:
    with ctx.sessions.begin() as s:
        s.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id == request_id, ApprovalRequest.synced_version < version)
            .values(synced_version=version)
        )


def _where(ctx: Context, request_id: int) -> tuple[str | None, str | None]:
    with ctx.sessions() as s:
        row = s.execute(
            select(ApprovalRequest.channel, ApprovalRequest.ts).where(
                ApprovalRequest.id == request_id
            )
        ).one()
        return row[0], row[1]


async def sync_messages(ctx: Context, slack: AsyncWebClient | None, only: int | None = None) -> int:
    """Post open requests not posted yet and update those whose message is out of date.

    Without Slack (None) nothing happens: requests wait, and are posted once Slack is
    connected (if still open). A Slack error leaves the request for the next tick.
    Returns the number of Slack calls that succeeded.
    """
    import asyncio

    from slack_sdk.errors import SlackApiError

    if slack is None:
        return 0
    done = 0
    for request_id in await asyncio.to_thread(_unsynced, ctx, only):
        channel, ts = await asyncio.to_thread(_where, ctx, request_id)
        if channel is None:
            continue
        if ts is None and not await asyncio.to_thread(_claim_post, ctx, request_id):
            continue
        try:
            message, version = await asyncio.to_thread(request_message, ctx, request_id)
            if ts is None:
                resp = await slack.chat_postMessage(channel=channel, **message)
                await asyncio.to_thread(
                    _posted, ctx, request_id, resp["channel"], resp["ts"], version
                )
            else:
                await slack.chat_update(channel=channel, ts=ts, **message)
                await asyncio.to_thread(_synced, ctx, request_id, version)
            done += 1
        except Exception as exc:  # Slack down or refusing: the next tick tries again
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            log.warning("approval request %s not synced to Slack: %s", request_id, error)
            if ts is None:
                await asyncio.to_thread(_release_post, ctx, request_id)
    return done
