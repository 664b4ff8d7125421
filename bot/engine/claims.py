"""Whose logs a sender relays, and how it knows they are still its own (the fence).

A sender claims logs under a token and releases them as it records their answers.
What happens when a sender stops answering is not decided by it:

* **one process per database** (SQLite, the embedded mode): a `LocalClaim`. The process
  holds the database's send lock (`bootstrap.Root.send_lock`); whatever a previous
  process left claimed is released when the lock is taken, since that process is gone.
* **a fleet of workers** (PostgreSQL, `bot.jobs.queue`): a `FencedClaim`, named after the
  procrastinate job attempt that holds it. When the worker's heartbeat stops for
  `STALL_TIMEOUT_SECONDS`, the recovery job releases the claim and the job runs again
  elsewhere, with a new token. Never before: a live worker keeps its claim however long
  its batch takes.

The fence: a worker that was stopped (SIGSTOP, a VM pause), partitioned or starved may
wake up after its claim was taken over. Before each batch and each message's
transaction it asks `holds()`. That is free while the claim was confirmed recently
enough that no takeover can have happened since (the stall timeout, less a heartbeat
interval and a margin: `window`); past that it asks (`ask`: is my job attempt still the
live one?). A worker that no longer holds its claim stops before sending another
message, and every write it makes about its logs is refused anyway
(`store.logs.ClaimLost`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Protocol


class Claim(Protocol):
    """The token a sender claims under, and whether it still holds what it claimed."""

    @property
    def token(self) -> str: ...

    @property
    def fenced(self) -> bool:
        """Whether `holds` can ever say no (a transport then asks it per message)."""
        ...

    async def holds(self) -> bool:
        """True while nobody can have taken this claim over."""
        ...

    def confirmed(self) -> None:
        """A write under the claim succeeded: it was ours at that moment."""
        ...


class LocalClaim:
    """The only sender of its database: nobody takes its claims over while it lives."""

    def __init__(self, token: str | None = None) -> None:
        self._token = token or f"local.{uuid.uuid4().hex[:16]}"  # store.send_lock.LOCAL

    @property
    def token(self) -> str:
        return self._token

    @property
    def fenced(self) -> bool:
        return False

    async def holds(self) -> bool:
        return True

    def confirmed(self) -> None:
        pass


class FencedClaim:
    """A worker's claim: trusted for `window` seconds after each confirmation, then asked."""

    def __init__(
        self,
        token: str,
        window: float,
        ask: Callable[[], bool],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._token = token
        self.window = window
        self._monotonic = monotonic
        self._confirmed_at = monotonic()  # the claim was just made

    @property
    def token(self) -> str:
        return self._token

    @property
    def fenced(self) -> bool:
        return True

    def confirmed(self) -> None:
        self._confirmed_at = self._monotonic()

    async def holds(self) -> bool:
        if self._monotonic() - self._confirmed_at < self.window:
            return True
        asked = self._monotonic()
        still = await asyncio.to_thread(self._ask)
        if still:
            self._confirmed_at = asked  # from before the question: the safe side
        return still


def fence_window(stall_timeout: float, heartbeat_interval: float) -> float:
    """How long a confirmation stays good: a takeover needs the worker's heartbeat to be
    `stall_timeout` old, and the last heartbeat may be an interval older than the last
    confirmation; a quarter of what is left is kept as margin (clocks, scheduling)."""
    return max(0.0, (stall_timeout - heartbeat_interval) * 0.75)
