"""The playground in the real `serve`: on only without Slack, nothing unsigned acts.

The page's requests are signed with a secret made at start; whoever does not hold it
(a request to `/slack/events` unsigned, or signed with another secret) is refused as
Slack's requests are verified, and the Web API the bot talks to takes only the bot's
token. These run the real command in a folder of its own, as `make run` does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from scenario import CLI
from serving import load_examples, plain_env, serving, wait_until

from bot.bootstrap import Root
from bot.config import load_settings
from bot.domain.lifecycle import DeliveryState
from bot.engine.transports.memory import MemoryTransport
from bot.entrypoints.playground.acting import sign
from bot.entrypoints.playground.setup import wanted
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.services.notifications import Unconnected
from bot.store.send_lock import SendLockBusy, send_lock


def request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def page_call(url: str, path: str, data: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "X-Playground": "1"}
    status, body = request(f"{url}{path}", json.dumps(data).encode(), headers)
    return status, json.loads(body)


def messages(url: str) -> list[dict[str, Any]]:
    """The workspace as the page receives it first (the feed's snapshot)."""
    with urllib.request.urlopen(f"{url}/playground/events", timeout=10) as feed:
        line = feed.readline().decode()
    assert line.startswith("data: ")
    found: list[dict[str, Any]] = json.loads(line[6:])["messages"]
    return found


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    load_examples(tmp_path)
    return tmp_path


def test_only_the_playground_s_own_signed_requests_act(folder: Path) -> None:
    with serving(folder) as url:
        status, page = request(f"{url}/playground")
        assert status == 200 and "on this machine only" in page
        body = urlencode({"command": "/campaign", "text": "roles", "user_id": "U0PGALICE"})
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert request(f"{url}/slack/events", body.encode(), form)[0] == 401
        forged = {**form, **sign("not-the-playground-secret", body)}
        assert request(f"{url}/slack/events", body.encode(), forged)[0] == 401

        # The Web API takes the bot's token only; what it does not play it says so.
        text = urlencode({"channel": "C0123456789", "text": "<!channel> hi"}).encode()
        status, answer = request(f"{url}/playground/api/chat.postMessage", text)
        assert json.loads(answer) == {"ok": False, "error": "invalid_auth"}
        assert not any("hi" in m["html"] for m in messages(url))

        # The page's own way in: David is refused by Greenlight itself, Alice is not.
        said = {"channel": "C0123456789", "text": "/campaign roles"}
        assert page_call(url, "/playground/command", {**said, "user": "U0PGDAVID"})[0] == 200
        assert page_call(url, "/playground/command", {**said, "user": "U0PGALICE"})[0] == 200
        wait_until(lambda: len([m for m in messages(url) if m["author"] == "greenlight"]) >= 2)
        shown = messages(url)
        answers = {m["visible_to"]: m["html"] for m in shown if m["author"] == "greenlight"}
        assert "do not allow you" in answers["U0PGDAVID"]
        assert "@Bruno (starts deliveries)" in answers["U0PGALICE"]  # the seeded roles

        # A command it does not know, and a person it does not have, are refused.
        status, answer = page_call(
            url, "/playground/command", {**said, "text": "/who", "user": "U0PGALICE"}
        )
        assert status == 400 and "/confirm-send" in answer["error"]
        status, _ = request(
            f"{url}/playground/command",
            json.dumps({**said, "user": "U0INTRUDER"}).encode(),
            {"Content-Type": "application/json", "X-Playground": "1"},
        )
        assert status == 400


def test_a_restart_keeps_the_messages_and_grants_no_role_twice(folder: Path) -> None:
    said = {"channel": "C0123456789", "text": "/confirm-send spring-sale", "user": "U0PGALICE"}
    with serving(folder) as url:
        page_call(url, "/playground/command", said)
        wait_until(lambda: any("Confirm send" in m["html"] for m in messages(url)))
    with serving(folder) as url:
        assert any("Confirm send" in m["html"] for m in messages(url))
    out = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "list", "--json", "--limit", "100"],
        cwd=folder,
        env=plain_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    grants = [e for e in json.loads(out) if e["action"] == "role.grant"]
    assert len(grants) == 4  # Alice's two roles, Bruno's and Chloé's: once, not per start
    assert {e["actor"] for e in grants} == {"playground"}


def test_slack_settings_turn_the_playground_off(folder: Path) -> None:
    assert wanted(load_settings(_env_file=None))
    assert not wanted(load_settings(_env_file=None, playground=False))
    for name in ("slack_bot_token", "slack_app_token", "slack_signing_secret"):
        assert not wanted(load_settings(_env_file=None, **{name: SecretStr("x")}))
    with serving(folder, PLAYGROUND="false") as url:
        assert request(f"{url}/playground")[0] == 404
        assert request(f"{url}/playground/state")[0] == 404


@pytest.mark.parametrize("locked", [True, False])
def test_the_playground_s_sender_holds_the_send_lock_while_it_sends(
    root: Root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locked: bool
) -> None:
    """In the playground the sender is a thread of `serve`, not the sender process that
    holds the database's send lock for its life: each of its rounds holds it instead,
    so a `jobs run-due` never sends beside it (the lock is asked for from another
    connection, as another process would)."""
    ctx = root.context
    csv = tmp_path / "p.csv"
    csv.write_text("email,first_name\n" + "".join(f"b{i}@x.example,B{i}\n" for i in range(3)))
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(
        "- ref: promo\n  name: Promo\n  audience: buyers\n  from: news@shop.example\n"
        "  subject: Hi\n  text: Hello\n  slack_channel: C0DEPLOY\n"
    )
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    confirm_send(ctx, CLI, "promo")
    held: list[bool] = []

    class Checking(MemoryTransport):
        async def send(self, batch: Any, fence: Any = None, on_result: Any = None) -> Any:
            try:
                with send_lock(root.engine, wait=False):
                    held.append(False)
            except SendLockBusy:
                held.append(True)
            return await super().send(batch, fence, on_result)

    transport = Checking()
    monkeypatch.setattr(root, "transport", lambda: transport)
    report = asyncio.run(root.due_work(Unconnected(), locked=locked)(lambda: False))
    assert held and set(held) == {locked}
    assert len(transport.received) == 3
    if locked:
        assert report.sent == {"promo": DeliveryState.FINISHED}
    else:
        # What the lock prevents: the other sender, taking it, released the claims of
        # the batch in flight, whose answers were then not recorded (they would be
        # sent again).
        assert report.sent == {"promo": DeliveryState.IN_PROGRESS}
