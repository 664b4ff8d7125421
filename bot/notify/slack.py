"""The Slack implementation of the Notifications port: the only code that posts to Slack.

Each call draws its message with the pure builders of `bot.blocks` and sends it
through the Web API client (`slack_client.make_client`: base URL from settings, 429s
retried after Retry-After). Whatever goes wrong on the way (an error answer, a 5xx,
the network, a timeout) comes back as `NotificationFailed`, saying what Slack said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks.approval import approval_request
from bot.blocks.deployment import deployment_message
from bot.blocks.digest import digest_message
from bot.blocks.guard import guard_alert_message
from bot.blocks.home import home_view
from bot.notify.charts import kpi_chart_png
from bot.services.deliveries.guard_views import GuardAlertView
from bot.services.deliveries.views import DeploymentView
from bot.services.digest_views import DigestChart, DigestPage
from bot.services.home_views import HomeView
from bot.services.notifications import NotificationFailed, Posted
from bot.services.recurring.views import ApprovalRequestView

T = TypeVar("T")

FAILURES = (SlackClientError, aiohttp.ClientError, TimeoutError, OSError)


def describe(exc: BaseException) -> str:
    """Slack's error code and the HTTP status, or the network error as it was."""
    if isinstance(exc, SlackApiError):
        return f"{exc.response.get('error') or 'error'} (HTTP {exc.response.status_code})"
    return f"{type(exc).__name__}: {exc}"[:500]


def failed_method(exc: BaseException, method: str) -> str:
    """The Web API method that answered the error (a file upload is three calls), or the
    one the call was for."""
    if isinstance(exc, SlackApiError):
        url = str(getattr(exc.response, "api_url", "") or "")
        if "/api/" in url:
            return url.rsplit("/", 1)[-1] or method
    return method


async def _sent(method: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except FAILURES as exc:
        raise NotificationFailed(describe(exc), failed_method(exc, method)) from exc


class SlackNotifications:
    connected = True

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def _show(self, message: dict[str, Any], channel: str, ts: str | None) -> Posted:
        if ts:
            await _sent("chat.update", self.client.chat_update(channel=channel, ts=ts, **message))
            return Posted(channel, ts)
        resp = await _sent(
            "chat.postMessage", self.client.chat_postMessage(channel=channel, **message)
        )
        return Posted(str(resp["channel"]), str(resp["ts"]))

    async def deployment(self, view: DeploymentView, channel: str, ts: str | None) -> Posted:
        return await self._show(deployment_message(view), channel, ts)

    async def approval_request(
        self, view: ApprovalRequestView, channel: str, ts: str | None
    ) -> Posted:
        return await self._show(approval_request(view), channel, ts)

    async def digest_page(self, channel: str, page: DigestPage) -> str:
        message = dict(page.prebuilt) if page.prebuilt is not None else digest_message(page)
        resp = await _sent(
            "chat.postMessage",
            self.client.chat_postMessage(
                channel=channel,
                text=message["text"],
                blocks=message["blocks"],
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return str(resp["ts"])

    async def digest_chart(self, channel: str, chart: DigestChart) -> str:
        png = await asyncio.to_thread(kpi_chart_png, chart)
        resp = await _sent(
            "files.uploadV2",
            self.client.files_upload_v2(
                channel=channel,
                content=png,
                filename=chart.filename,
                title=chart.title,
                alt_txt=chart.comment,
                initial_comment=chart.comment,
            ),
        )
        file = resp.get("file") or {}
        return str(file.get("id") or "uploaded")

    async def home(self, user: str, view: HomeView) -> None:
        await _sent("views.publish", self.client.views_publish(user_id=user, view=home_view(view)))

    async def guard_alert(self, view: GuardAlertView, channel: str, ts: str | None) -> Posted:
        return await self._show(guard_alert_message(view), channel, ts)
