"""The Notifications port: what use cases may say to people, and nothing about how.

The Slack implementation (`bot.notify.slack`) builds the Block Kit and calls the Web
API; `bot.notify.fake` records what was said, for unit tests; without Slack, nothing is
connected and the messages wait in the database (approval requests, the digest) or
are simply not posted (Deployment updates), to be reconciled from the database later.

Each call either succeeds, returning where the message now is, or raises
`NotificationFailed`: the use case keeps what it needs to try again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.services.deliveries.views import DeploymentView
from bot.services.digest_views import DigestChart, DigestPage
from bot.services.recurring.views import ApprovalRequestView


@dataclass(frozen=True)
class Posted:
    """Where a message is: its channel and its id there (Slack's ts)."""

    channel: str
    ts: str


class NotificationFailed(Exception):
    """The message was not taken (an error answer, a 5xx, the network): try again later.

    `reason` is the service's word for it: Slack's error code and HTTP status, say.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
