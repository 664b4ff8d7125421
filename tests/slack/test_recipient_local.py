"""Recipient-local sends through the live app: waves at each recipient's 09:00, shown on
the Deployment message, and Pause, Resume and Stop send acting on the waves to come.

The live app's own sender (a thread that sees the injected clock) relays to the real
SMTP relay; the test moves the clock and kicks the sender as the scheduler's tick
would; the clicks are signed requests; Slack's Web API is the local mock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import ALLOWED, LiveApp, SlackClient
from mock_slack import Call, MockSlack
from scenario import CLI, detail_json
from smtp_relay import Relay
from sqlalchemy import select

from bot.blocks import ids
from bot.clock import FixedClock
from bot.context import Context
from bot.jobs.runner import SendRunner
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.store.models import Delivery, Execution

DAY = "2026-11-25"  # two days after the tests' T0 (2026-11-23 09:00 UTC)
TOKYO = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # 09:00 in Asia/Tokyo
PARIS = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # 09:00 in Europe/Paris (and no zone)
NEW_YORK = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # 09:00 in America/New_York

PROFILES = {
    "aiko@x.example": "Asia/Tokyo",
    "ren@x.example": "Asia/Tokyo",
    "chloe@x.example": "Europe/Paris",
    "nobody@x.example": "",  # the delivery's zone: Europe/Paris
    "lea@x.example": "Europe/Paris",
    "sam@x.example": "America/New_York",
    "max@x.example": "America/New_York",
}
WAVES = {
    TOKYO: {"aiko@x.example", "ren@x.example"},
    PARIS: {"chloe@x.example", "nobody@x.example", "lea@x.example"},
    NEW_YORK: {"sam@x.example", "max@x.example"},
}


def define(ctx: Context, folder: Path, validity: str = "3d12h") -> None:
    csv = folder / "local.csv"
    csv.write_text("email,timezone\n" + "".join(f"{e},{z}\n" for e, z in PROFILES.items()))
    import_profiles(ctx, CLI, csv, "worldwide")
    yml = folder / "local.yml"
    yml.write_text(
        "- ref: local\n  name: Good <morning> & co\n  audience: worldwide\n"
        "  from: news@shop.example\n  subject: Good morning\n  text: Hello\n"
        f"  slack_channel: C0LOCAL\n  validity: {validity}\n"
        f"  schedule: {{mode: recipient-local, date: {DAY}, time: '09:00', "
        "timezone: Europe/Paris}\n"
    )
    import_deliveries(ctx, CLI, yml)


@pytest.fixture
def local(slack_services: Context, tmp_path: Path) -> Context:
    define(slack_services, tmp_path)
    result = prepare_delivery(slack_services, CLI, "local")
    assert result.errors_total == 0, result.errors
    return slack_services


@pytest.fixture
def app(local: Context) -> Iterator[LiveApp]:
    live = LiveApp(local).start()
    yield live
    live.stop()


@pytest.fixture
def client(app: LiveApp, mock_slack: MockSlack) -> SlackClient:
    return SlackClient(app, mock_slack.url)


def deployment_calls(mock: MockSlack) -> list[Call]:
    calls = mock.api_calls("chat.postMessage") + mock.api_calls("chat.update")
    return [c for c in calls if c.body.get("channel") == "C0LOCAL"]


def waves_block(call: Call) -> str:
    blocks = call.body.get("blocks") or []
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    found = [b for b in blocks if b.get("block_id") == ids.DEPLOYMENT_WAVES_BLOCK]
    return str(found[0]["text"]["text"]) if found else ""


def shown(mock: MockSlack, text: str) -> str:
    """Wait until the latest Deployment message's waves read `text`; return them."""
    mock.wait_for(lambda: text in waves_block(deployment_calls(mock)[-1]))
    return waves_block(deployment_calls(mock)[-1])


def sent_to(relay: Relay) -> set[str]:
    return set(relay.recorder.by_rcpt())


def tick(app: LiveApp, clock: FixedClock, at: datetime) -> None:
    """The scheduler's tick at `at`: a whole round of the live app's due work at `at`.

    A round may be running already (a click kicks the sender), begun before the clock
    moved: the second wait is for a round begun after one that ended after the move.
    """
    clock.set(at)
    runner = app.server.runner
    assert isinstance(runner, SendRunner)
    for _ in range(2):
        before = runner.rounds
        runner.kick()
        assert runner.wait_round(before, 30)


