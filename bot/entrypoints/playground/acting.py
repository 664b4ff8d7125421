"""A person's command or click, sent to `/slack/events` exactly as Slack would send it.

The body is what Slack posts (a form-encoded slash command, or a `payload=` with a
`block_actions` interaction), signed with the playground's own signing secret under
Slack's scheme (`v0=` HMAC-SHA256 of `v0:timestamp:body`), and posted over HTTP to
the server itself. It then meets the same checks as a request from Slack: signature
and freshness, shape, first use; only then a listener.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.entrypoints.playground.slack_api import ResponseUrls

TEAM = "T0PLAYGRND"
APP = "A0PLAYGRND"


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest.hexdigest()}"}


def _trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**9)}"


def _element(action: dict[str, Any], selected: dict[str, Any] | None) -> dict[str, Any]:
    """The clicked element as Slack reports it: a button with its value, or a select
    with the option chosen."""
    element: dict[str, Any] = {
        "type": action.get("type", "button"),
        "action_id": str(action.get("action_id") or ""),
        "block_id": str(action.get("block_id") or ""),
        "action_ts": f"{time.time():.6f}",
    }
    if element["type"] == "button":
        element["value"] = str(action.get("value") or "")
        if isinstance(action.get("text"), dict):
            element["text"] = action["text"]
    if selected is not None:
        element["selected_option"] = selected
    return element


def _block_actions(element: dict[str, Any], user: str, name: str, **where: Any) -> str:
    """A `block_actions` interaction; `where`: its channel, container, view, response URL."""
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "playground"},
        "user": {"id": user, "username": name, "name": name, "team_id": TEAM},
        "api_app_id": APP,
        "token": "playground",
        "trigger_id": _trigger_id(),
        **where,
        "actions": [element],
    }
    return urlencode({"payload": json.dumps(payload)})


class Actor:
    """Posts what people do in the page to the server's own `/slack/events`."""

    def __init__(self, events_url: str, secret: str, responses: ResponseUrls) -> None:
        self.events_url = events_url
        self.secret = secret
        self.responses = responses

    def command_body(self, command: str, text: str, user: str, name: str, channel: str) -> str:
        return urlencode(
            {
                "token": "playground",
                "team_id": TEAM,
                "team_domain": "playground",
                "channel_id": channel,
                "channel_name": channel,
                "user_id": user,
                "user_name": name,
                "command": command,
                "text": text,
                "api_app_id": APP,
                "response_url": self.responses.new(channel, user, None),
                "trigger_id": _trigger_id(),
            }
        )

    def action_body(
        self,
        action: dict[str, Any],
        user: str,
        name: str,
        channel: str,
        message_ts: str,
        ephemeral: bool,
        selected: dict[str, Any] | None = None,
    ) -> str:
        return _block_actions(
            _element(action, selected),
            user,
            name,
            channel={"id": channel, "name": channel},
            container={
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": ephemeral,
            },
            response_url=self.responses.new(channel, user, message_ts),
        )

    def home_opened_body(self, user: str) -> str:
        """The Events API callback of a person opening the app's Home tab."""
        event = {
            "type": "app_home_opened",
            "user": user,
            "channel": f"D0PG{user}",
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        return json.dumps(
            {
                "token": "playground",
                "team_id": TEAM,
                "api_app_id": APP,
                "type": "event_callback",
                "event_id": f"Ev0PG{secrets.token_hex(6)}",
                "event_time": int(time.time()),
                "event": event,
            }
        )

    def home_action_body(self, action: dict[str, Any], user: str, name: str) -> str:
        """A click on the Home tab: the container is the view, and there is no response
        URL (the answer, as in Slack, can only be a new version of the tab)."""
        view_id = f"V0PG{user}"
        return _block_actions(
            _element(action, None),
            user,
            name,
            container={"type": "view", "view_id": view_id},
            view={"id": view_id, "type": "home", "blocks": []},
        )

    async def post(
        self, body: str, content_type: str = "application/x-www-form-urlencoded"
    ) -> Answer:
        headers = {
            **sign(self.secret, body),
            "Content-Type": content_type,
        }
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(self.events_url, data=body.encode(), headers=headers) as resp,
        ):
            return Answer(resp.status, await resp.text())
