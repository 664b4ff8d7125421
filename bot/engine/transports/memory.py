"""A transport that keeps every message in memory: the fake of the Transport port.

For unit tests of the use cases that send: it answers each recipient as told
(accepted unless `answers` says otherwise), can be unavailable for its next calls as a
relay that is down would be, and keeps what it received to be read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.engine.transports.base import (
    Envelope,
    Fence,
    FenceLost,
    OnResult,
    Outcome,
    RelayResult,
    RelayUnavailable,
)


@dataclass
class MemoryTransport:
    answers: dict[str, tuple[Outcome, int]] = field(default_factory=dict)  # rcpt -> answer
    unavailable: int = 0  # how many of the next calls find the relay down
    received: list[Envelope] = field(default_factory=list)
    closed: bool = False

    async def send(
        self,
        batch: Sequence[Envelope],
        fence: Fence | None = None,
        on_result: OnResult | None = None,
    ) -> list[RelayResult]:
        if self.unavailable:
            self.unavailable -= 1
            raise RelayUnavailable("the relay is down (memory transport)")
        results: list[RelayResult] = []
        for envelope in batch:
            if fence is not None and not await fence():
                raise FenceLost("the claim was taken over", results)
            outcome, code = self.answers.get(envelope.rcpt_to, ("accepted", 250))
            if outcome == "accepted":
                self.received.append(envelope)
            results.append(RelayResult(envelope.log_id, outcome, code, f"{code} (memory)"))
            if on_result is not None:
                on_result(results[-1])
        return results

    async def close(self) -> None:
        self.closed = True

    def recipients(self) -> list[str]:
        return [e.rcpt_to for e in self.received]