def test_waves_go_at_each_recipients_nine_and_pause_resume_stop_act_on_those_to_come(
    client: SlackClient,
    app: LiveApp,
    mock_slack: MockSlack,
    relay: Relay,
    local: Context,
    clock: FixedClock,
) -> None:
    value = ids.button_value("local")
    client.click(ids.CONFIRM_SEND, value, ALLOWED)
    mock_slack.wait_for(lambda: detail_json(local, "local")["state"] == "start-pending")

    tick(app, clock, TOKYO - timedelta(minutes=1))
    assert sent_to(relay) == set(), "nobody before the first wave"
    assert detail_json(local, "local")["state"] == "start-pending"

    tick(app, clock, TOKYO)
    assert sent_to(relay) == WAVES[TOKYO]
    text = shown(mock_slack, "1 of 3 sent")
    assert "next wave <!date^" + str(int(PARIS.timestamp())) in text
    assert "✓ 09:00 Asia/Tokyo" in text and "2 sent" in text
    assert "◷ 09:00 Europe/Paris" in text and "3 waiting" in text
    detail = detail_json(local, "local")
    assert detail["state"] == "in-progress", "not finished while waves wait"
    assert detail["execution"]["state"] == "in-progress"

    client.click(ids.PAUSE, value, ALLOWED)
    mock_slack.wait_for(lambda: detail_json(local, "local")["state"] == "paused")
    tick(app, clock, PARIS + timedelta(minutes=30))
    assert sent_to(relay) == WAVES[TOKYO], "a paused send holds the wave that came"
    client.click(ids.COMPUTE_STATS, value, ALLOWED)  # the message drawn again now
    assert "⏸ 09:00 Europe/Paris" in shown(mock_slack, "3 waiting (paused)")

    client.click(ids.RESUME, value, ALLOWED)  # kicks the sender: the wave that came goes
    mock_slack.wait_for(lambda: sent_to(relay) == WAVES[TOKYO] | WAVES[PARIS])
    shown(mock_slack, "2 of 3 sent")
    assert sent_to(relay) == WAVES[TOKYO] | WAVES[PARIS], "not the wave still to come"

    client.click(ids.STOP, value, ALLOWED)
    mock_slack.wait_for(lambda: detail_json(local, "local")["state"] == "stopped")
    tick(app, clock, NEW_YORK)
    assert sent_to(relay) == WAVES[TOKYO] | WAVES[PARIS], "stopped: the last wave never goes"
    text = shown(mock_slack, "2 not sent (stopped)")
    assert "✕ 09:00 America/New_York" in text
    assert text.startswith("*Waves* — 2 of 3 sent · 2 recipients not sent"), text
    detail = detail_json(local, "local")
    assert [w["waiting"] for w in detail["waves"]] == [0, 0, 0]
    assert [w["cancelled"] for w in detail["waves"]] == [0, 0, 2]
    assert detail["logs"]["ignored"] == 2
    assert all(len(r) == 1 for r in relay.recorder.by_rcpt().values()), "nobody twice"
    assert "Good &lt;morning&gt; &amp; co" in json.dumps(deployment_calls(mock_slack)[-1].body)


def test_the_send_finishes_after_its_last_wave_and_its_validity_runs_on_from_there(
    client: SlackClient,
    app: LiveApp,
    mock_slack: MockSlack,
    relay: Relay,
    local: Context,
    clock: FixedClock,
) -> None:
    client.click(ids.CONFIRM_SEND, ids.button_value("local"), ALLOWED)
    mock_slack.wait_for(lambda: detail_json(local, "local")["state"] == "start-pending")
    for at in (TOKYO, PARIS):
        tick(app, clock, at + timedelta(minutes=5))
        assert detail_json(local, "local")["state"] == "in-progress"
    tick(app, clock, NEW_YORK)
    detail = detail_json(local, "local")
    assert detail["state"] == "finished"
    assert sent_to(relay) == set(PROFILES)
    with local.sessions() as s:
        (execution,) = s.scalars(
            select(Execution).join(Delivery).where(Delivery.ref == "local")
        ).all()
        started, ends = execution.started_at, execution.validity_ends_at
    assert started == TOKYO + timedelta(minutes=5), "sending started with the first wave"
    assert ends == started + timedelta(days=3, hours=12) and ends > NEW_YORK
    shown(mock_slack, "3 of 3 sent")


def test_a_confirm_after_a_wave_has_passed_is_refused_with_who_would_be_late(
    client: SlackClient, mock_slack: MockSlack, local: Context, clock: FixedClock
) -> None:
    clock.set(TOKYO + timedelta(hours=1))
    client.click(ids.CONFIRM_SEND, ids.button_value("local"), ALLOWED)
    reply = mock_slack.wait_for(
        lambda: [c for c in mock_slack.responses() if "would get it late" in json.dumps(c.body)]
    )
    assert "wave for Asia/Tokyo was due at 2026-11-25 00:00 UTC" in json.dumps(reply[0].body)
    assert detail_json(local, "local")["state"] == "ready"


def test_the_card_and_its_ok_dialog_say_when_each_wave_leaves(
    client: SlackClient, mock_slack: MockSlack
) -> None:
    client.command("/confirm-send", "local", ALLOWED)
    (card,) = mock_slack.wait_for(
        lambda: [c for c in mock_slack.responses() if "Confirm send" in json.dumps(c.body)]
    )
    text = json.dumps(card.body)
    assert "09:00 in each recipient's time zone on Wed 25 Nov 2026" in text
    assert "(Europe/Paris when a profile has none)" in text
    assert "3 waves, from 2026-11-25 00:00 UTC to 2026-11-25 14:00 UTC" in text
