"""The Notifications port: what use cases may say to people, and nothing about how.

The Slack implementation (`bot.notify.slack`) builds the Block Kit and calls the Web
API; `bot.notify.fake` records what was said, for unit tests; without Slack, nothing is
connected and the messages wait in the database (approval requests, the digest) or
are simply not posted (Deployment updates), to be reconciled from the database later.

Each call either succeeds, returning where the message now is, or raises
`NotificationFailed`: the use case keeps what it needs to try again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bot.context import Context
from bot.services.deliveries.guard_views import GuardAlertView
from bot.services.deliveries.views import DeploymentView
from bot.services.digest_views import DigestChart, DigestPage
from bot.services.home_views import HomeView
from bot.services.recurring.views import ApprovalRequestView
from bot.store import metrics
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Posted:
    """Where a message is: its channel and its id there (Slack's ts)."""

    channel: str
    ts: str


class NotificationFailed(Exception):
    """The message was not taken (an error answer, a 5xx, the network): try again later.

    `reason` is the service's word for it: Slack's error code and HTTP status, say.
    `method` is the API call that failed (`chat.postMessage`), None when no call was
    made (nothing connected): `/metrics` counts the failed calls by method.
    """

    def __init__(self, reason: str, method: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.method = method


class Notifications(Protocol):
    @property
    def connected(self) -> bool:
        """False when nothing can be said (Slack not configured): callers wait instead."""
        ...

    async def deployment(self, view: DeploymentView, channel: str, ts: str | None) -> Posted:
        """Post the Deployment message (ts None) or update it in place."""
        ...

    async def approval_request(
        self, view: ApprovalRequestView, channel: str, ts: str | None
    ) -> Posted:
        """Post an approval request (ts None) or update it to show its state."""
        ...

    async def digest_page(self, channel: str, page: DigestPage) -> str:
        """Post one message of the digest; its id."""
        ...

    async def digest_chart(self, channel: str, chart: DigestChart) -> str:
        """Share the digest's chart; the file's id."""
        ...

    async def home(self, user: str, view: HomeView) -> None:
        """Publish `user`'s Home tab."""
        ...

    async def guard_alert(self, view: GuardAlertView, channel: str, ts: str | None) -> Posted:
        """Post the send guard's alert (ts None), why the send was paused with Resume and
        Stop send, or update it in place to show its delivery's state."""
        ...


class Unconnected:
    """Notifications when no chat is connected: nothing can be said, so callers wait."""

    connected = False

    async def deployment(self, view: DeploymentView, channel: str, ts: str | None) -> Posted:
        raise NotificationFailed("Slack is not connected")

    async def approval_request(
        self, view: ApprovalRequestView, channel: str, ts: str | None
    ) -> Posted:
        raise NotificationFailed("Slack is not connected")

    async def digest_page(self, channel: str, page: DigestPage) -> str:
        raise NotificationFailed("Slack is not connected")

    async def digest_chart(self, channel: str, chart: DigestChart) -> str:
        raise NotificationFailed("Slack is not connected")

    async def home(self, user: str, view: HomeView) -> None:
        raise NotificationFailed("Slack is not connected")

    async def guard_alert(self, view: GuardAlertView, channel: str, ts: str | None) -> Posted:
        raise NotificationFailed("Slack is not connected")


class Counted:
    """Notifications that count each failed Web API call in the database, by method,
    in the process that made it (the sender's child, a worker, the server): `/metrics`
    shows the count wherever it is served. The composition root wraps the Slack
    implementation in it, so every use case that talks through the port counts."""

    def __init__(self, ctx: Context, inner: Notifications) -> None:
        self.ctx = ctx
        self.inner = inner

    @property
    def connected(self) -> bool:
        return self.inner.connected

    async def deployment(self, view: DeploymentView, channel: str, ts: str | None) -> Posted:
        return await self._counting(self.inner.deployment(view, channel, ts))

    async def approval_request(
        self, view: ApprovalRequestView, channel: str, ts: str | None
    ) -> Posted:
        return await self._counting(self.inner.approval_request(view, channel, ts))

    async def digest_page(self, channel: str, page: DigestPage) -> str:
        return await self._counting(self.inner.digest_page(channel, page))

    async def digest_chart(self, channel: str, chart: DigestChart) -> str:
        return await self._counting(self.inner.digest_chart(channel, chart))

    async def home(self, user: str, view: HomeView) -> None:
        await self._counting(self.inner.home(user, view))

    async def guard_alert(self, view: GuardAlertView, channel: str, ts: str | None) -> Posted:
        return await self._counting(self.inner.guard_alert(view, channel, ts))

    async def _counting(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except NotificationFailed as exc:
            if exc.method is not None:  # a call was made (not: nothing connected)
                await asyncio.to_thread(self._count, exc.method)
            raise

    def _count(self, method: str) -> None:
        """Counting never turns a failed post into another failure: logged, and on."""
        try:
            with self.ctx.sessions.begin() as session:
                metrics.count_slack_failure(session, method, self.ctx.clock.now())
        except StoreUnavailable:
            log.warning("the failed Slack call %s could not be counted", method, exc_info=True)
