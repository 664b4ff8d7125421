"""The Slack Web API client: base URL from settings, 429s retried after Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class RetryAfter(AsyncRetryHandler):
    """Waits exactly what Slack asks (Retry-After) before trying a rate-limited call again.

    slack_sdk's own handler adds random jitter and sleeps by itself; this one takes the
    sleep as a dependency so tests can check the wait without spending it.
    """

    def __init__(self, max_retry_count: int = 3, sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._sleep = sleep

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = 1.0
        if response is not None:
            for key, values in response.headers.items():
                if key.lower() == "retry-after" and values:
                    with contextlib.suppress(ValueError):
                        wait = float(values[0])
        state.next_attempt_requested = True
        await self._sleep(wait)
        state.increment_current_attempt()


def make_client(settings: Settings, sleep: Sleep = asyncio.sleep) -> AsyncWebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    base = (
        settings.slack_api_url
        if settings.slack_api_url.endswith("/")
        else settings.slack_api_url + "/"
    )
    return AsyncWebClient(token=token, base_url=base, retry_handlers=[RetryAfter(sleep=sleep)])


class UsergroupDirectory:
    """Which of the given Slack user groups a user belongs to, cached for a minute.

    Only groups that hold a role are asked about, so a workspace without group grants
    makes no call at all. A failed lookup counts as "not a member": a role is never
    granted because Slack could not be asked.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        ttl: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.monotonic = monotonic
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._asking: dict[str, asyncio.Future[frozenset[str]]] = {}

    async def groups_of(self, user_id: str, groups: list[str]) -> list[str]:
        return [g for g in groups if user_id in await self._members_of(g)]

    async def _members_of(self, group: str) -> frozenset[str]:
        cached = self._members.get(group)
        if cached and self.monotonic() - cached[0] < self.ttl:
            return cached[1]
        # Two actions at once (two people typing a command) share one lookup.
        asking = self._asking.get(group)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(group))
            self._asking[group] = asking
            asking.add_done_callback(lambda _: self._asking.pop(group, None))
        return await asyncio.shield(asking)

    async def _ask(self, group: str) -> frozenset[str]:
        try:
            resp = await self.client.usergroups_users_list(usergroup=group)
            members = frozenset(resp.get("users") or [])
        except SlackApiError as exc:
            log.warning("members of user group %s unknown: %s", group, exc.response.get("error"))
            members = frozenset()
        self._members[group] = (self.monotonic(), members)
        return members
