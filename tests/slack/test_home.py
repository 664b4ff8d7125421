"""The App Home tab: a signed `app_home_opened` publishes the viewer's tab for their
roles, a change publishes it again, a burst is coalesced into one publish per window,
and the approval buttons work from the tab."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import ADMIN, ALLOWED, DENIED, LiveApp, SlackClient
from mock_slack import MockSlack
from scenario import CLI, as_user, due_now

from bot.blocks import ids
from bot.context import Context
from bot.domain.roles import Role
from bot.notify.slack_client import make_client
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.messages.home import HomeFollower

T1 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 in Paris: the first occurrence
DAILY = """
- ref: daily
  name: Daily deals
  audience: buyers
  from: news@shop.example
  subject: "Deals for {{ first_name }}"
  text: "Hello"
  slack_channel: C0APPROVE
  recurrence:
    cron: "0 10 * * *"
    timezone: Europe/Paris
"""


def texts(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"])


def headers(view: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]


def elements(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]


def follower(client: SlackClient) -> HomeFollower:
    home = client.app.server.home
    assert home is not None
    return home


def opened(client: SlackClient, mock: MockSlack, user: str, n: int = 1) -> dict[str, Any]:
    status, _ = client.home_opened(user)
    assert status == 200
    mock.wait_for(lambda: len(mock.published(user)) >= n)
    return mock.published(user)[n - 1]


class Gate:
    """The follower's clock and sleep, driven by the test: its time moves only when the
    test releases a wait, so a window is observed without waiting for it to pass."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = 1000.0
        self.waits: list[float] = []
        self.cond = threading.Condition()
        self._go: asyncio.Event | None = None

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self._go = asyncio.Event()
        with self.cond:
            self.waits.append(seconds)
            self.cond.notify_all()
        await self._go.wait()
        self.now += seconds

    def release(self) -> None:
        go = self._go
        assert go is not None
        self.loop.call_soon_threadsafe(go.set)

    def wait_for_waits(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.waits) >= n, 15), self.waits


def test_each_viewer_sees_what_their_roles_allow(idle: SlackClient, mock_slack: MockSlack) -> None:
    starter = opened(idle, mock_slack, ALLOWED)
    assert starter["type"] == "home"
    assert headers(starter) == [
        "Greenlight",
        "Approval requests waiting",
        "Ready to confirm",
        "Sending",
        "Latest finished",
    ]
    assert "*Spring promo* `promo`" in texts(starter) and "to deliver 5" in texts(starter)
    assert "No occurrence waits for approval." in texts(starter)

    nobody = opened(idle, mock_slack, DENIED)
    assert headers(nobody) == ["Greenlight"]
    assert "promo" not in texts(nobody) and "You hold no Greenlight role" in texts(nobody)

    admin = opened(idle, mock_slack, ADMIN)
    assert headers(admin) == ["Greenlight", "Sending", "Latest finished"]
    assert "Ready to confirm" not in texts(admin)

    follower(idle).min_interval = 0
    status, _ = idle.home_opened(ALLOWED, tab="messages")  # the Messages tab: nothing
    assert status == 200
    again = opened(idle, mock_slack, ALLOWED, n=2)  # opened again: published again
    assert again == starter and len(mock_slack.published(ALLOWED)) == 2


def test_a_confirm_publishes_the_tab_again(idle: SlackClient, mock_slack: MockSlack) -> None:
    follower(idle).min_interval = 0
    before = opened(idle, mock_slack, ALLOWED)
    assert "Nothing is being sent." in texts(before)
    admin = opened(idle, mock_slack, ADMIN)
    assert "Nothing is being sent." in texts(admin)

    idle.click(ids.CONFIRM_SEND, ids.button_value("promo"), ALLOWED)
    after = mock_slack.wait_for(lambda: mock_slack.published(ALLOWED)[1:])[0]
    assert "No delivery is ready to confirm." in texts(after)
    assert "*Spring promo* `promo` \\u2014 in-progress" in texts(after)
    admin = mock_slack.wait_for(lambda: mock_slack.published(ADMIN)[1:])[0]
    assert "`promo` \\u2014 in-progress" in texts(admin), "every open tab follows"
    assert mock_slack.published(DENIED) == [], "a tab never opened is never published"


