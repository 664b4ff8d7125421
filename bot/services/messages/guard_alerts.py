"""The send guard's alerts, posted in the delivery's channel through the port.

The guard writes its alert with its pause (`services.deliveries.guard`), in the
sending process, which may have no Slack client at all (the embedded sender's child).
Whoever follows the send posts it: the Deployment follower after each batch it hears
of (`DeploymentFollower.refresh_execution`), and its reconcile step, for the alerts
that Slack missed. Each alert is claimed before it is posted (two followers never
post it together), marked posted with where it is, and audited as `guard`; a failed
post releases it for the next try. An alert older than a day is left as it is.

A posted alert is drawn again when its delivery moves on (`sync_alerts`: a Resume
or a Stop, from the alert, the Deployment message or the command line), so that its
buttons are those of the state, as the Deployment message's are: the state it was
last drawn for is kept with it, and an update is made only when that differs, by
one process at a time (the same claim as posting's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from bot.context import Context, Session
from bot.domain.guard import GuardPolicy
from bot.services.deliveries.guard_views import GuardAlertView
from bot.services.deliveries.lifecycle import GUARD_ACTOR
from bot.services.notifications import NotificationFailed, Notifications
from bot.store import audit, counters, executions, guard
from bot.store.models import GuardAlert

log = logging.getLogger(__name__)

ALERT_WINDOW = timedelta(days=1)


async def post_alerts(
    ctx: Context, notifications: Notifications, execution_id: int | None = None
) -> int:
    """Post the guard's alerts not yet posted (of one execution, or all); how many."""
    if not notifications.connected:
        return 0
    waiting = await asyncio.to_thread(_waiting, ctx, execution_id)
    return await _draw_each(ctx, notifications, waiting, _take)


async def sync_alerts(ctx: Context, notifications: Notifications, ref: str | None = None) -> int:
    """Draw again the posted alerts (of `ref`, or all) whose delivery changed state since
    they were drawn; how many were updated. A failed update is tried at the next sync."""
    if not notifications.connected:
        return 0
    outdated = await asyncio.to_thread(_outdated, ctx, ref)
    return await _draw_each(ctx, notifications, outdated, _take_drawn)


Taken = tuple[GuardAlertView, str, str | None]  # the view, its channel, its ts if posted


async def _draw_each(
    ctx: Context,
    notifications: Notifications,
    alert_ids: list[int],
    take: Callable[[Context, int], Taken | None],
) -> int:
    """Claim each alert (`take`), post it or update it in place, record where and what
    it shows; a failure gives the claim back for the next try. How many were drawn."""
    done = 0
    for alert_id in alert_ids:
        taken = await asyncio.to_thread(take, ctx, alert_id)
        if taken is None:
            continue  # drawn already, or being drawn, by another process
        view, channel, ts = taken
        try:
            where = await notifications.guard_alert(view, channel, ts)
        except NotificationFailed as exc:
            what = "updated" if ts else "posted"
            log.warning("guard alert of %s not %s (%s); tried again later", view.ref, what, exc)
            await asyncio.to_thread(_release, ctx, alert_id)
            continue
        if ts is None:
            await asyncio.to_thread(_posted, ctx, alert_id, view, where.channel, where.ts)
        else:
            await asyncio.to_thread(_shown, ctx, alert_id, view)
        done += 1
    return done


def _waiting(ctx: Context, execution_id: int | None) -> list[int]:
    with ctx.sessions() as s:
        return guard.unposted(s, ctx.clock.now() - ALERT_WINDOW, execution_id)


def _outdated(ctx: Context, ref: str | None) -> list[int]:
    with ctx.sessions() as s:
        return guard.outdated(s, ctx.clock.now() - ALERT_WINDOW, ref)


def _view(s: Session, alert: GuardAlert) -> GuardAlertView:
    e = executions.get(s, alert.execution_id)
    d = e.delivery
    policy = alert.policy
    return GuardAlertView(
        ref=d.ref,
        name=d.name,
        execution_key=e.key,
        state=d.state,
        tripped_at=alert.tripped_at,
        counted=alert.counted,
        failed=alert.failed,
        policy=GuardPolicy(float(policy["rate"]), int(policy["window"]), int(policy["minimum"])),
        reasons=tuple((str(r), int(n)) for r, n in alert.reasons),
        domains=tuple((str(r), int(n)) for r, n in alert.domains),
        queued=counters.live_counters(s, e.id).queued,
    )


def _take(ctx: Context, alert_id: int) -> Taken | None:
    with ctx.sessions.begin() as s:
        alert = guard.claim_alert(s, alert_id, ctx.clock.now())
        if alert is None or alert.channel is None:
            return None
        return _view(s, alert), alert.channel, None


def _take_drawn(ctx: Context, alert_id: int) -> Taken | None:
    with ctx.sessions.begin() as s:
        alert = guard.claim_redraw(s, alert_id, ctx.clock.now())
        if alert is None or alert.channel is None or alert.ts is None:
            return None
        view = _view(s, alert)
        if alert.shown_state == view.state.value:
            guard.release_alert(s, alert_id)  # drawn meanwhile by the process before
            return None
        return view, alert.channel, alert.ts


def _release(ctx: Context, alert_id: int) -> None:
    with ctx.sessions.begin() as s:
        guard.release_alert(s, alert_id)


def _shown(ctx: Context, alert_id: int, view: GuardAlertView) -> None:
    with ctx.sessions.begin() as s:
        guard.shown(s, alert_id, view.state.value)


def _posted(ctx: Context, alert_id: int, view: GuardAlertView, channel: str, ts: str) -> None:
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        guard.posted(s, alert_id, channel, ts, now, view.state.value)
        audit.record(
            s,
            now,
            actor=GUARD_ACTOR,
            action="guard.alert",
            subject_kind="delivery",
            subject_ref=view.ref,
            detail={
                "execution": view.execution_key,
                "channel": channel,
                "ts": ts,
                "rate": round(view.rate, 4),
                "failed": view.failed,
                "counted": view.counted,
            },
        )
