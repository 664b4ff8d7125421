"""SEND_RATE_LIMIT for the whole fleet: the workers share one token bucket in PostgreSQL.

Each SMTP transport of a worker takes a few tokens at a time from the fleet's bucket
(`store.rate`) and spends them one per message; when the bucket is in debt it waits
the debt off before sending. The rate therefore holds however many workers relay at
once (each process' own bucket, the embedded mode's, would let N workers send N times
the rate). Tokens a worker took and did not spend are at most one chunk: a twentieth
of a second's worth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.context import Context
from bot.store import rate as rate_store


class SharedBucket:
    """`acquire()` as `smtp.TokenBucket`'s, drawing from the fleet's bucket."""

    def __init__(
        self,
        ctx: Context,
        rate: float,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("a shared bucket needs a rate above 0")
        self.ctx = ctx
        self.rate = rate
        self.chunk = max(1.0, rate / 20)
        self.capacity = max(self.chunk, rate / 10)
        self._sleep = sleep
        self._held = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # the connections of one transport take turns
            if self._held >= 1:
                self._held -= 1
                return
            balance = await asyncio.to_thread(self._take)
            self._held = self.chunk - 1
            if balance < 0:
                await self._sleep(-balance / self.rate)

    def _take(self) -> float:
        with self.ctx.sessions.begin() as s:
            return rate_store.take(s, self.chunk, self.rate, self.capacity)
