"""Socket Mode end to end: Slack's side is a local WebSocket server speaking its protocol.

`apps.connections.open` (on the mock Web API) hands out the server's `ws://` URL; the
server greets the app with `hello`, pushes envelopes the way Slack does (a slash
command, a button click), and records the acknowledgements. The app is `socket`'s:
the same runtime, with `AsyncSocketModeHandler` connected at start.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from harness import ALLOWED, DENIED, root_of
from mock_slack import Call, MockSlack
from pydantic import SecretStr
from scenario import CLI, detail_json
from smtp_relay import Relay

from bot.blocks import ids
from bot.bootstrap import build_server
from bot.context import Context
from bot.entrypoints.web import SOCKET_MODE, build_web_app, socket_mode_starter


class SlackSocket:
    """Slack's Socket Mode endpoint: one connection at a time, envelopes on demand."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.acks: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.ws: web.WebSocketResponse | None = None
        self.port = 0
        started = threading.Event()

        async def link(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.ws = ws
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "connection_info": {"app_id": "A1"},
                    "debug_info": {"host": "local", "approximate_connection_time": 3600},
                }
            )
            self.connected.set()
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    with self.cond:
                        self.acks[data["envelope_id"]] = data
                        self.cond.notify_all()
            return ws

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_get("/link", link)
            self.runner = web.AppRunner(app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link"

    def push(self, envelope_id: str, kind: str, payload: dict[str, Any]) -> None:
        assert self.ws is not None
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "payload": payload,
        }
        asyncio.run_coroutine_threadsafe(self.ws.send_json(envelope), self.loop).result(10)

    def ack_of(self, envelope_id: str, timeout: float = 15.0) -> dict[str, Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: envelope_id in self.acks, timeout), (
                f"envelope {envelope_id} was never acknowledged"
            )
            return self.acks[envelope_id]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class SocketApp:
    """`python -m bot socket`'s app in a thread: the HTTP app plus the Socket Mode link."""

    def __init__(self, ctx: Context) -> None:
        self.server = build_server(root_of(ctx), tick=3600)
        self.app = build_web_app(self.server, socket_mode=True)
        self.app.on_startup.append(socket_mode_starter(self.server))
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.runner = web.AppRunner(self.app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(15)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def socket_link(mock_slack: MockSlack) -> Iterator[SlackSocket]:
    link = SlackSocket()
    answer = mock_slack.answer

    def with_connections_open(call: Call) -> dict[str, Any]:
        if call.method == "apps.connections.open":
            return {"ok": True, "url": link.url}
        return answer(call)

    mock_slack.answer = with_connections_open  # type: ignore[method-assign]
    yield link
    link.stop()


@pytest.fixture
def socket_app(slack_services: Context, socket_link: SlackSocket) -> Iterator[SocketApp]:
    ctx = slack_services.with_settings(
        slack_app_token=SecretStr("xapp-1-test"), slack_signing_secret=None
    )
    app = SocketApp(ctx)
    assert socket_link.connected.wait(15), "the app never opened the Socket Mode link"
    yield app
    app.stop()


def command(name: str, text: str, user: str, response_url: str) -> dict[str, Any]:
    return {
        "team_id": "T1",
        "channel_id": "C0123456789",
        "user_id": user,
        "user_name": user.lower(),
        "command": name,
        "text": text,
        "response_url": response_url,
        "trigger_id": "1.2.3",
        "api_app_id": "A1",
    }


def test_commands_and_clicks_arrive_over_the_socket_and_are_acknowledged(
    socket_app: SocketApp,
    socket_link: SlackSocket,
    mock_slack: MockSlack,
    relay: Relay,
    slack_services: Context,
) -> None:
    assert socket_app.app[SOCKET_MODE] is not None
    assert mock_slack.api_calls("apps.connections.open"), "the link came from the Web API"

    socket_link.push(
        "env-list",
        "slash_commands",
        command(ids.CAMPAIGN_COMMAND, "list", ALLOWED, f"{mock_slack.url}/response/list"),
    )
    assert socket_link.ack_of("env-list")["envelope_id"] == "env-list"
    listed = mock_slack.wait_for(
        lambda: [c for c in mock_slack.responses() if c.path == "/response/list"]
    )
    assert "promo" in json.dumps(listed[0].body)

    card_request = command(
        ids.CONFIRM_SEND_COMMAND, "promo", DENIED, f"{mock_slack.url}/response/denied"
    )
    socket_link.push("env-denied", "slash_commands", card_request)
    socket_link.ack_of("env-denied")
    refused = mock_slack.wait_for(
        lambda: [c for c in mock_slack.responses() if c.path == "/response/denied"]
    )
    assert "permissions do not allow" in json.dumps(refused[0].body)

    click = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": ALLOWED, "name": "allowed"},
        "api_app_id": "A1",
        "trigger_id": "1.2.3",
        "channel": {"id": "C0123456789"},
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "response_url": f"{mock_slack.url}/response/click",
        "actions": [
            {
                "action_id": ids.CONFIRM_SEND,
                "block_id": ids.CARD_ACTIONS_BLOCK,
                "type": "button",
                "value": ids.button_value("promo"),
                "action_ts": "1700000000.000001",
            }
        ],
    }
    socket_link.push("env-click", "interactive", click)
    socket_link.push("env-click-again", "interactive", click)  # a double click
    socket_link.ack_of("env-click")
    socket_link.ack_of("env-click-again")
    mock_slack.wait_for(
        lambda: any("finished" in json.dumps(c.body) for c in mock_slack.api_calls("chat.update"))
    )
    got = relay.recorder.by_rcpt()
    assert len(got) == 5 and all(len(v) == 1 for v in got.values()), "sent once each"
    assert detail_json(slack_services, "promo")["confirmed_by"] == ALLOWED


def test_in_socket_mode_the_http_port_takes_no_slack_request(
    socket_app: SocketApp, slack_services: Context
) -> None:
    """Slack speaks over the socket: an unsigned POST to the HTTP port cannot act as Slack."""
    from harness import command_body, post

    from bot.services.roles import list_grants

    before = list_grants(slack_services, CLI)
    body = command_body("/campaign", f"roles grant {DENIED} administration", DENIED, "http://x/r")
    status, _ = post(
        f"http://127.0.0.1:{socket_app.port}/slack/events",
        body,
        {},
        "application/x-www-form-urlencoded",
    )
    assert status == 404
    assert list_grants(slack_services, CLI) == before
