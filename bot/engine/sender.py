"""The sender: turns an in-progress execution's queued logs into messages at the MTA.

One loop, batch by batch:

1. **claim** up to `SEND_BATCH_SIZE` queued logs with one atomic UPDATE (on PostgreSQL
   the candidate rows are locked with SKIP LOCKED, so two senders never share a log);
2. **build** each message from the profile (rendering and links, see `engine.message`);
3. **relay** the batch through the transport;
4. **record** every answer through `ctx.outcomes` in one transaction, with the
   claim released in the same write.

The delivery's state is read between batches: `paused` ends the loop with nothing
claimed, `stopped` also turns what is left into Ignored logs. When the relay is
unreachable the sender records the answers it did get, backs off and resends only
the rest; no recipient is marked failed for the relay's fault.

Crash safety: a log is claimed before it is relayed and released when its answer
is recorded. After a crash the next run releases the claims left behind, so those
logs are sent again: at most one batch (the messages in flight at the crash) can
reach the MTA twice, and none is lost.

Several senders (threads or processes over one database) may run the same execution:
a claim names its owner (`pid@host:…`), and a run releases only claims whose owner is
gone: a process of this host that no longer exists, a sender of this process that
has ended, or, for another host, a claim older than CLAIM_LEASE. A live sender's
batch is never taken from it, so two senders never relay one message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.context import Context
from bot.domain.executions import ExecutionState
from bot.domain.failures import reason_for_reply
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import Event, LogEvent
from bot.engine.message import MessageSkeleton
from bot.engine.rendering import MessageTemplates, RenderError, profile_context
from bot.engine.transports.base import Envelope, RelayResult, RelayUnavailable, Transport
from bot.store import deliveries, executions, logs
from bot.store.logs import Claimed, Relayed

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# A claim of another host cannot be checked for life; it is taken over after this long.
CLAIM_LEASE = timedelta(minutes=10)
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_LIVE_TOKENS: set[str] = set()  # claim tokens of the senders running in this process


def new_claim_token() -> str:
    """A claim token naming its owner: "<pid>@<host hash>:<random>" (at most 40 chars)."""
    return f"{os.getpid()}@{_HOST}:{uuid.uuid4().hex[:16]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_abandoned(token: str, claimed_at: datetime | None, now: datetime) -> bool:
    """True when the sender that holds `token` is gone, so its logs may be sent again."""
    if token in _LIVE_TOKENS:
        return False
    owner, _, _ = token.partition(":")
    pid_text, _, host = owner.partition("@")
    if host == _HOST and pid_text.isdigit():
        pid = int(pid_text)
        return pid == os.getpid() or not _pid_alive(pid)
    return claimed_at is None or claimed_at <= now - CLAIM_LEASE


STOP_CHECK_SECONDS = 0.25  # how often a back-off looks whether to stop


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts while the relay is unavailable: 1 s doubling up to 60 s."""

    first: float = 1.0
    factor: float = 2.0
    ceiling: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.ceiling, self.first * self.factor**attempt)


class _ChangedMeanwhile(Exception):
    """The delivery left `in-progress` while its last batch was recorded: roll back."""


@dataclass(frozen=True)
class _Design:
    """What every message of one execution shares: its templates and its skeleton."""

    templates: MessageTemplates
    skeleton: MessageSkeleton
    delivery: dict[str, str]  # what templates see as `delivery`: ref and name


