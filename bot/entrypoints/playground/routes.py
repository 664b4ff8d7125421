"""The playground's HTTP side: the page, its live feed, what people do, the outbox.

Safety, since the playground acts as anyone it likes:

- it is mounted only while Slack is not connected (`setup.playground_for`);
- every `/playground` route answers the loopback address only, and only under a
  loopback host name (a page elsewhere cannot reach it through DNS rebinding);
- what changes something (a command, a click, the due work) also needs the header
  `X-Playground: 1`, which no cross-site form can send and no cross-site script can
  send without a CORS preflight, which the playground never grants.

The bot's own calls (`/playground/api/…`) carry its token; response URLs and uploads
are unguessable, as Slack's are.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from importlib import resources
from ipaddress import ip_address
from typing import Any

from aiohttp import web

from bot.clock import ShiftedClock
from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.domain.roles import COMMAND_LINE
from bot.entrypoints.playground.acting import Actor
from bot.entrypoints.playground.outbox import Outbox
from bot.entrypoints.playground.slack_api import WebApi
from bot.entrypoints.playground.workspace import DEMO_USERS, DemoUser, Workspace
from bot.services.deliveries.views import channels, list_deliveries
from bot.services.recurring.occurrences import next_occurrence

log = logging.getLogger(__name__)

COMMANDS = ("/confirm-send", "/campaign")
MAX_TEXT = 2000
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'none'; "
    "base-uri 'none'"
)
# A message's HTML: no script, no form, no frame; images (the tracking pixel) load.
LETTER_POLICY = (
    "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'; "
    "form-action 'none'; frame-ancestors 'self'"
)
STEPS = {"now": timedelta(0), "hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass
class Playground:
    """Everything the playground holds while the server runs."""

    ctx: Context
    clock: ShiftedClock
    workspace: Workspace
    api: WebApi
    actor: Actor
    outbox: Outbox
    kick: Callable[[], None]
    wait_round: Callable[[int, float], bool]
    rounds: Callable[[], int]
    kpi_channel: str

    def add_routes(self, app: web.Application) -> None:
        self.api.add_routes(app)
        app.router.add_get("/playground", self.page)
        app.router.add_get("/playground/static/{name}", self.static)
        app.router.add_get("/playground/state", self.state)
        app.router.add_get("/playground/events", self.events)
        app.router.add_post("/playground/command", self.command)
        app.router.add_post("/playground/action", self.action)
        app.router.add_post("/playground/due", self.due)
        app.router.add_post("/playground/home", self.home)
        app.router.add_get("/playground/outbox", self.outbox_list)
        app.router.add_get("/playground/outbox/{key}", self.outbox_letter)
        app.router.add_get("/playground/outbox/{key}/html", self.outbox_html)
        app.router.add_get("/playground/files/{file_id}", self.file)
        app.middlewares.append(loopback_only)
        app.on_cleanup.append(self._flush)

    async def _flush(self, app: web.Application) -> None:
        self.workspace.flush()  # what the last second changed, kept for the next start

    # --- the page ---------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=_static("playground.html"),
            content_type="text/html",
            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"},
        )

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {"playground.js": "text/javascript", "playground.css": "text/css"}
        if name not in types:
            raise web.HTTPNotFound()
        return web.Response(
            text=_static(name), content_type=types[name], headers={"Cache-Control": "no-store"}
        )

    async def state(self, request: web.Request) -> web.Response:
        channels = await asyncio.to_thread(self._channels)
        for channel in channels:
            self.workspace.add_channel(channel)
        return web.json_response(
            {
                "users": [
                    {
                        "id": u.id,
                        "name": u.name,
                        "roles": [r.value for r in u.roles],
                        "says": u.says,
                    }
                    for u in DEMO_USERS
                ],
                "channels": self.workspace.channel_views(),
                "kpi_channel": self.kpi_channel,
                "clock": self._clock(),
                "outbox": self.outbox.readable,
            }
        )

    def _channels(self) -> list[str]:
        return [*channels(self.ctx), self.kpi_channel]

    def _clock(self) -> dict[str, Any]:
        return {
            "now": self.clock.now().isoformat(timespec="seconds"),
            "ahead_seconds": int(self.clock.offset.total_seconds()),
        }

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the whole workspace first, then each change as it comes."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        queue = self.workspace.listen()
        try:
            await _send_event(response, self.workspace.snapshot())
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await _send_event(response, event)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.workspace.unlisten(queue)
        return response

    # --- what people do ---------------------------------------------------------------

    async def command(self, request: web.Request) -> web.Response:
        data = await _json(request)
        user, channel = _user(data), _string(data, "channel", 100)
        line = _string(data, "text", MAX_TEXT).strip()
        command, _, text = line.partition(" ")
        if command not in COMMANDS:
            return _refused(
                f"type {' or '.join(COMMANDS)}, then what it takes (try /campaign help)"
            )
        self.workspace.post(channel, line, None, author=user.id, visible_to=user.id)
        body = self.actor.command_body(command, text.strip(), user.id, user.name, channel)
        return await self._forward(body, channel, user.id)

    async def home(self, request: web.Request) -> web.Response:
        """The person opens the app's Home tab: Slack's `app_home_opened` event."""
        user = _user(await _json(request))
        body = self.actor.home_opened_body(user.id)
        return await self._forward(body, None, user.id, "application/json")

    async def action(self, request: web.Request) -> web.Response:
        data = await _json(request)
        user = _user(data)
        action = data.get("action")
        if not isinstance(action, dict):
            return _refused("no action")
        if data.get("home") is True:  # a button of the Home tab
            body = self.actor.home_action_body(action, user.id, user.name)
            return await self._forward(body, None, user.id)
        ts = _string(data, "ts", 40)
        message = self.workspace.messages.get(ts)
        if message is None:
            return _refused("this message is gone: reload the page")
        selected = data.get("selected")
        if selected is not None and not isinstance(selected, dict):
            return _refused("the chosen option is not an object")
        body = self.actor.action_body(
            action,
            user.id,
            user.name,
            message.channel,
            ts,
            message.visible_to is not None,
            selected,
        )
        return await self._forward(body, message.channel, user.id)

    async def _forward(
        self,
        body: str,
        channel: str | None,
        user: str,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> web.Response:
        """Post a signed request to `/slack/events`; a refusal is shown to `user` in
        `channel`, or (the Home tab has no channel) said to the page."""
        try:
            answer = await self.actor.post(body, content_type)
        except (OSError, TimeoutError) as exc:
            return _refused(f"the server did not answer: {exc}")
        if answer.status != 200:
            note = f"Greenlight answered HTTP {answer.status}: {answer.body[:300]}"
            if channel is None:
                return _refused(note)
            self.workspace.post(channel, note, None, visible_to=user)
            return web.json_response({"ok": False, "status": answer.status}, status=200)
        return web.json_response({"ok": True})

    async def due(self, request: web.Request) -> web.Response:
        """Run the due work now, after moving the clock ahead when asked."""
        data = await _json(request)
        step = str(data.get("step") or "now")
        if step == "occurrence":
            upcoming = await asyncio.to_thread(self._next_occurrence)
            if upcoming is None:
                return _refused("no recurring delivery is in progress: confirm one first")
            self.clock.jump_to(upcoming + timedelta(seconds=1))
        elif step in STEPS:
            self.clock.advance(STEPS[step])
        else:
            return _refused(f"unknown step {step!r}: now, hour, day or occurrence")
        before = self.rounds()
        self.kick()
        done = await asyncio.to_thread(self.wait_round, before, 120.0)
        clock = self._clock()
        self.workspace.notice(
            f"due work ran at {clock['now']}" if done else "the due work is still running",
            clock=clock,
        )
        return web.json_response({"ok": True, "done": done, "clock": clock})

    def _next_occurrence(self) -> datetime | None:
        found = []
        for summary in list_deliveries(self.ctx, COMMAND_LINE):
            if summary.state is not DeliveryState.IN_PROGRESS:
                continue
            upcoming = next_occurrence(self.ctx, summary.ref)
            if upcoming is not None:
                found.append(upcoming.at)
        return min(found, default=None)

    # --- the outbox and the files -----------------------------------------------------

    async def outbox_list(self, request: web.Request) -> web.Response:
        total, letters = await asyncio.to_thread(self.outbox.latest)
        return web.json_response(
            {
                "readable": self.outbox.readable,
                "total": total,
                "letters": [asdict(x) for x in letters],
            }
        )

    async def outbox_letter(self, request: web.Request) -> web.Response:
        letter = await asyncio.to_thread(self.outbox.letter, request.match_info["key"])
        if letter is None:
            raise web.HTTPNotFound(text="no such message in the outbox")
        return web.json_response(
            {
                "key": letter.key,
                "headers": letter.headers,
                "text": letter.text,
                "html": letter.html is not None,
            }
        )

    async def outbox_html(self, request: web.Request) -> web.Response:
        letter = await asyncio.to_thread(self.outbox.letter, request.match_info["key"])
        if letter is None or letter.html is None:
            raise web.HTTPNotFound(text="this message has no HTML part")
        # Links open in a new tab, out of the frame (the sandbox lets popups escape).
        return web.Response(
            text='<base target="_blank">' + letter.html,
            content_type="text/html",
            headers={"Content-Security-Policy": LETTER_POLICY, "X-Content-Type-Options": "nosniff"},
        )

    async def file(self, request: web.Request) -> web.Response:
        file = self.workspace.files.get(request.match_info["file_id"])
        if file is None or not file.bytes:
            raise web.HTTPNotFound()
        kind = "image/png" if file.bytes.startswith(b"\x89PNG") else "application/octet-stream"
        return web.Response(body=file.bytes, content_type=kind)


# --- helpers -----------------------------------------------------------------------------


@web.middleware
async def loopback_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not request.path.startswith("/playground"):
        return await handler(request)
    if not _loopback(request.remote) or (request.host.rsplit(":", 1)[0] not in LOOPBACK_HOSTS):
        return web.Response(status=403, text="the playground answers this machine only (loopback)")
    page_call = not request.path.startswith(
        ("/playground/api/", "/playground/upload/", "/playground/response/")
    )
    if page_call and request.method == "POST" and request.headers.get("X-Playground") != "1":
        return web.Response(status=403, text="the playground's own page sends this")
    return await handler(request)


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ip_address(remote).is_loopback
    except ValueError:
        return False


def _refused(reason: str) -> web.Response:
    return web.json_response({"ok": False, "error": reason}, status=400)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="send a JSON object")
    return data


def _string(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise web.HTTPBadRequest(text=f"{name!r} is missing, not a string, or too long")
    return value


def _user(data: dict[str, Any]) -> DemoUser:
    wanted = data.get("user")
    for user in DEMO_USERS:
        if user.id == wanted:
            return user
    raise web.HTTPBadRequest(text="pick one of the playground's people")


async def _send_event(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(event)}\n\n".encode())


def _static(name: str) -> str:
    return (resources.files("bot.entrypoints.playground") / "static" / name).read_text("utf-8")
