"""Slack's Web API as the bot calls it, and the response URLs its answers go to.

The bot's client is pointed here (`SLACK_API_URL`) with a token made at start, so the
sender and the listeners post exactly as they would to Slack, through the same
client and its retries. A call without that token is refused as Slack refuses it
(`invalid_auth`); a method the playground does not play answers `unknown_method`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from bot.entrypoints.playground.workspace import DEMO_USERS, MAX_FILE_BYTES, Workspace

log = logging.getLogger(__name__)

RESPONSE_URL_LIFETIME = 30 * 60  # Slack's: a response URL works for 30 minutes
MAX_RESPONSE_URLS = 500
MAX_CALL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Origin:
    """Where a response URL's answer lands: who acted, in which channel, on what."""

    channel: str
    user: str
    message_ts: str | None
    made: float


class ResponseUrls:
    """The response URLs handed out with each command and click: a few, for 30 minutes."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._open: OrderedDict[str, Origin] = OrderedDict()

    def new(self, channel: str, user: str, message_ts: str | None) -> str:
        token = secrets.token_urlsafe(16)
        self._open[token] = Origin(channel, user, message_ts, time.monotonic())
        while len(self._open) > MAX_RESPONSE_URLS:
            self._open.popitem(last=False)
        return f"{self.base}/playground/response/{token}"

    def take(self, token: str) -> Origin | None:
        origin = self._open.get(token)
        if origin is None or time.monotonic() - origin.made > RESPONSE_URL_LIFETIME:
            return None
        return origin


def _blocks(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return [b for b in value if isinstance(b, dict)] if isinstance(value, list) else []


async def _arguments(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if len(body) > MAX_CALL_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_CALL_BYTES, actual_size=len(body))
    args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(request.query_string).items()}
    if request.content_type == "application/json":
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return args
        if isinstance(data, dict):
            args.update(data)
    else:
        args.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()})
    return args


class WebApi:
    def __init__(self, workspace: Workspace, token: str, base: str, bot_user: str) -> None:
        self.workspace = workspace
        self.token = token
        self.base = base
        self.bot_user = bot_user
        self.responses = ResponseUrls(base)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/playground/api/{method}", self.call)
        app.router.add_get("/playground/api/{method}", self.call)  # users.info is a GET
        app.router.add_post("/playground/upload/{file_id}", self.upload)
        app.router.add_post("/playground/response/{token}", self.respond)

    def _authorized(self, request: web.Request, args: dict[str, Any]) -> bool:
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        given = given or str(args.get("token") or "")
        return secrets.compare_digest(given, self.token)

    async def call(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _arguments(request)
        if not self._authorized(request, args):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        answer = getattr(self, "_" + method.replace(".", "_"), None)
        if answer is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        result: dict[str, Any] = answer(args)
        return web.json_response(result)

    # --- the methods the bot calls ------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"{self.base}/playground",
            "team": "Greenlight playground",
            "user": "greenlight",
            "team_id": "T0PLAYGRND",
            "user_id": self.bot_user,
            "bot_id": "B0PLAYGRND",
        }

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        posted = self.workspace.post(
            channel, str(args.get("text") or ""), _blocks(args.get("blocks"))
        )
        return {"ok": True, "channel": channel, "ts": posted.ts, "message": {"ts": posted.ts}}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        ts, channel = str(args.get("ts") or ""), str(args.get("channel") or "")
        updated = self.workspace.update(
            ts, str(args.get("text") or ""), _blocks(args.get("blocks"))
        )
        if updated is None or updated.channel != channel:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": channel, "ts": ts}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, user = str(args.get("channel") or ""), str(args.get("user") or "")
        posted = self.workspace.post(
            channel, str(args.get("text") or ""), _blocks(args.get("blocks")), visible_to=user
        )
        return {"ok": True, "message_ts": posted.ts}

    def _files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("filename") or "file")
        file = self.workspace.new_file(name, name)
        return {
            "ok": True,
            "upload_url": f"{self.base}/playground/upload/{file.id}",
            "file_id": file.id,
        }

    def _files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            files = json.loads(str(args.get("files") or "[]"))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        ids = [str(f.get("id")) for f in files if isinstance(f, dict)]
        for f in files:
            if isinstance(f, dict) and f.get("id") in self.workspace.files and f.get("title"):
                self.workspace.files[f["id"]].title = str(f["title"])
        channel = str(args.get("channel_id") or args.get("channels") or "")
        if channel:
            self.workspace.share(ids, channel, str(args.get("initial_comment") or ""))
        shown = [
            {"id": i, "title": self.workspace.files[i].title}
            for i in ids
            if i in self.workspace.files
        ]
        return {"ok": True, "files": shown}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user_id") or "")
        view = args.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                view = None
        if not user or not isinstance(view, dict) or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        self.workspace.publish_home(user, _blocks(view.get("blocks")))
        return {"ok": True, "view": {"id": f"V0PG{user}", "type": "home"}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """A person's profile: the playground's people have addresses of their own, so a
        proof asked for in the playground lands in the outbox."""
        user = str(args.get("user") or "")
        person = next((u for u in DEMO_USERS if u.id == user), None)
        if person is None:
            return {"ok": False, "error": "user_not_found"}
        email = f"{user.removeprefix('U0PG').lower()}@playground.example"
        return {
            "ok": True,
            "user": {"id": user, "name": person.name, "profile": {"email": email}},
        }

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "no_such_subteam"}  # the playground has no user groups

    # --- the bytes of an upload, and the response URLs -----------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        file = self.workspace.files.get(request.match_info["file_id"])
        if file is None:
            return web.Response(status=404, text="no such upload")
        data = await request.content.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return web.Response(status=413, text="too large")
        file.bytes = data
        return web.Response(text="OK")

    async def respond(self, request: web.Request) -> web.Response:
        """What Bolt's `respond()` posts: an ephemeral answer, or the clicked message replaced."""
        origin = self.responses.take(request.match_info["token"])
        if origin is None:
            return web.Response(status=404, text="expired_url")
        args = await _arguments(request)
        text, blocks = str(args.get("text") or ""), _blocks(args.get("blocks"))
        replace = str(args.get("replace_original", "")).lower() in ("true", "1")
        if str(args.get("delete_original", "")).lower() in ("true", "1") and origin.message_ts:
            self.workspace.delete(origin.message_ts)
        elif replace and origin.message_ts and origin.message_ts in self.workspace.messages:
            self.workspace.update(origin.message_ts, text, blocks)
        elif args.get("response_type") == "in_channel":
            self.workspace.post(origin.channel, text, blocks)
        else:
            self.workspace.post(origin.channel, text, blocks, visible_to=origin.user)
        return web.Response(text="ok")
