"""The Deployment message: posted in the delivery's channel when sending starts, then
updated in place while relaying and once more with the final KPIs.

Updates are throttled per delivery (`chat.update` allows about 50 calls a minute per
workspace); an update forced by a person's click, or one made once the delivery has
left `in-progress`, always goes through so the message ends on the true figures. An
update the throttle holds back is made once the interval is over (one per delivery,
however many were held): a send that stays in progress with nothing relaying, as a
recipient-local send does between two waves, still shows its last batch.
The message is drawn from the database each time, so whichever process sends, and
however many updates were skipped, the one that goes out is right.

The first message is claimed in the database before it is posted, so that two processes
(the server's follower and the due work's reconcile) never both post one.

What the message last showed is remembered with the delivery (`shown_key`: its state
and its execution's). When Slack was down as the state changed, the message still
reads "in progress"; `reconcile`, a step of the due work, finds every delivery whose
message shows another state than the database and posts it again. Every failure to
post is logged, with Slack's answer or the network error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.services.deliveries.views import (
    DeploymentView,
    current_execution,
    read_deployment,
    shown_key,
)
from bot.services.messages.guard_alerts import post_alerts, sync_alerts
from bot.services.notifications import NotificationFailed, Notifications
from bot.store import deliveries, executions

# A message whose send ended longer ago than this is left as it is.
RECONCILE_WINDOW = timedelta(days=1)

log = logging.getLogger(__name__)


class DeploymentFollower:
    def __init__(
        self,
        ctx: Context,
        notifications: Notifications,
        min_interval: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.notifications = notifications
        self.min_interval = min_interval
        self.monotonic = monotonic
        self._last: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: dict[str, asyncio.TimerHandle] = {}  # the update made after the throttle
        self._held_tasks: set[asyncio.Task[None]] = set()
        # One drawing of the guard's alerts at a time: a stop reaches the follower from
        # the click and from the sender at once, and each would find the alert outdated
        # and draw it (the second a useless update). Held only on this process's loop.
        self._alerts = asyncio.Lock()

    async def refresh_execution(self, execution_id: int) -> None:
        """After a batch of `execution_id` was recorded (the sender's hook).

        Runs detached on the server's loop: nothing awaits it, so whatever goes wrong
        is logged here (the reconcile step posts the message later).
        """
        try:
            ref = await asyncio.to_thread(self._ref_of, execution_id)
            if ref:
                await self.refresh(ref)
        except Exception:
            log.exception("Deployment message of execution %d not updated", execution_id)
        try:
            # A pause by the send guard comes with its alert: the batch that crossed
            # the threshold is the one just recorded.
            async with self._alerts:
                await post_alerts(self.ctx, self.notifications, execution_id)
        except Exception:
            log.exception("guard alerts of execution %d not posted", execution_id)

    async def reconcile(self) -> int:
        """Post again every Deployment message that shows another state than the database,
        and the guard's alerts that were not posted (Slack was down, or the process
        that paused had no follower)."""
        if not self.notifications.connected:
            return 0
        stale = await asyncio.to_thread(self._stale)
        async with self._alerts:
            posted = await post_alerts(self.ctx, self.notifications)
            posted += await sync_alerts(self.ctx, self.notifications)
        for ref in stale:
            if await self.refresh(ref, force=True) is not None:
                posted += 1
        if posted:
            log.info("posted %d Deployment messages again, as the database has them", posted)
        return posted

    def _stale(self) -> list[str]:
        since = self.ctx.clock.now() - RECONCILE_WINDOW
        with self.ctx.sessions() as s:
            stale = []
            for d in deliveries.with_deployment_since(s, since):
                current = current_execution(d, executions.of_delivery(s, d.id))
                if d.recurrence_cron and current is None:
                    continue  # no occurrence has started: no message yet
                if d.deployment_shown != shown_key(d.state, current):
                    stale.append(d.ref)
            return stale

    def _ref_of(self, execution_id: int) -> str | None:
        with self.ctx.sessions() as s:
            return deliveries.ref_of_execution(s, execution_id)

    async def refresh(self, ref: str, force: bool = False) -> DeploymentView | None:
        """Post or update the Deployment message of `ref`; the view it shows, if sent."""
        if not self.notifications.connected:
            return None
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            # The throttle first, on one row: most batch hooks of a send stop here, and
            # the full detail is read only for a message that will be sent.
            state, channel, ts = await asyncio.to_thread(self._where, ref)
            if not channel:
                return None
            now = self.monotonic()
            recent = now - self._last.get(ref, -1e9) < self.min_interval
            if state is DeliveryState.IN_PROGRESS and ts and not force and recent:
                self._hold(ref, self.min_interval - (now - self._last[ref]))
                return None
            if ts is None and not await asyncio.to_thread(self._claim_first_post, ref):
                return None  # another process is posting it: it shows the same
            view = await asyncio.to_thread(read_deployment, self.ctx, ref)
            try:
                posted = await self.notifications.deployment(view, channel, ts)
            except NotificationFailed as exc:
                log.warning(
                    "Deployment message of %s not sent (%s); it is posted again once Slack answers",
                    ref,
                    exc.reason,
                )
                if ts is None:
                    await asyncio.to_thread(self._release_first_post, ref)
                return None
            await asyncio.to_thread(self._remember, ref, posted.channel, posted.ts, view)
            self._last[ref] = now
        try:
            # The guard's alerts of this delivery show the same buttons as its message.
            async with self._alerts:
                await sync_alerts(self.ctx, self.notifications, ref)
        except Exception:
            log.exception("guard alerts of %s not brought up to date", ref)
        return view

    def _hold(self, ref: str, delay: float) -> None:
        """Make the update held back by the throttle after `delay` seconds, once."""
        if ref in self._held:
            return
        loop = asyncio.get_running_loop()

        def due() -> None:
            del self._held[ref]
            task = loop.create_task(self._held_update(ref))
            self._held_tasks.add(task)
            task.add_done_callback(self._held_tasks.discard)

        self._held[ref] = loop.call_later(max(delay, 0.0), due)

    async def _held_update(self, ref: str) -> None:
        try:
            await self.refresh(ref)
        except Exception:
            log.exception("Deployment message of %s not updated", ref)

    async def refresh_clicked(
        self, ref: str, execution_key: str | None, channel: str | None, ts: str | None
    ) -> None:
        """After a click on a Deployment message (**Compute stats**): update that message,
        and the delivery's latest one.

        A recurring delivery has one message per execution; only the latest one's place
        is kept with the delivery. A click on an older occurrence's message comes with
        that message's place (Slack's signed request says where the button was) and the
        execution its button names, so that message is drawn again for that execution.
        """
        await self.refresh(ref, force=True)
        if not (self.notifications.connected and execution_key and channel and ts):
            return
        _state, _channel, latest_ts = await asyncio.to_thread(self._where, ref)
        if ts == latest_ts:
            return
        view = await asyncio.to_thread(read_deployment, self.ctx, ref, execution_key)
        if view.follows is None:
            return  # the execution the delivery follows: its message is the latest one
        try:
            await self.notifications.deployment(view, channel, ts)
        except NotificationFailed as exc:
            log.warning(
                "Deployment message of %s@%s not updated (%s)", ref, execution_key, exc.reason
            )

    def _claim_first_post(self, ref: str) -> bool:
        with self.ctx.sessions.begin() as s:
            return deliveries.claim_first_post(s, ref, self.ctx.clock.now())

    def _release_first_post(self, ref: str) -> None:
        with self.ctx.sessions.begin() as s:
            deliveries.release_first_post(s, ref)

    def _where(self, ref: str) -> tuple[DeliveryState, str | None, str | None]:
        with self.ctx.sessions() as s:
            return deliveries.deployment_location(s, ref)

    def _remember(self, ref: str, channel: str, ts: str, view: DeploymentView) -> None:
        with self.ctx.sessions.begin() as s:
            deliveries.remember_deployment(s, ref, channel, ts, view.shown_key)