class Sender:
    def __init__(
        self,
        ctx: Context,
        transport: Transport,
        *,
        batch_size: int | None = None,
        backoff: Backoff = Backoff(),
        sleep: Sleep = asyncio.sleep,
        on_batch: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.ctx = ctx
        # Asked before each batch: True when the process is shutting down. The execution
        # stays in progress and the next start resumes it, with nothing in flight.
        self.should_stop = should_stop or (lambda: False)
        # Called with the execution id after each recorded batch and when the loop ends:
        # the Deployment message follows the send through it.
        self.on_batch = on_batch or (lambda _execution_id: None)
        self.transport = transport
        self.batch_size = batch_size or ctx.settings.send_batch_size
        self.backoff = backoff
        self.sleep = sleep

    # -- the loop ------------------------------------------------------------------------

    async def run(self, execution_id: int) -> DeliveryState:
        """Send until the execution is finished, paused or stopped; return that state."""
        self.release_claims(execution_id)
        design = self._design(execution_id)
        token = new_claim_token()
        _LIVE_TOKENS.add(token)
        try:
            while True:
                state = self._state(execution_id)
                if state is DeliveryState.IN_PROGRESS and self.should_stop():
                    return state
                if state is not DeliveryState.IN_PROGRESS:
                    state = self._leave(execution_id, state)
                    self.on_batch(execution_id)
                    return state
                claimed = self._claim(execution_id, token)
                if not claimed:
                    if self._claimed_by_others(execution_id):
                        # Another sender still relays a batch: it finishes the execution.
                        return state
                    state = self._finish(execution_id)
                    self.on_batch(execution_id)
                    return state
                await self._relay(execution_id, self._envelopes(claimed, design), design)
                self.on_batch(execution_id)
        finally:
            _LIVE_TOKENS.discard(token)

    async def retry(self, execution_id: int) -> int:
        """Send again the soft-bounced logs whose retry is due; return how many were tried."""
        design = self._design(execution_id)
        token = new_claim_token()
        _LIVE_TOKENS.add(token)
        tried = 0
        try:
            while True:
                claimed = self._claim_retries(execution_id, token)
                if not claimed:
                    return tried
                tried += len(claimed)
                counts = {c.log_id: c.retry_count for c in claimed}
                envelopes = self._envelopes(claimed, design)
                await self._relay(execution_id, envelopes, design, counts)
        finally:
            _LIVE_TOKENS.discard(token)

    async def _relay(
        self,
        execution_id: int,
        envelopes: list[Envelope],
        design: _Design,
        retry_counts: dict[int, int] | None = None,
    ) -> None:
        attempt = 0
        while envelopes:
            try:
                results = await self.transport.send(envelopes)
            except RelayUnavailable as exc:
                results = exc.partial
                answered = {r.log_id for r in results}
                envelopes = [e for e in envelopes if e.log_id not in answered]
                self._record_results(results, design.skeleton, retry_counts)
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "relay unavailable (%s); %d messages wait, retrying in %.0f s",
                    exc.reason,
                    len(envelopes),
                    delay,
                )
                await self._wait(delay)
                if self.should_stop() or self._state(execution_id) is not DeliveryState.IN_PROGRESS:
                    # Paused, stopped or shutting down during the outage: the rest stays
                    # queued (its claims released) for the next round or start.
                    self._release([e.log_id for e in envelopes])
                    return
                continue
            self._record_results(results, design.skeleton, retry_counts)
            return

    async def _wait(self, seconds: float) -> None:
        """Back off for `seconds` (the injected sleep), but no longer than until the process
        is told to stop: a shutdown during an outage must not wait the back-off out."""
        if self.should_stop():
            return
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        watching = asyncio.ensure_future(self._until_stopped())
        try:
            await asyncio.wait({sleeping, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, watching):
                task.cancel()

    async def _until_stopped(self) -> None:
        while not self.should_stop():
            await asyncio.sleep(STOP_CHECK_SECONDS)

    # -- database steps ------------------------------------------------------------------

    def _design(self, execution_id: int) -> _Design:
        with self.ctx.sessions() as s:
            d = executions.get(s, execution_id).delivery
            return _Design(
                MessageTemplates(d.subject, d.html, d.text),
                MessageSkeleton.for_delivery(d, self.ctx.settings, self.ctx.clock),
                {"ref": d.ref, "name": d.name},
            )

    def _state(self, execution_id: int) -> DeliveryState:
        with self.ctx.sessions() as s:
            return executions.sending_state(s, execution_id)

    def _claim(self, execution_id: int, token: str) -> list[Claimed]:
        with self.ctx.sessions.begin() as s:
            return logs.claim_queued(s, execution_id, token, self.ctx.clock.now(), self.batch_size)

    def _claim_retries(self, execution_id: int, token: str) -> list[Claimed]:
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as s:
            if executions.validity_ended(s, execution_id, now):
                return []
            return logs.claim_retries(s, execution_id, token, now, self.batch_size)

    def release_claims(self, execution_id: int) -> int:
        """Free claims left by a sender that died: those logs will be sent (again).

        Claims of senders still running (here or in another live process) are left
        alone: see `claim_is_abandoned`.
        """
        now = self.ctx.clock.now()
        with self.ctx.sessions() as s:
            holders = logs.claim_holders(s, execution_id)
        gone = [t for t, at in holders if claim_is_abandoned(t, at, now)]
        if not gone:
            return 0
        with self.ctx.sessions.begin() as s:
            return logs.release_holders(s, execution_id, gone)

    def _claimed_by_others(self, execution_id: int) -> bool:
        with self.ctx.sessions() as s:
            return logs.claimed_count(s, execution_id) > 0

    def _release(self, log_ids: Sequence[int]) -> None:
        with self.ctx.sessions.begin() as s:
            logs.release(s, log_ids)

    def _envelopes(self, claimed: list[Claimed], design: _Design) -> list[Envelope]:
        """Each claimed log's message; one that no longer renders is recorded as Ignored."""
        with self.ctx.sessions() as s:
            profiles = logs.recipients(s, [c.profile_id for c in claimed])
        envelopes: list[Envelope] = []
        unrenderable: list[tuple[int, str]] = []
        skeleton = design.skeleton
        for c in claimed:
            first_name, last_name, timezone, attributes = profiles[c.profile_id]
            context = profile_context(
                email=c.email,
                first_name=first_name,
                last_name=last_name,
                timezone=timezone,
                attributes=attributes,
                delivery=design.delivery,
            )
            try:
                rendered = design.templates.render(context)
            except RenderError as exc:
                unrenderable.append((c.log_id, f"{exc.part} line {exc.line}: {exc.reason}"))
                continue
            data = skeleton.build(c.log_id, c.email, rendered)
            envelopes.append(Envelope(c.log_id, skeleton.mail_from, c.email, data))
        if unrenderable:
            with self.ctx.sessions.begin() as s:
                logs.record_unrenderable(s, self.ctx.clock.now(), unrenderable)
        return envelopes

    def _record_results(
        self,
        results: Sequence[RelayResult],
        skeleton: MessageSkeleton,
        retry_counts: dict[int, int] | None = None,
    ) -> None:
        if not results:
            return
        now = self.ctx.clock.now()
        settings = self.ctx.settings
        retry_at = now + timedelta(minutes=settings.retry_interval_minutes)
        events: list[LogEvent] = []
        relayed: list[Relayed] = []
        for r in results:
            tries = (retry_counts or {}).get(r.log_id, 0)
            exhausted = r.outcome == "soft" and tries >= settings.max_retries
            events += _events(r, exhausted=exhausted)
            retry = retry_at if r.outcome == "soft" and not exhausted else None
            relayed.append(Relayed(r.log_id, skeleton.message_id(r.log_id), retry))
        with self.ctx.sessions.begin() as s:
            logs.record_relayed(s, now, events, relayed)

    def _finish(self, execution_id: int) -> DeliveryState:
        """Nothing left to send. A one-off delivery is finished; a recurring one goes on,
        only this occurrence's execution ends. A delivery paused or stopped meanwhile
        keeps that state (the compare-and-set refuses), and so does its execution."""
        now = self.ctx.clock.now()
        try:
            with self.ctx.sessions.begin() as s:
                d = executions.get(s, execution_id).delivery
                executions.move(
                    s,
                    execution_id,
                    ExecutionState.IN_PROGRESS,
                    ExecutionState.FINISHED,
                    finished_at=now,
                )
                if d.recurrence_cron is None and not deliveries.move(
                    s, d.id, DeliveryState.IN_PROGRESS, DeliveryState.FINISHED, finished_at=now
                ):
                    raise _ChangedMeanwhile
        except _ChangedMeanwhile:
            return self._state(execution_id)
        return DeliveryState.FINISHED

    def _leave(self, execution_id: int, state: DeliveryState) -> DeliveryState:
        if state is DeliveryState.STOPPED:
            with self.ctx.sessions.begin() as s:
                logs.cancel_unsent(s, self.ctx.clock.now(), execution_id, include_claimed=True)
        return state


def _events(result: RelayResult, *, exhausted: bool) -> list[LogEvent]:
    """The log events of one relay answer; a soft refusal past the last retry also fails."""
    status = str(result.smtp_code) if result.smtp_code else None
    if result.outcome == "accepted":
        return [LogEvent(result.log_id, Event.RELAYED, smtp_status=status)]
    reason = reason_for_reply(result.smtp_code, hard=result.outcome == "hard")
    kind = Event.HARD_BOUNCE if result.outcome == "hard" else Event.SOFT_BOUNCE
    events = [LogEvent(result.log_id, kind, reason, status, result.smtp_message)]
    if result.outcome == "soft" and exhausted:
        events.append(LogEvent(result.log_id, Event.RETRY_FAILED, reason))
    return events
