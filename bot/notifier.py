"""The Deployment message: posted in the delivery's channel when sending starts, then
updated in place while relaying and once more with the final KPIs.

Updates are throttled per delivery (`chat.update` allows about 50 calls a minute per
workspace); the last update of a send, when the delivery leaves `in-progress`, always
goes through so the message ends on the true figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select, update

from bot.context import Context
from bot.services.reporting import delivery_detail, sending_progress
from bot.store.models import Delivery, Execution

log = logging.getLogger(__name__)


class DeploymentNotifier:
    def __init__(
        self,
        ctx: Context,
        client: AsyncWebClient,
        min_interval: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.min_interval = min_interval
        self.monotonic = monotonic
        self.loop: asyncio.AbstractEventLoop | None = None
        self._last: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def from_thread(self, execution_id: int) -> None:
        """The sender's batch hook: hand the refresh to the HTTP loop, never block on it."""
        if self.loop is None or self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.refresh_execution(execution_id), self.loop)

    async def refresh_execution(self, execution_id: int) -> None:
        ref = await asyncio.to_thread(self._ref_of, execution_id)
        if ref:
            await self.refresh(ref)

    def _ref_of(self, execution_id: int) -> str | None:
        with self.ctx.sessions() as s:
            return s.scalar(
                select(Delivery.ref)
                .join(Execution, Execution.delivery_id == Delivery.id)
                .where(Execution.id == execution_id)
            )

    async def refresh(self, ref: str, force: bool = False) -> dict[str, Any] | None:
        """Post or update the Deployment message of `ref`; return the message sent."""
        from bot.blocks.deployment import deployment_message

        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            # The throttle first, on one row: most batch hooks of a send stop here, and
            # the full detail is read only for a message that will be sent.
            state, channel, ts = await asyncio.to_thread(self._where, ref)
            if not channel:
                return None
            now = self.monotonic()
            if (
                state == "in-progress"
                and ts
                and not force
                and now - self._last.get(ref, -1e9) < self.min_interval
            ):
                return None
            detail, progress = await asyncio.to_thread(self._read, ref)
            message = deployment_message(detail, progress, now=self.ctx.clock.now())
            try:
                if ts:
                    await self.client.chat_update(channel=channel, ts=ts, **message)
                else:
                    resp = await self.client.chat_postMessage(channel=channel, **message)
                    await asyncio.to_thread(self._remember, ref, resp["channel"], resp["ts"])
            except SlackApiError as exc:
                log.warning("Deployment message of %s not sent: %s", ref, exc.response.get("error"))
                return None
            self._last[ref] = now
            return message

    def _where(self, ref: str) -> tuple[str, str | None, str | None]:
        """The delivery's state and where its Deployment message is (or goes)."""
        with self.ctx.sessions() as s:
            d = s.scalar(select(Delivery).where(Delivery.ref == ref))
            assert d is not None
            return d.state, d.deployment_channel or d.slack_channel, d.deployment_ts

    def _read(self, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return delivery_detail(self.ctx, ref), sending_progress(self.ctx, ref)

    def _remember(self, ref: str, channel: str, ts: str) -> None:
        with self.ctx.sessions.begin() as s:
            s.execute(
                update(Delivery)
                .where(Delivery.ref == ref)
                .values(deployment_channel=channel, deployment_ts=ts)
            )
