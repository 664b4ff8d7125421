"""The real HTTP app on loopback, and requests signed the way Slack signs them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.bootstrap import Root, Server, build_server
from bot.context import Context
from bot.entrypoints.access_log import RUNNER_OPTIONS
from bot.entrypoints.web import build_web_app

SIGNING_SECRET = "test-signing-secret"
ALLOWED = "U0ALLOWED"  # holds start-deliveries
DENIED = "U0DENIED"  # holds no role
ADMIN = "U0ADMIN"  # holds administration
EMAILS = [f"buyer{i}@x.example" for i in range(5)]


def root_of(ctx: Context) -> Root:
    """A composition root around a test's context (its settings, clock and database)."""
    return Root(context=ctx, engine=ctx.sessions.kw["bind"])


class LiveApp:
    """`serve`'s app in a thread with its own loop, on a free loopback port."""

    def __init__(self, ctx: Context, start_sender: bool = True) -> None:
        self.server: Server = build_server(root_of(ctx), start_sender=start_sender, tick=3600)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = build_web_app(self.server)
        self.runner = web.AppRunner(app, **RUNNER_OPTIONS)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> LiveApp:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(30)

        async def settle() -> None:
            """Let Deployment updates still in flight finish before the loop goes."""
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await asyncio.wait(pending, timeout=10) if pending else None

        asyncio.run_coroutine_threadsafe(settle(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def sign(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def http_get(app: LiveApp, path: str) -> tuple[int, dict[str, str], str]:
    """GET `path` from the live app: its status, headers and body."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, dict(resp.getheaders()), body


def post(url: str, body: str, headers: dict[str, str], content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body.encode(), headers={**headers, "Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def command_body(command: str, text: str, user: str, response_url: str) -> str:
    """A slash command as Slack posts it: form-encoded."""
    return urlencode(
        {
            "token": "legacy",
            "team_id": "T1",
            "channel_id": "C0123456789",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "response_url": response_url,
            "trigger_id": "1.2.3",
            "api_app_id": "A1",
        }
    )


def click_body(
    action_id: str, value: str, user: str, response_url: str, selected: str | None = None
) -> str:
    """A button click (or a static select's choice) as Slack posts it: `payload=` JSON."""
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": "b1",
        "type": "button",
        "value": value,
        "action_ts": "1700000000.000001",
    }
    if selected is not None:
        action = {
            "action_id": action_id,
            "block_id": "b1",
            "type": "static_select",
            "selected_option": {
                "text": {"type": "plain_text", "text": selected},
                "value": selected,
            },
            "action_ts": "1700000000.000001",
        }
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user, "name": user.lower()},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": "1.2.3",
        "channel": {"id": "C0123456789"},
        "container": {
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": "C0123456789",
            "is_ephemeral": True,
        },
        "response_url": response_url,
        "actions": [action],
    }
    return urlencode({"payload": json.dumps(payload)})


def home_click_body(action_id: str, value: str, user: str) -> str:
    """A button clicked on the App Home tab: the container is the view, no response URL."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user, "name": user.lower()},
        "api_app_id": "A1",
        "token": "legacy",
        "trigger_id": "1.2.3",
        "container": {"type": "view", "view_id": f"V{user}"},
        "view": {"id": f"V{user}", "type": "home", "blocks": []},
        "actions": [
            {
                "action_id": action_id,
                "block_id": "b1",
                "type": "button",
                "value": value,
                "action_ts": "1700000000.000001",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict[str, Any]) -> str:
    """An Events API callback as Slack posts it: JSON."""
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": f"Ev{time.time_ns()}",
            "event_time": int(time.time()),
            "event": event,
        }
    )


class SlackClient:
    """Sends what Slack would send: form-encoded commands and `payload=` interactions."""

    def __init__(self, app: LiveApp, slack_url: str) -> None:
        self.app = app
        self.slack_url = slack_url
        self.n = 0

    def _response_url(self) -> str:
        self.n += 1
        return f"{self.slack_url}/response/{self.n}"

    def command(
        self,
        command: str,
        text: str,
        user: str,
        extra_headers: dict[str, str] | None = None,
        timestamp: int | None = None,
        secret: str = SIGNING_SECRET,
    ) -> tuple[int, str]:
        body = command_body(command, text, user, self._response_url())
        headers = {**sign(body, timestamp, secret), **(extra_headers or {})}
        return post(
            f"{self.app.url}/slack/events", body, headers, "application/x-www-form-urlencoded"
        )

    def click(
        self,
        action_id: str,
        value: str,
        user: str,
        extra_headers: dict[str, str] | None = None,
        selected: str | None = None,
    ) -> tuple[int, str]:
        body = click_body(action_id, value, user, self._response_url(), selected)
        headers = {**sign(body), **(extra_headers or {})}
        return post(
            f"{self.app.url}/slack/events", body, headers, "application/x-www-form-urlencoded"
        )

    def home_opened(self, user: str, tab: str = "home") -> tuple[int, str]:
        """`app_home_opened`: `user` opened the app's Home (or Messages) tab."""
        event = {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": tab}
        body = event_body({**event, "event_ts": f"{time.time():.6f}"})
        return post(f"{self.app.url}/slack/events", body, sign(body), "application/json")

    def home_click(self, action_id: str, value: str, user: str) -> tuple[int, str]:
        body = home_click_body(action_id, value, user)
        return post(
            f"{self.app.url}/slack/events", body, sign(body), "application/x-www-form-urlencoded"
        )
