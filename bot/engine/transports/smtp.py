"""SMTP transport: a pool of persistent aiosmtplib connections to the relay (the MTA).

A new connection per message costs a TCP (and TLS) handshake, EHLO and AUTH: about
10× slower than reusing one (DESIGN.md, Benchmarks). So the transport keeps
`pool_size` connections open across batches and spreads a batch over them: each
connection relays one message at a time, all connections at once. A token bucket
(`rate_limit` messages per second, 0 = unlimited) paces the whole pool.

Answers map to outcomes per message (the message has exactly one recipient):

* 250 after DATA: "accepted";
* 5xx to RCPT or DATA: "hard"; 4xx to RCPT or DATA: "soft" (421 excepted: see below);
* an address the relay cannot take (non-ASCII without SMTPUTF8, control characters):
  "hard" without a code: sending it again cannot work.

Trouble that is not an answer (the connection cannot be made, breaks or times out, the
relay answers 421 "closing", refuses EHLO, MAIL FROM or our login) drops the
connection, and the message is tried again on a fresh one. Where the trouble came
decides what it means:

* before the recipient (connecting, EHLO, MAIL FROM): the relay's. Twice for one
  message and `send()` raises `RelayUnavailable`, once the other connections have
  finished their message in flight, carrying every answer obtained in this batch;
* at the recipient or its message (a 421 to RCPT or after DATA, a connection dropped
  during RCPT or DATA) while the relay takes MAIL FROM on a fresh connection: that
  recipient's. Twice, and the message gets a "soft" result (a temporary failure,
  retried like any soft bounce, `MAX_RETRIES` times) and the batch goes on. One
  domain answering 421, or one message after which the relay drops the connection,
  stalls nothing else, and such a message is transmitted at most twice per attempt.
After a refused recipient the transport sends RSET, so the connection stays usable; if
the RSET went wrong, the next MAIL FROM fails and the reconnect above repairs it.

Timeouts (`asyncio.TimeoutError` is the builtin `TimeoutError`) and refused or reset
connections are all `OSError`s, which is what the `except` clauses rely on.

TLS: `smtps://` is implicit TLS (port 465); `smtp://…?starttls=true` upgrades with
STARTTLS and fails if the relay does not offer it; plain `smtp://` never upgrades (no
surprise certificate errors against a local MTA). AUTH is used when a user is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPStatus,
)
from aiosmtplib.email import parse_address

from bot.engine.transports.base import (
    Envelope,
    Fence,
    FenceLost,
    OnResult,
    Outcome,
    RelayResult,
    RelayUnavailable,
    TransportError,
)

if TYPE_CHECKING:
    from bot.config import MailTarget, Settings

SERVICE_CLOSING = 421


class Limiter(Protocol):
    """Paces the messages of a transport: one `acquire()` per message."""

    async def acquire(self) -> None: ...


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts up to `capacity`.

    The default capacity is a tenth of a second's worth (at least 1): tight pacing at
    low rates, and at high rates a timer that wakes late does not lose throughput.
    `monotonic` and `sleep` are injectable so tests pace without waiting.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError("a rate limit is never negative (0 means unlimited)")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate / 10)
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = self.capacity
        self._last = monotonic()

    async def acquire(self) -> None:
        """Take a token, going into debt and sleeping off the debt when there is none.

        Each caller reserves its own slot before sleeping, so concurrent callers wake
        one interval apart, and nobody re-checks after waking (no float busy-loop).
        """
        if self.rate <= 0:
            return
        now = self._monotonic()
        tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate) - 1
        self._tokens = tokens
        self._last = now
        if tokens < 0:
            await self._sleep(-tokens / self.rate)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _parsed(address: str) -> tuple[str, str | None]:
    """The address as it goes on the command line, or why aiosmtplib would refuse it."""
    if _CONTROL.search(address):
        return address, "it contains a control character"
    try:
        return parse_address(address), None
    except ValueError as exc:
        return address, str(exc)


@functools.lru_cache(maxsize=64)
def _sender_address(mail_from: str) -> str:
    """The envelope sender, checked once: it is the same for every message of a delivery."""
    address, problem = _parsed(mail_from)
    if problem:  # our configuration, not the recipient: a TransportError, no bounce
        raise ValueError(f"the sender {mail_from!r} cannot be sent: {problem}")
    return address


async def _greet(smtp: SMTP) -> None:
    """EHLO, or HELO for a relay that does not know EHLO (what `sendmail` would do)."""
    try:
        await smtp.ehlo()
    except SMTPHeloError:
        await smtp.helo()


async def _reset(smtp: SMTP) -> None:
    """RSET after a refusal, so the connection stays usable for the next message.

    If it goes wrong the next MAIL FROM fails and the reconnect repairs the connection.
    """
    with contextlib.suppress(SMTPException, OSError):
        await smtp.rset()


class _RelayTrouble(Exception):
    """Not an answer: reconnect and try again. `at_recipient`: it came at RCPT or DATA,
    after the relay had taken MAIL FROM, so it may be about this message only."""

    def __init__(self, reason: str, *, at_recipient: bool = False, code: int | None = None):
        super().__init__(reason)
        self.at_recipient = at_recipient
        self.code = code


ATTEMPTS_PER_KIND = 2  # troubles of one kind before the verdict (outage, or soft result)


def _answer(envelope: Envelope, code: int, message: str) -> RelayResult:
    if code == SERVICE_CLOSING:
        raise _RelayTrouble(f"{code} {message}", at_recipient=True, code=code)
    outcome: Outcome = "hard" if 500 <= code < 600 else "soft"
    return RelayResult(envelope.log_id, outcome, code, message)


class _Connection:
    """One pooled connection, opened on first use and re-opened after trouble."""

    def __init__(self, factory: Callable[[], Awaitable[SMTP]]) -> None:
        self._factory = factory
        self._smtp: SMTP | None = None

    async def client(self) -> SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            self.drop()
            self._smtp = await self._factory()
        return self._smtp

    def drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def quit(self, timeout: float) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await asyncio.wait_for(smtp.quit(), timeout)
        except (SMTPException, OSError):
            pass
        finally:
            smtp.close()


class SmtpTransport:
    """Relays batches over a pool of persistent SMTP connections."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        implicit_tls: bool = False,
        starttls: bool = False,
        pool_size: int = 8,
        rate_limit: float = 0.0,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        limiter: Limiter | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("the SMTP pool needs at least one connection")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.implicit_tls = implicit_tls
        self.starttls = starttls
        self.pool_size = pool_size
        self.timeout = timeout
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self.limiter: Limiter = limiter or TokenBucket(rate_limit, monotonic=monotonic, sleep=sleep)
        self._pool = [_Connection(self._connect) for _ in range(pool_size)]
        self._sending = asyncio.Lock()  # one batch at a time owns the pool
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: Settings, target: MailTarget | None = None, limiter: Limiter | None = None
    ) -> SmtpTransport:
        target = target or settings.mail_target
        return cls(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            implicit_tls=target.scheme == "smtps",
            starttls=target.starttls,
            pool_size=settings.smtp_pool_size,
            rate_limit=settings.send_rate_limit,
            timeout=settings.smtp_timeout,
            limiter=limiter,
        )

    async def _connect(self) -> SMTP:
        if self._local_hostname is None:
            # Looked up once, off the event loop (getfqdn may ask DNS).
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        smtp = SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self._password,
            use_tls=self.implicit_tls,
            start_tls=self.starttls,
            tls_context=self._tls_context,
            timeout=self.timeout,
            local_hostname=self._local_hostname,
        )
        try:
            await smtp.connect()
        except (SMTPException, OSError) as exc:
            smtp.close()
            raise _RelayTrouble(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return smtp

    async def _transaction(self, smtp: SMTP, envelope: Envelope) -> RelayResult:
        """One MAIL/RCPT/DATA; a per-recipient answer, or `_RelayTrouble`.

        The commands are written here rather than through `SMTP.sendmail`, which parses
        both addresses four times and re-normalises the message for SIZE: a third of
        the sender's CPU per message. Each address is checked once (the sender's once
        per transport) and the message is already CRLF-terminated.
        """
        sender = _sender_address(envelope.mail_from)
        recipient, problem = _parsed(envelope.rcpt_to)
        if problem:  # checked before MAIL FROM, so no transaction is left half open
            return RelayResult(envelope.log_id, "hard", None, f"invalid address: {problem}")
        utf8 = not (sender.isascii() and recipient.isascii())
        at_recipient = False  # set once the relay has taken MAIL FROM
        try:
            if smtp.is_ehlo_or_helo_needed:
                await _greet(smtp)
            if utf8 and not smtp.supports_extension("smtputf8"):
                return RelayResult(
                    envelope.log_id, "hard", None, "SMTPUTF8 is not supported by the relay"
                )
            encoding = "utf-8" if utf8 else "ascii"
            options = [b"SMTPUTF8"] if utf8 else []
            if smtp.supports_extension("size"):
                options.insert(0, b"SIZE=%d" % len(envelope.data))
            answer = await smtp.execute_command(
                b"MAIL", b"FROM:<" + sender.encode(encoding) + b">", *options
            )
            if answer.code != SMTPStatus.completed:
                await _reset(smtp)
                raise _RelayTrouble(f"MAIL FROM refused: {answer.code} {answer.message}")
            at_recipient = True
            answer = await smtp.execute_command(
                b"RCPT", b"TO:<" + recipient.encode(encoding) + b">"
            )
            if answer.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                await _reset(smtp)
                return _answer(envelope, answer.code, answer.message)
            answer = await smtp.data(envelope.data)
        except SMTPDataError as exc:  # the transaction is over either way; RSET is harmless
            await _reset(smtp)
            return _answer(envelope, exc.code, exc.message)
        except SMTPResponseException as exc:  # HELO and the like: the relay's side
            raise _RelayTrouble(
                f"{exc.code} {exc.message}", at_recipient=at_recipient, code=exc.code
            ) from exc
        except (SMTPException, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise _RelayTrouble(reason, at_recipient=at_recipient) from exc
        return RelayResult(envelope.log_id, "accepted", 250, answer.message)

    async def _relay(self, connection: _Connection, envelope: Envelope) -> RelayResult:
        """One message, on fresh connections as needed, until an answer or a verdict."""
        troubles = {True: 0, False: 0}  # at the recipient, before it
        while True:
            try:
                smtp = await connection.client()
                return await self._transaction(smtp, envelope)
            except _RelayTrouble as exc:
                connection.drop()
                troubles[exc.at_recipient] += 1
                if troubles[True] >= ATTEMPTS_PER_KIND:
                    return RelayResult(
                        envelope.log_id,
                        "soft",
                        exc.code,
                        f"the relay failed at this recipient on {ATTEMPTS_PER_KIND} fresh "
                        f"connections ({exc}); retried later like a temporary failure",
                    )
                if troubles[False] >= ATTEMPTS_PER_KIND:
                    raise RelayUnavailable(
                        f"relay {self.host}:{self.port} unavailable: {exc}"
                    ) from exc

    async def send(
        self,
        batch: Sequence[Envelope],
        fence: Fence | None = None,
        on_result: OnResult | None = None,
    ) -> list[RelayResult]:
        """Relay `batch` over the pool; see `Transport.send`. Concurrent calls queue."""
        async with self._sending:
            return await self._send(batch, fence, on_result)

    async def _send(
        self, batch: Sequence[Envelope], fence: Fence | None, on_result: OnResult | None
    ) -> list[RelayResult]:
        if self._closed:
            raise RuntimeError("this SMTP transport is closed")
        results: list[RelayResult | None] = [None] * len(batch)
        pending = iter(range(len(batch)))  # shared: each worker takes the next message
        failures: list[BaseException] = []

        async def worker(connection: _Connection) -> None:
            for index in pending:
                if failures:
                    return
                await self.limiter.acquire()
                if failures:
                    return
                if fence is not None and not await fence():
                    failures.append(FenceLost("the claim was taken over"))
                    return
                try:
                    result = await self._relay(connection, batch[index])
                    results[index] = result
                    if on_result is not None:
                        on_result(result)
                except asyncio.CancelledError:
                    connection.drop()  # the transaction's state is unknown
                    raise
                except Exception as exc:
                    connection.drop()
                    failures.append(exc)
                    return

        workers = self._pool[: min(self.pool_size, len(batch))]
        await asyncio.gather(*(worker(connection) for connection in workers))
        if failures:
            partial = [result for result in results if result is not None]
            first = failures[0]
            if isinstance(first, RelayUnavailable | FenceLost):
                raise type(first)(first.reason, partial) from first
            raise TransportError(f"unexpected error while relaying: {first!r}", partial) from first
        return results  # type: ignore[return-value]  # every slot is filled without failures

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(connection.quit(self.timeout) for connection in self._pool))
