"""The App Home tab: read for each viewer's roles, published again when what it shows changes.

A person's tab is published when they open it (`opened`) and then whenever something
it shows may have changed (`changed`: a confirm, a batch recorded, an approval, a
pause, a finish), for the people who opened it in the last day. `views.publish` is
rate-limited per user, so publishes are coalesced per person: at most one every
`min_interval` seconds, and the one that goes out reads the state at that moment (the
latest state wins; changes in between are not published one by one). A tab that
would look the same as the one last published is not published again. A sweep every
`sweep_interval` seconds catches what no hook tells this process about (an approval
request posted by the due work, a send finished by a worker of its own).

Nothing here is kept in the database: after a restart, a person's tab is published
again the next time they open it, and until then it shows what it showed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from bot.context import Context, Session
from bot.domain.lifecycle import DeliveryState
from bot.domain.roles import Actor, Permission
from bot.services.deliveries.views import (
    DeploymentView,
    read_detail,
    read_progress,
    read_summaries,
)
from bot.services.home_views import (
    MAX_APPROVALS,
    MAX_FINISHED,
    MAX_READY,
    MAX_SENDING,
    HomeView,
)
from bot.services.messages.approval_requests import request_view
from bot.services.notifications import NotificationFailed, Notifications
from bot.store import approvals, deliveries

log = logging.getLogger(__name__)

SENDING = (DeliveryState.IN_PROGRESS, DeliveryState.PAUSED)
WATCH_SECONDS = 24 * 3600.0  # a tab opened longer ago than this is no longer followed


def read_home(ctx: Context, actor: Actor) -> HomeView:
    """The Home tab of `actor`, with only the sections their roles let them see.

    Deliveries ready to confirm for those who may confirm, open approval requests for
    those who may approve, sends in progress and the latest finished ones for those
    who may see deliveries.
    """
    view = HomeView(actor.id, actor.roles)
    now = ctx.clock.now()
    with ctx.sessions() as s:
        if actor.may(Permission.CONFIRM_SEND):
            ready = [row for row in read_summaries(s) if row.pickable]
            view = replace(view, ready=ready[:MAX_READY], more_ready=len(ready) - MAX_READY)
        waiting = approvals.open_ids(s) if actor.may(Permission.APPROVE) else None
        if actor.may(Permission.VIEW_DELIVERIES):
            every = deliveries.every(s)
            sending = [d.ref for d in every if d.state in SENDING]
            done = sorted(
                (d for d in every if d.state is DeliveryState.FINISHED and d.finished_at),
                key=lambda d: (d.finished_at, d.ref),
                reverse=True,
            )
            view = replace(
                view,
                sending=[_deployment(s, ref, now) for ref in sending[:MAX_SENDING]],
                more_sending=len(sending) - MAX_SENDING,
                finished=[_deployment(s, d.ref, now) for d in done[:MAX_FINISHED]],
            )
    if waiting is not None:
        requests = [request_view(ctx, rid)[0] for rid in waiting[:MAX_APPROVALS]]
        view = replace(view, approvals=requests, more_approvals=len(waiting) - MAX_APPROVALS)
    return replace(
        view,
        more_ready=max(0, view.more_ready),
        more_approvals=max(0, view.more_approvals),
        more_sending=max(0, view.more_sending),
    )


def _deployment(session: Session, ref: str, now: datetime) -> DeploymentView:
    """Without the moment it was read at: a tab that shows the same figures is unchanged."""
    return DeploymentView(read_detail(session, ref), read_progress(session, ref, now))


ActorOf = Callable[[str], Awaitable[Actor]]


class HomeFollower:
    """Keeps the Home tabs of the people who opened them in step with the database."""

    def __init__(
        self,
        ctx: Context,
        notifications: Notifications,
        actor_of: ActorOf,
        *,
        min_interval: float = 5.0,
        sweep_interval: float = 15.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ctx = ctx
        self.notifications = notifications
        self.actor_of = actor_of
        self.min_interval = min_interval
        self.sweep_interval = sweep_interval
        self.monotonic = monotonic
        self.sleep = sleep
        self.watchers: dict[str, float] = {}  # user -> when they last opened the tab
        self.published: int = 0  # views.publish calls made, for tests and logs
        self._last: dict[str, float] = {}  # user -> when their tab was last published
        self._shown: dict[str, HomeView] = {}
        self._notices: dict[str, str] = {}
        self._pending: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # --- what tells it -----------------------------------------------------------------

    def opened(self, user: str) -> None:
        """`user` opened their Home tab: publish it (coalesced) and follow it from now on."""
        if not self.notifications.connected or not user:
            return
        self.watchers[user] = self.monotonic()
        self._notices.pop(user, None)
        self._shown.pop(user, None)  # the tab may show anything (a restart): publish it
        self._request(user)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def notice(self, user: str, text: str) -> None:
        """What `user`'s click on their tab did, shown at its top (a click there has no
        message to answer under); the tab is published again with it, and followed."""
        self._notices[user] = text
        self._shown.pop(user, None)
        self.watchers[user] = self.monotonic()  # the click shows the tab is open
        self._request(user)

    def changed(self) -> None:
        """Something a tab shows may have changed: every followed tab is read again."""
        now = self.monotonic()
        for user, at in list(self.watchers.items()):
            if now - at > WATCH_SECONDS:
                self._forget(user)
            else:
                self._request(user)

    def changed_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        """`changed`, from another thread (the sender's batch hook)."""
        loop.call_soon_threadsafe(self.changed)

    async def close(self) -> None:
        """The server stops: no more publishes."""
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._sweeper = None

    @property
    def idle(self) -> bool:
        """Nothing is waiting to be published."""
        return not self._pending and self.in_flight == 0

    @property
    def in_flight(self) -> int:
        """Publishes under way or waiting for their window."""
        return sum(not task.done() for task in self._tasks)

    # --- how it publishes --------------------------------------------------------------

    def _request(self, user: str) -> None:
        if user in self._pending:
            return  # a publish is coming, and it reads the state when it goes
        self._pending.add(user)
        task = asyncio.get_running_loop().create_task(self._flush(user))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, user: str) -> None:
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:
            wait = self._last.get(user, -1e9) + self.min_interval - self.monotonic()
            if wait > 0:
                await self.sleep(wait)
            self._pending.discard(user)  # a change from now on is read by the next publish
            try:
                await self._publish(user)
            except Exception:
                log.exception("the Home tab of %s was not published", user)

    async def _publish(self, user: str) -> None:
        actor = await self.actor_of(user)
        view = await asyncio.to_thread(read_home, self.ctx, actor)
        view = replace(view, notice=self._notices.get(user))
        if self._shown.get(user) == view:
            return
        self._last[user] = self.monotonic()
        try:
            await self.notifications.home(user, view)
        except NotificationFailed as exc:
            log.warning("the Home tab of %s was not published: %s", user, exc.reason)
            return
        self.published += 1
        self._shown[user] = view

    async def _sweep(self) -> None:
        while self.watchers:
            await asyncio.sleep(self.sweep_interval)
            self.changed()

    def _forget(self, user: str) -> None:
        for kept in (self.watchers, self._last, self._shown, self._notices):
            kept.pop(user, None)