def test_a_burst_of_changes_publishes_once_per_window(
    idle: SlackClient, mock_slack: MockSlack
) -> None:
    home = follower(idle)
    gate = Gate(idle.app.loop)
    home.monotonic, home.sleep = gate.monotonic, gate.sleep
    value = ids.button_value("promo")
    opened(idle, mock_slack, ALLOWED)  # published at once: nothing was published before

    idle.click(ids.CONFIRM_SEND, value, ALLOWED)
    gate.wait_for_waits(1)  # the publish waits for the window to end
    idle.click(ids.PAUSE, value, ALLOWED)
    idle.click(ids.RESUME, value, ALLOWED)
    idle.click(ids.PAUSE, value, ALLOWED)
    mock_slack.wait_for(
        lambda: sum(c.method == "chat.update" for c in mock_slack.calls) >= 3
    )  # the Deployment message followed each click
    assert gate.waits == [home.min_interval], "one publish waits, for all four changes"
    assert len(mock_slack.published(ALLOWED)) == 1

    gate.release()
    latest = mock_slack.wait_for(lambda: mock_slack.published(ALLOWED)[1:])[0]
    assert "`promo` \\u2014 paused" in texts(latest), "the latest state wins"

    idle.click(ids.RESUME, value, ALLOWED)  # right after a publish: waits a whole window
    gate.wait_for_waits(2)
    assert gate.waits == [home.min_interval] * 2
    assert len(mock_slack.published(ALLOWED)) == 2
    gate.release()
    again = mock_slack.wait_for(lambda: mock_slack.published(ALLOWED)[2:])[0]
    assert "`promo` \\u2014 in-progress" in texts(again)


@pytest.fixture
def approving(
    slack_services: Context, tmp_path: Path, mock_slack: MockSlack
) -> Iterator[SlackClient]:
    yml = tmp_path / "daily.yml"
    yml.write_text(DAILY)
    import_deliveries(slack_services, CLI, yml)
    prepare_delivery(slack_services, CLI, "daily")
    confirm_send(slack_services, as_user(ALLOWED, [Role.START_DELIVERIES]), "daily")
    slack_services.clock.set(T1)  # type: ignore[attr-defined]
    due_now(slack_services, slack=make_client(slack_services.settings))
    app = LiveApp(slack_services, start_sender=False).start()
    yield SlackClient(app, mock_slack.url)
    app.stop()


def test_approval_buttons_on_the_tab_decide_and_answer_there(
    approving: SlackClient, mock_slack: MockSlack
) -> None:
    follower(approving).min_interval = 0
    tab = opened(approving, mock_slack, ALLOWED)
    [approve, skip] = elements(tab)
    assert (approve["action_id"], skip["action_id"]) == (
        ids.APPROVE_OCCURRENCE,
        ids.SKIP_OCCURRENCE,
    )
    assert "*Daily deals* `daily` \\u2014 occurrence of" in texts(tab)
    block_ids = [b["block_id"] for b in tab["blocks"] if "block_id" in b]
    assert len(block_ids) == len(set(block_ids))
    refused = opened(approving, mock_slack, DENIED)
    assert elements(refused) == []

    approving.home_click(ids.APPROVE_OCCURRENCE, approve["value"], DENIED)
    told = mock_slack.wait_for(lambda: mock_slack.published(DENIED)[1:])[0]
    assert "do not allow you to approve" in texts(told)

    approving.home_click(ids.APPROVE_OCCURRENCE, approve["value"], ALLOWED)
    after = mock_slack.wait_for(
        lambda: [v for v in mock_slack.published(ALLOWED) if "You approved" in texts(v)]
    )[0]
    assert elements(after) == [] and "No occurrence waits for approval." in texts(after)
    channel = mock_slack.wait_for(
        lambda: [c for c in mock_slack.api_calls("chat.update") if "Approved by" in str(c.body)]
    )
    assert channel[0].body["channel"] == "C0APPROVE", "the channel's request is updated too"
    assert mock_slack.responses() == [], "no response URL was called"
