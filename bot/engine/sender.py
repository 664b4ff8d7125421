"""The sender: turns an in-progress execution's queued logs into messages at the MTA.

One loop, batch by batch:

1. **claim** up to `SEND_BATCH_SIZE` queued logs with one atomic UPDATE under the
   sender's claim token (on PostgreSQL the candidate rows are locked with SKIP LOCKED,
   so two senders never share a log); a recipient-local send's logs only once their
   wave has come, and the execution is not finished while a later wave waits;
2. **build** each message from the profile (rendering and links, see `engine.message`);
3. **relay** the batch through the transport, each message behind the fence
   (`Claim.holds`: is this still my claim?);
4. **record** the answers as they come (`_Recorder`, a group commit in a worker thread
   while the relaying goes on), with the claims of those logs released in the same
   write, and only while the logs are still this sender's (`store.logs.ClaimLost`).

The delivery's state is read between batches: `paused` ends the loop with nothing
claimed, `stopped` also turns what is left into Ignored logs. When the relay is
unreachable the sender records the answers it did get, backs off and resends only
the rest; no recipient is marked failed for the relay's fault.

Who takes a dead or stalled sender's claims over is not decided here (`engine.claims`):
one process per database releases what a previous process left when it takes the
send lock; a fleet of workers releases a stalled worker's claim when its heartbeat
stops. Either way a log is claimed before it is relayed and released when its answer
is recorded, so what can be sent twice after a crash is at most the messages relayed
and not yet recorded: those in flight and the answers of about one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot.context import Context
from bot.domain.executions import ExecutionState
from bot.domain.failures import reason_for_reply
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import Event, LogEvent
from bot.engine.claims import Claim, LocalClaim
from bot.engine.message import MessageSkeleton
from bot.engine.rendering import MessageTemplates, RenderError, profile_context
from bot.engine.transports.base import (
    Envelope,
    FenceLost,
    RelayResult,
    RelayUnavailable,
    Transport,
)
from bot.store import deliveries, executions, logs
from bot.store.db import bound_idle
from bot.store.logs import Claimed, ClaimLost, Relayed

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

UNRECORDED_MAX = 64  # answers waiting for a write before the relaying waits for it

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


class _Superseded(Exception):
    """This sender's claim was taken over: it stops, leaving the logs to their new owner."""


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
        claim: Claim | None = None,
        batch_size: int | None = None,
        backoff: Backoff = Backoff(),
        sleep: Sleep = asyncio.sleep,
        on_batch: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        relay_wait: float | None = None,
        guard: Callable[[int], object] | None = None,
    ) -> None:
        self.ctx = ctx
        # Called with the execution id after each recorded batch, before the state is
        # read again: the send guard, which may pause the delivery on the relay's
        # answers (`services.deliveries.guard`); the loop then stops as for a Pause.
        self.guard = guard
        # Seconds of back-off one relay outage may cost before the sender gives up
        # (`RelayGaveUp`, the rest left queued); None: wait for the relay however long
        # (a server or a worker, which have nothing better to do).
        self.relay_wait = relay_wait
        self.claim: Claim = claim or LocalClaim()
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
        """Send until the execution is finished, paused or stopped (or this sender's claim
        is taken over); return the execution's state."""
        design = self._design(execution_id)
        try:
            while True:
                state = self._state(execution_id)
                if state is DeliveryState.IN_PROGRESS and self.should_stop():
                    return state
                if state is not DeliveryState.IN_PROGRESS:
                    state = self._leave(execution_id, state)
                    self.on_batch(execution_id)
                    return state
                if not await self.claim.holds():
                    raise _Superseded
                claimed = self._claim(execution_id)
                if not claimed:
                    if self._claimed_by_others(execution_id):
                        # Another sender still relays a batch: it finishes the execution.
                        return state
                    if self._waiting_for_wave(execution_id):
                        # A recipient-local send between two waves: the next one is due
                        # again when it comes (`store.executions.to_send`).
                        self.on_batch(execution_id)
                        return state
                    state = self._finish(execution_id)
                    self.on_batch(execution_id)
                    return state
                await self._relay(execution_id, self._envelopes(claimed, design), design)
                if self.guard is not None:
                    await asyncio.to_thread(self.guard, execution_id)
                self.on_batch(execution_id)
        except _Superseded:
            log.warning(
                "claim %s of execution %d was taken over; this sender stops",
                self.claim.token,
                execution_id,
            )
            return self._state(execution_id)

    async def retry(self, execution_id: int) -> int:
        """Send again the soft-bounced logs whose retry is due; return how many were tried."""
        design = self._design(execution_id)
        tried = 0
        try:
            while True:
                if not await self.claim.holds():
                    raise _Superseded
                claimed = self._claim_retries(execution_id)
                if not claimed:
                    return tried
                tried += len(claimed)
                counts = {c.log_id: c.retry_count for c in claimed}
                envelopes = self._envelopes(claimed, design)
                await self._relay(execution_id, envelopes, design, counts)
        except _Superseded:
            log.warning("claim %s was taken over during retries; stopping", self.claim.token)
            return tried

    async def _relay(
        self,
        execution_id: int,
        envelopes: list[Envelope],
        design: _Design,
        retry_counts: dict[int, int] | None = None,
    ) -> None:
        """Relay the batch, its answers recorded as they come (`_Recorder`); raises
        `_Superseded` when the claim is lost."""
        remaining = envelopes
        attempt = 0
        waited = 0.0
        while remaining:
            recorder = _Recorder(self, design.skeleton, retry_counts)
            fence = recorder.fence
            try:
                await self.transport.send(remaining, fence, recorder.put)
                remaining = []
            except FenceLost as exc:
                # The answers recorded so far are ours; what was answered after the
                # claim was lost is the new owner's to send again (the bound in README).
                await recorder.close(quietly=True)
                log.warning("stopped mid-batch, %d answers in this batch", len(exc.partial))
                raise _Superseded from exc
            except RelayUnavailable as exc:
                await self._close(recorder)
                answered = {r.log_id for r in exc.partial}
                remaining = [e for e in remaining if e.log_id not in answered]
                delay = self.backoff.delay(attempt)
                attempt += 1
                if self.relay_wait is not None and waited + delay > self.relay_wait:
                    self._release([e.log_id for e in remaining])
                    raise RelayGaveUp(exc.reason, waited) from exc
                waited += delay
                log.warning(
                    "relay unavailable (%s); %d messages wait, retrying in %.0f s",
                    exc.reason,
                    len(remaining),
                    delay,
                )
                await self._wait(delay)
                state = self._state(execution_id)
                if self.should_stop() or state is not DeliveryState.IN_PROGRESS:
                    # Paused, stopped or shutting down during the outage: the rest
                    # stays queued (its claims released) for the next round or start.
                    self._release([e.log_id for e in remaining])
                    return
                continue
            except BaseException:
                await recorder.close(quietly=True)
                raise
            await self._close(recorder)

    async def _close(self, recorder: _Recorder) -> None:
        try:
            await recorder.close()
        except ClaimLost as exc:
            raise _Superseded from exc

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

    def _claim(self, execution_id: int) -> list[Claimed]:
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as s:
            return logs.claim_queued(s, execution_id, self.claim.token, now, self.batch_size)

    def _claim_retries(self, execution_id: int) -> list[Claimed]:
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as s:
            if executions.validity_ended(s, execution_id, now):
                return []
            return logs.claim_retries(s, execution_id, self.claim.token, now, self.batch_size)

    def _waiting_for_wave(self, execution_id: int) -> bool:
        with self.ctx.sessions() as s:
            return logs.waiting_for_wave(s, execution_id, self.ctx.clock.now())

    def _claimed_by_others(self, execution_id: int) -> bool:
        with self.ctx.sessions() as s:
            return logs.claimed_count(s, execution_id) > 0

    def _release(self, log_ids: Sequence[int]) -> None:
        with self.ctx.sessions.begin() as s:
            bound_idle(s)  # a stopped sender must not hold these rows
            logs.release(s, log_ids, self.claim.token)

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
                links=skeleton.links(c.log_id),
            )
            try:
                rendered = design.templates.render(context)
            except RenderError as exc:
                unrenderable.append((c.log_id, f"{exc.part} line {exc.line}: {exc.reason}"))
                continue
            data = skeleton.build(c.log_id, c.email, rendered)
            envelopes.append(Envelope(c.log_id, skeleton.mail_from, c.email, data))
        if unrenderable:
            try:
                with self.ctx.sessions.begin() as s:
                    bound_idle(s)  # a stopped sender must not hold these rows
                    logs.record_unrenderable(
                        s, self.ctx.clock.now(), unrenderable, self.claim.token
                    )
            except ClaimLost as exc:
                raise _Superseded from exc
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
            logs.record_relayed(s, now, events, relayed, self.claim.token)
        self.claim.confirmed()

    def _finish(self, execution_id: int) -> DeliveryState:
        """Nothing left to send. A one-off delivery is finished; a recurring one goes on,
        only this occurrence's execution ends. A delivery paused or stopped meanwhile
        keeps that state (the compare-and-set refuses), and so does its execution."""
        now = self.ctx.clock.now()
        try:
            with self.ctx.sessions.begin() as s:
                bound_idle(s)  # a stopped sender must not hold these rows
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
        """Stopped: the logs nobody relays (unclaimed, or ours) are Ignored. Another
        sender's batch is its own: it records it, then finds the stop itself."""
        if state is DeliveryState.STOPPED:
            with self.ctx.sessions.begin() as s:
                bound_idle(s)  # a stopped sender must not hold these rows
                logs.cancel_unsent(
                    s,
                    self.ctx.clock.now(),
                    execution_id,
                    include_claimed=False,
                    claimed_by=self.claim.token,
                )
        return state


