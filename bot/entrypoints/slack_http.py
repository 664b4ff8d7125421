"""`POST /slack/events` in HTTP mode: verified, checked and used once, then given to Bolt.

Three checks stand before any listener, in this order, so that nothing of a request
is read before it is known to come from Slack:

1. the signature (HMAC of the timestamp and the raw body under the signing secret)
   and its freshness (5 minutes either way): 401 otherwise, before the body is parsed;
2. the shape: a form-encoded command with a command name and a user, or a
   `payload=` interaction that is a JSON object with its type, user and actions as
   Slack sends them: 400 with the reason otherwise, never a traceback;
3. first use: each accepted signature is remembered for the freshness window (in the
   database, for every process), and a second request with it is refused (401).

In Socket Mode this route does not exist: Slack's requests arrive over the WebSocket
that the app token opened, and nothing on the HTTP port can act as Slack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier

from bot.context import Context
from bot.services.replay import first_use

log = logging.getLogger(__name__)

WINDOW = timedelta(minutes=5)  # Slack's own: a request older than this is refused
MAX_BODY = 256 * 1024  # Slack's requests are a few KB; a view can reach ~100 KB


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _verified(verifier: SignatureVerifier, body: bytes, headers: Any) -> str:
    """The request's signature, once it is known to be Slack's and fresh."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not (timestamp.isdigit() and signature):
        raise Refused(401, "signature missing or invalid")
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        raise Refused(401, "signature missing or invalid")
    return f"{timestamp}:{signature}"


def _form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the body is not a form Slack sends") from None
    if any(len(values) != 1 for values in fields.values()):
        raise Refused(400, "a field of the form is repeated")
    return {name: values[0] for name, values in fields.items()}


def _string(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise Refused(400, f"{name!r} is missing or not a string")
    return value


def _interaction(text: str) -> None:
    """An interaction payload: an object with its type, its user, and what was clicked."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused(400, "the payload is not JSON") from None
    if not isinstance(payload, dict):
        raise Refused(400, "the payload is not a JSON object")
    kind = _string(payload, "type")
    user = payload.get("user")
    if not isinstance(user, dict):
        raise Refused(400, "'user' is missing or not an object")
    _string(user, "id")
    if kind != "block_actions":
        return  # Bolt answers what no listener handles
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise Refused(400, "'actions' is missing or empty")
    for action in actions:
        if not isinstance(action, dict):
            raise Refused(400, "an action is not an object")
        _string(action, "action_id")
        if "value" in action and not isinstance(action["value"], str):
            raise Refused(400, "an action's 'value' is not a string")
        option = action.get("selected_option")
        if option is not None and not (
            isinstance(option, dict) and isinstance(option.get("value"), str)
        ):
            raise Refused(400, "an action's 'selected_option' has no value")


def check_shape(body: bytes, content_type: str) -> None:
    """Refused(400) unless the body is a command, an interaction or an event as Slack sends."""
    if content_type == "application/json":
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(event, dict):
            raise Refused(400, "the body is not a JSON object")
        _string(event, "type")
        return
    form = _form(body)
    if "payload" in form:
        _interaction(form["payload"])
    elif "command" in form:
        if not _string(form, "command").startswith("/"):
            raise Refused(400, "'command' is not a slash command")
        _string(form, "user_id")
    elif form.get("ssl_check") != "1":
        raise Refused(400, "neither a command nor an interaction")


class SlackEndpoint:
    """The HTTP route in front of the Bolt app, in HTTP mode."""

    def __init__(self, ctx: Context, app: AsyncApp, signing_secret: str) -> None:
        self.ctx = ctx
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
            if len(body) > MAX_BODY:
                raise Refused(413, "the body is larger than any Slack request")
            signature = _verified(self.verifier, body, request.headers)
            check_shape(body, request.content_type)
            if not await asyncio.to_thread(first_use, self.ctx, "slack", signature, WINDOW):
                log.warning("refused a replayed Slack request (same signature, seen before)")
                raise Refused(401, "this request was already received")
        except Refused as exc:
            return web.json_response({"ok": False, "error": exc.reason}, status=exc.status)
        try:
            response = await self.app.async_dispatch(await to_bolt_request(request))
        except Exception:  # a request shape no check foresaw: an error of ours, logged
            error_id = uuid.uuid4().hex[:8]
            log.exception("Slack request failed (error id %s)", error_id)
            return web.json_response(
                {"ok": False, "error": f"internal error (id {error_id})"}, status=500
            )
        return await to_aiohttp_response(response)
