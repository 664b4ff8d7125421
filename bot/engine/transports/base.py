"""The transport interface: hand a batch of messages to the MTA, one answer per message.

Two kinds of trouble are kept apart, because SPEC section 5 treats them differently:

* an answer about **one recipient** (the relay said 5xx or 4xx for that message) is a
  `RelayResult` with outcome "hard" or "soft": it goes into that sending log;
* the **relay itself** being unreachable, dropping connections, refusing our sender or
  our login, is not any recipient's fault: `send()` raises `RelayUnavailable`, and the
  sender backs off and sends the same recipients again later.

"Never twice" comes from `RelayUnavailable.partial`: the results the relay gave before
the trouble (accepted, hard, soft) travel with the exception so the sender records them
and resends only the others. A message is missing from `partial` when it had no
definite answer; only one case among those can have reached the relay anyway: the
connection broke after the message's final "." and before the relay's reply. So a
resend duplicates at most one message per connection in flight (the SMTP pool size).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Outcome = Literal["accepted", "hard", "soft"]

# Asked before each message: False when the sender no longer owns what it is sending
# (`bot.engine.claims`); the transport then stops before the message's transaction.
Fence = Callable[[], Awaitable[bool]]
# Told each answer as soon as the relay gives it (the sender records them as they come).
OnResult = Callable[["RelayResult"], None]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message for one recipient; `data` is the whole message with CRLF line ends."""

    log_id: int
    mail_from: str
    rcpt_to: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RelayResult:
    """The relay's answer for one message: "accepted", or a "hard"/"soft" refusal."""

    log_id: int
    outcome: Outcome
    smtp_code: int | None = None
    smtp_message: str | None = None


class TransportError(Exception):
    """`send()` stopped before the end of the batch; `partial` holds the answers so far.

    The sender records `partial` before anything else, then retries the rest.
    """

    def __init__(self, reason: str, partial: Sequence[RelayResult] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial: list[RelayResult] = list(partial)


class RelayUnavailable(TransportError):
    """The relay cannot take messages now (down, dropping, refusing us): retry later."""


class FenceLost(TransportError):
    """The fence said no before a message: the sender lost its claim; stop sending."""


class Transport(Protocol):
    """Where messages go: an SMTP relay or a local Maildir."""

    async def send(
        self,
        batch: Sequence[Envelope],
        fence: Fence | None = None,
        on_result: OnResult | None = None,
    ) -> list[RelayResult]:
        """One result per envelope, in batch order, or raise `TransportError`; each result
        is also given to `on_result` as soon as it is known (a `partial` result too).

        Raises `RelayUnavailable` (a `TransportError`) when the relay is unreachable,
        `FenceLost` when `fence` refused a message; another `TransportError` wraps an
        unexpected error (a bug); each carries the answers obtained before (`partial`).
        Do not cancel a send in flight: the answers it had would be lost.
        """
        ...

    async def close(self) -> None:
        """Release connections; the transport may not be used afterwards."""
        ...
