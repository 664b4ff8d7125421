"""A fake of the Notifications port for unit tests: it records what use cases said.

It speaks to nothing and keeps each message's view, so a test asserts on what a
person would be told, not on Block Kit. `fail_next` makes the next calls fail as a
chat service that is down would.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bot.services.deliveries.guard_views import GuardAlertView
from bot.services.deliveries.views import DeploymentView
from bot.services.digest_views import DigestChart, DigestPage
from bot.services.home_views import HomeView
from bot.services.notifications import NotificationFailed, Posted
from bot.services.recurring.views import ApprovalRequestView

SaidView = (
    DeploymentView | ApprovalRequestView | DigestPage | DigestChart | HomeView | GuardAlertView
)


@dataclass
class Said:
    kind: str  # deployment | approval | digest-page | digest-chart | home | guard
    channel: str  # for a Home tab, the user's id
    ts: str
    view: (
        DeploymentView | ApprovalRequestView | DigestPage | DigestChart | HomeView | GuardAlertView
    )
    update: bool = False


@dataclass
class FakeNotifications:
    connected: bool = True
    said: list[Said] = field(default_factory=list)
    fail_next: int = 0  # how many of the next calls fail
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _take(self) -> str:
        if not self.connected:
            raise NotificationFailed("not connected")
        if self.fail_next:
            self.fail_next -= 1
            raise NotificationFailed("fatal_error (HTTP 500)")
        return f"{next(self._ids)}.000000"

    def of_kind(self, kind: str) -> list[Said]:
        return [s for s in self.said if s.kind == kind]

    async def deployment(self, view: DeploymentView, channel: str, ts: str | None) -> Posted:
        new = self._take()
        self.said.append(Said("deployment", channel, ts or new, view, update=ts is not None))
        return Posted(channel, ts or new)

    async def approval_request(
        self, view: ApprovalRequestView, channel: str, ts: str | None
    ) -> Posted:
        new = self._take()
        self.said.append(Said("approval", channel, ts or new, view, update=ts is not None))
        return Posted(channel, ts or new)

    async def digest_page(self, channel: str, page: DigestPage) -> str:
        ts = self._take()
        self.said.append(Said("digest-page", channel, ts, page))
        return ts

    async def digest_chart(self, channel: str, chart: DigestChart) -> str:
        file_id = f"F{self._take()}"
        self.said.append(Said("digest-chart", channel, file_id, chart))
        return file_id

    async def home(self, user: str, view: HomeView) -> None:
        self.said.append(Said("home", user, self._take(), view))

    async def guard_alert(self, view: GuardAlertView, channel: str, ts: str | None) -> Posted:
        new = self._take()
        self.said.append(Said("guard", channel, ts or new, view, update=ts is not None))
        return Posted(channel, ts or new)