class RelayGaveUp(Exception):
    """The relay stayed unavailable for the sender's `relay_wait`: what was not relayed
    is queued again, unclaimed, for the next round."""

    def __init__(self, reason: str, waited: float) -> None:
        super().__init__(f"{reason} (gave up after {waited:.0f} s of retries)")
        self.reason = reason
        self.waited = waited


class _Recorder:
    """Records answers as they come, in a worker thread, as a group commit: while one
    write runs, the answers that arrive wait, and the next write takes them all. Under
    load the writes grow; when the relay is slow each answer is recorded almost at once.
    So what a crash or a takeover can leave relayed and unrecorded is the messages in
    flight and at most two groups of `UNRECORDED_MAX` (one being written, one waiting).
    """

    def __init__(
        self, sender: Sender, skeleton: MessageSkeleton, retry_counts: dict[int, int] | None
    ) -> None:
        self.sender = sender
        self.skeleton = skeleton
        self.retry_counts = retry_counts
        self.pending: list[RelayResult] = []
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.closing = False
        self.error: BaseException | None = None
        self.task = asyncio.ensure_future(self._loop())

    def put(self, result: RelayResult) -> None:
        self.pending.append(result)
        self.wake.set()

    async def fence(self) -> bool:
        """Go on only while the answers are being recorded as ours, no more than
        `UNRECORDED_MAX` wait (the bound on what a crash leaves unrecorded), and the
        claim holds."""
        while len(self.pending) >= UNRECORDED_MAX and self.error is None:
            self.drained.clear()
            await self.drained.wait()
        return self.error is None and await self.sender.claim.holds()

    async def _loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch, self.pending = self.pending, []
                self.drained.set()
                try:
                    await asyncio.to_thread(
                        self.sender._record_results, batch, self.skeleton, self.retry_counts
                    )
                except Exception as exc:  # ClaimLost, or the database: the relay stops
                    self.error = exc
                    self.drained.set()
                    return
            if self.closing:
                return

    async def close(self, *, quietly: bool = False) -> None:
        """Record what is left; raise what stopped the recording (unless `quietly`)."""
        self.closing = True
        self.wake.set()
        await self.task
        if self.error is not None and not quietly:
            raise self.error
        if self.error is not None:
            log.warning("recording answers failed while stopping: %s", self.error)


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
