"""The approval requests' messages in the delivery's channel, posted and kept up to date.

A request's `version` grows with every change a person could see (a vote, the
decision, the expiry); its message is up to date when the version it shows caught up.
`sync_requests` posts what is not posted yet and updates what is behind, right after a
click and at every tick, so a decision is never lost because Slack was down, and a
request that expired before Slack was connected is never posted.
"""

from __future__ import annotations

import asyncio
import logging

from bot.context import Context
from bot.domain.approval import RequestState
from bot.services.notifications import NotificationFailed, Notifications, Posted
from bot.services.recurring.views import Approval, ApprovalRequestView, Decided
from bot.store import approvals, deliveries

log = logging.getLogger(__name__)


def request_view(ctx: Context, request_id: int) -> tuple[ApprovalRequestView, int]:
    """The request's message as it should look now, and the version it shows."""
    with ctx.sessions() as s:
        f = approvals.facts(s, request_id)
        d = deliveries.get(s, f.ref)
    decided = None
    if f.state is not RequestState.OPEN:
        decided = Decided(f.state, f.decided_by, f.decided_at, f.reason)
    view = ApprovalRequestView(
        ref=f.ref,
        name=d.name,
        timezone=d.recurrence_timezone or d.schedule_timezone,
        key=f.key,
        occurrence_at=f.occurrence_at,
        to_deliver=f.to_deliver,
        exclusions=f.exclusions,
        approvals=[Approval(user, at) for user, at in f.approvals],
        required=f.required,
        decided=decided,
    )
    return view, f.version


async def sync_requests(ctx: Context, notifications: Notifications, only: int | None = None) -> int:
    """Post open requests not posted yet and update those whose message is out of date.

    Without a connection nothing happens: requests wait, and are posted once one is
    there (if still open). A failure leaves the request for the next tick. Returns
    the number of messages posted or updated. The database is used from a worker
    thread: this runs on the HTTP server's loop right after a click.
    """
    if not notifications.connected:
        return 0
    done = 0
    for request_id in await asyncio.to_thread(_pending, ctx, only):
        channel, ts = await asyncio.to_thread(_location, ctx, request_id)
        if channel is None:
            continue
        if ts is None and not await asyncio.to_thread(_claim_post, ctx, request_id):
            continue
        try:
            view, version = await asyncio.to_thread(request_view, ctx, request_id)
            posted = await notifications.approval_request(view, channel, ts)
        except NotificationFailed as exc:
            log.warning("approval request %s not synced to Slack: %s", request_id, exc.reason)
            if ts is None:
                await asyncio.to_thread(_release_post, ctx, request_id)
            continue
        await asyncio.to_thread(_synced, ctx, request_id, ts, posted, version)
        done += 1
    return done


def _pending(ctx: Context, only: int | None) -> list[int]:
    with ctx.sessions() as s:
        return approvals.unsynced(s, only)


def _location(ctx: Context, request_id: int) -> tuple[str | None, str | None]:
    with ctx.sessions() as s:
        return approvals.location(s, request_id)


def _claim_post(ctx: Context, request_id: int) -> bool:
    with ctx.sessions.begin() as s:
        return approvals.claim_post(s, request_id, ctx.clock.now())


def _release_post(ctx: Context, request_id: int) -> None:
    with ctx.sessions.begin() as s:
        approvals.release_post(s, request_id)


def _synced(ctx: Context, request_id: int, ts: str | None, posted: Posted, version: int) -> None:
    with ctx.sessions.begin() as s:
        if ts is None:
            approvals.posted(s, request_id, posted.channel, posted.ts, version)
        else:
            approvals.synced(s, request_id, version)
