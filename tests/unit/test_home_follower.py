"""The Home tabs' follower on the port's fake: what each viewer's tab holds, and when it
is published (coalesced per person, the latest state, nothing twice), on an injected
clock and sleep, so a window is observed without waiting for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from scenario import as_user, prepare_one

from bot.context import Context
from bot.domain.roles import Actor, Role
from bot.notify.fake import FakeNotifications
from bot.services.deliveries.lifecycle import confirm_send, pause_delivery
from bot.services.home_views import HomeView
from bot.services.messages.home import WATCH_SECONDS, HomeFollower, read_home

ANN = as_user("U0ANN", [Role.START_DELIVERIES])
VIEWER = as_user("U0VIEW", [Role.PREPARE_DELIVERIES])
NOBODY = as_user("U0NOBODY", [])
ACTORS = {a.id: a for a in (ANN, VIEWER, NOBODY)}


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def ready(ctx: Context, tmp_path: Path) -> Context:
    prepare_one(ctx, tmp_path, ["a@x.example", "b@x.example"], slack_channel="C0DEPLOY")
    return ctx


class Clock:
    """Monotonic time and a sleep that waits until the test releases it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []
        self.sleeping = 0
        self.go = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.sleeping += 1
        await self.go.wait()
        self.go.clear()
        self.now += seconds

    def release(self) -> None:
        """The waiting publish may go: it no longer counts as waiting."""
        self.sleeping -= 1
        self.go.set()


async def actor_of(user: str) -> Actor:
    return ACTORS[user]


def tabs(fake: FakeNotifications, user: str) -> list[HomeView]:
    return [s.view for s in fake.of_kind("home") if s.channel == user]  # type: ignore[misc]


async def settle(home: HomeFollower, clock: Clock) -> None:
    """Until every publish has gone or waits for its window (its reads run in threads)."""
    for _ in range(100_000):
        if home.in_flight == clock.sleeping:
            return
        await asyncio.to_thread(lambda: None)
    raise AssertionError("the follower never settled")


def test_each_viewer_reads_only_the_sections_of_their_roles(ready: Context) -> None:
    ann = read_home(ready, ANN)
    assert [r.ref for r in ann.ready or []] == ["big"] and ann.approvals == []
    assert ann.sending == [] and ann.finished == []
    viewer = read_home(ready, VIEWER)
    assert (viewer.ready, viewer.approvals) == (None, None) and viewer.sending == []
    nobody = read_home(ready, NOBODY)
    assert (nobody.ready, nobody.approvals, nobody.sending, nobody.finished) == (None,) * 4


def test_changes_are_coalesced_and_the_latest_state_is_published(ready: Context) -> None:
    async def scenario() -> None:
        fake, clock = FakeNotifications(), Clock()
        home = HomeFollower(ready, fake, actor_of, monotonic=clock.monotonic, sleep=clock.sleep)
        home.opened(ANN.id)
        await settle(home, clock)
        assert [t.ready[0].ref for t in tabs(fake, ANN.id) if t.ready] == ["big"]

        confirm_send(ready, ANN, "big")
        home.changed()
        await settle(home, clock)
        pause_delivery(ready, ANN, "big")
        home.changed()
        home.changed()
        await settle(home, clock)
        assert clock.waits == [home.min_interval] and len(tabs(fake, ANN.id)) == 1

        clock.release()
        await settle(home, clock)
        latest = tabs(fake, ANN.id)[-1]
        assert latest.ready == [] and [s.detail.state.value for s in latest.sending or []] == [
            "paused"
        ]
        assert home.idle and len(tabs(fake, ANN.id)) == 2

        clock.now += home.min_interval
        home.changed()  # nothing changed since: the same tab is not published again
        await settle(home, clock)
        assert len(tabs(fake, ANN.id)) == 2 and home.idle

        home.notice(ANN.id, "You approved *weekly*.")
        await settle(home, clock)
        assert tabs(fake, ANN.id)[-1].notice == "You approved *weekly*."
        await home.close()

    asyncio.run(scenario())


def test_a_failed_publish_is_tried_again_and_old_tabs_are_forgotten(ready: Context) -> None:
    async def scenario() -> None:
        fake, clock = FakeNotifications(fail_next=1), Clock()
        home = HomeFollower(ready, fake, actor_of, monotonic=clock.monotonic, sleep=clock.sleep)
        home.opened(VIEWER.id)
        await settle(home, clock)
        assert tabs(fake, VIEWER.id) == []  # Slack refused it
        clock.now += home.min_interval
        home.changed()
        await settle(home, clock)
        assert len(tabs(fake, VIEWER.id)) == 1, "published at the next change"

        clock.now += WATCH_SECONDS + 1
        home.changed()
        await settle(home, clock)
        assert VIEWER.id not in home.watchers and len(tabs(fake, VIEWER.id)) == 1
        await home.close()

    asyncio.run(scenario())


def test_nothing_is_followed_without_slack(ready: Context) -> None:
    async def scenario() -> None:
        home = HomeFollower(ready, FakeNotifications(connected=False), actor_of)
        home.opened(ANN.id)
        assert home.watchers == {}
        await home.close()

    asyncio.run(scenario())
