"""The Slack Web API client: base URL from settings, 429s retried after Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings

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
