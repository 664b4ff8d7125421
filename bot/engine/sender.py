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

from sqlalchemy import bindparam, func, select, update

from bot.context import Context
from bot.domain.lifecycle import Action, DeliveryState, transition
from bot.domain.logs import Event, FailureType, LogStatus
from bot.engine.message import MessageSkeleton
from bot.engine.transports.base import Envelope, RelayResult, RelayUnavailable, Transport
from bot.services.outcomes import LogEvent, apply_log_events
from bot.services.rendering import MessageTemplates, RenderError, profile_context
from bot.services.sending import cancel_unsent
from bot.store.models import Delivery, Execution, Profile, SendingLog

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


def failure_reason(result: RelayResult) -> str:
    """A reason of SPEC section 7 from the relay's answer."""
    code = result.smtp_code or 0
    if code in (550, 551, 553):
        return "user unknown"
    if code in (452, 552):
        return "mailbox full"
    if code == 421:
        return "unreachable"
    if code == 554 or 500 <= code < 600:
        return "refused"
    if result.outcome == "hard" and not code:
        return "invalid address"
    return "not defined"


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts while the relay is unavailable: 1 s doubling up to 60 s."""

    first: float = 1.0
    factor: float = 2.0
    ceiling: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.ceiling, self.first * self.factor**attempt)


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
        templates, skeleton = self._design(execution_id)
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
                envelopes, unrenderable = self._build(claimed, templates, skeleton)
                if unrenderable:
                    self._record(unrenderable)
                await self._relay(execution_id, envelopes, skeleton)
                self.on_batch(execution_id)
        finally:
            _LIVE_TOKENS.discard(token)

    async def retry(self, execution_id: int) -> int:
        """Send again the soft-bounced logs whose retry is due; return how many were tried."""
        templates, skeleton = self._design(execution_id)
        token = new_claim_token()
        _LIVE_TOKENS.add(token)
        tried = 0
        try:
            while True:
                claimed = self._claim_retries(execution_id, token)
                if not claimed:
                    return tried
                tried += len(claimed)
                counts = {log_id: count for log_id, _, _, count in claimed}
                envelopes, unrenderable = self._build([c[:3] for c in claimed], templates, skeleton)
                if unrenderable:
                    self._record(unrenderable)
                await self._relay(execution_id, envelopes, skeleton, counts)
        finally:
            _LIVE_TOKENS.discard(token)

    async def _relay(
        self,
        execution_id: int,
        envelopes: list[Envelope],
        skeleton: MessageSkeleton,
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
                self._record_results(results, skeleton, retry_counts)
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "relay unavailable (%s); %d messages wait, retrying in %.0f s",
                    exc.reason,
                    len(envelopes),
                    delay,
                )
                await self.sleep(delay)
                if self._state(execution_id) is not DeliveryState.IN_PROGRESS:
                    # Paused or stopped during the outage: the rest stays queued.
                    self._release([e.log_id for e in envelopes])
                    return
                continue
            self._record_results(results, skeleton, retry_counts)
            return

    # -- database steps ------------------------------------------------------------------

    def _design(self, execution_id: int) -> tuple[MessageTemplates, MessageSkeleton]:
        with self.ctx.sessions() as s:
            e = s.get(Execution, execution_id)
            if e is None:
                raise LookupError(f"no execution {execution_id}")
            d = s.get(Delivery, e.delivery_id)
            assert d is not None
            self._delivery = {"ref": d.ref, "name": d.name}
            return (
                MessageTemplates(d.subject, d.html, d.text),
                MessageSkeleton.for_delivery(d, self.ctx.settings, self.ctx.clock),
            )

    def _state(self, execution_id: int) -> DeliveryState:
        """The delivery's state; for an occurrence of a recurring one, also its own.

        Pause and stop act on the delivery (every occurrence); an occurrence that is
        no longer in progress (finished, skipped) is not sent further.
        """
        with self.ctx.sessions() as s:
            state, cron, execution_state = s.execute(
                select(Delivery.state, Delivery.recurrence_cron, Execution.state)
                .join(Execution, Execution.delivery_id == Delivery.id)
                .where(Execution.id == execution_id)
            ).one()
        running = DeliveryState.IN_PROGRESS.value
        if cron and state == running and execution_state != running:
            return DeliveryState.FINISHED
        return DeliveryState(state)

    def _claim(self, execution_id: int, token: str) -> list[tuple[int, int, str]]:
        """Atomically take the next queued logs for this sender: (log id, profile id, email)."""
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as s:
            candidates = (
                select(SendingLog.id)
                .where(
                    SendingLog.execution_id == execution_id,
                    SendingLog.status == LogStatus.QUEUED.value,
                    SendingLog.claim_token.is_(None),
                )
                .order_by(SendingLog.id)
                .limit(self.batch_size)
            )
            if s.bind is not None and s.bind.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            rows = s.execute(
                update(SendingLog)
                .where(SendingLog.id.in_(candidates.scalar_subquery()))
                .values(claim_token=token, claimed_at=now)
                .returning(SendingLog.id, SendingLog.profile_id, SendingLog.email)
                .execution_options(synchronize_session=False)
            ).all()
        return sorted((r[0], r[1], r[2]) for r in rows)

    def _claim_retries(self, execution_id: int, token: str) -> list[tuple[int, int, str, int]]:
        """Take soft-bounced logs whose retry is due, counting the attempt as it is claimed."""
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as s:
            ends = s.scalar(select(Execution.validity_ends_at).where(Execution.id == execution_id))
            if ends is not None and ends <= now:
                return []
            candidates = (
                select(SendingLog.id)
                .where(
                    SendingLog.execution_id == execution_id,
                    SendingLog.failure_type == FailureType.SOFT.value,
                    SendingLog.final.is_(False),
                    SendingLog.next_retry_at <= now,
                    SendingLog.claim_token.is_(None),
                )
                .order_by(SendingLog.id)
                .limit(self.batch_size)
            )
            if s.bind is not None and s.bind.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            rows = s.execute(
                update(SendingLog)
                .where(SendingLog.id.in_(candidates.scalar_subquery()))
                .values(
                    claim_token=token,
                    claimed_at=now,
                    # next_retry_at stays until the answer is recorded: after a crash the
                    # released log is still due and is tried again.
                    retry_count=SendingLog.retry_count + 1,
                )
                .returning(
                    SendingLog.id, SendingLog.profile_id, SendingLog.email, SendingLog.retry_count
                )
                .execution_options(synchronize_session=False)
            ).all()
        return sorted((r[0], r[1], r[2], r[3]) for r in rows)

    def release_claims(self, execution_id: int) -> int:
        """Free claims left by a sender that died: those logs will be sent (again).

        Claims of senders still running (here or in another live process) are left
        alone: see `claim_is_abandoned`.
        """
        now = self.ctx.clock.now()
        with self.ctx.sessions() as s:
            holders = s.execute(
                select(SendingLog.claim_token, func.min(SendingLog.claimed_at))
                .where(
                    SendingLog.execution_id == execution_id,
                    SendingLog.claim_token.is_not(None),
                )
                .group_by(SendingLog.claim_token)
            ).all()
        gone = [t for t, at in holders if claim_is_abandoned(t, at, now)]
        if not gone:
            return 0
        with self.ctx.sessions.begin() as s:
            return s.execute(
                update(SendingLog)
                .where(
                    SendingLog.execution_id == execution_id,
                    SendingLog.claim_token.in_(gone),
                )
                .values(claim_token=None, claimed_at=None)
            ).rowcount

    def _claimed_by_others(self, execution_id: int) -> bool:
        with self.ctx.sessions() as s:
            return bool(
                s.scalar(
                    select(func.count())
                    .select_from(SendingLog)
                    .where(
                        SendingLog.execution_id == execution_id,
                        SendingLog.claim_token.is_not(None),
                    )
                )
            )

    def _release(self, log_ids: Sequence[int]) -> None:
        if not log_ids:
            return
        with self.ctx.sessions.begin() as s:
            self._clear_claims(s, list(log_ids))

    def _build(
        self,
        claimed: list[tuple[int, int, str]],
        templates: MessageTemplates,
        skeleton: MessageSkeleton,
    ) -> tuple[list[Envelope], list[tuple[int, str]]]:
        with self.ctx.sessions() as s:
            profiles = {
                p.id: p
                for p in s.execute(
                    select(
                        Profile.id,
                        Profile.first_name,
                        Profile.last_name,
                        Profile.timezone,
                        Profile.attributes,
                    ).where(Profile.id.in_([c[1] for c in claimed]))
                )
            }
        envelopes: list[Envelope] = []
        unrenderable: list[tuple[int, str]] = []
        for log_id, profile_id, email in claimed:
            p = profiles[profile_id]
            context = profile_context(
                email=email,
                first_name=p.first_name,
                last_name=p.last_name,
                timezone=p.timezone,
                attributes=p.attributes,
                delivery=self._delivery,
            )
            try:
                rendered = templates.render(context)
            except RenderError as exc:
                unrenderable.append((log_id, f"{exc.part} line {exc.line}: {exc.reason}"))
                continue
            data = skeleton.build(log_id, email, rendered)
            envelopes.append(Envelope(log_id, skeleton.mail_from, email, data))
        return envelopes, unrenderable

    def _record(self, unrenderable: list[tuple[int, str]]) -> None:
        """A message that no longer renders is not sent: Ignored, with the reason kept."""
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as s:
            apply_log_events(
                s,
                now,
                [LogEvent(i, Event.CANCELLED, diagnostic=why) for i, why in unrenderable],
            )
            self._clear_claims(s, [i for i, _ in unrenderable])

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
        exhausted: set[int] = set()
        for r in results:
            status = str(r.smtp_code) if r.smtp_code else None
            if r.outcome == "accepted":
                events.append(LogEvent(r.log_id, Event.RELAYED, smtp_status=status))
                continue
            kind = Event.HARD_BOUNCE if r.outcome == "hard" else Event.SOFT_BOUNCE
            events.append(LogEvent(r.log_id, kind, failure_reason(r), status, r.smtp_message))
            tries = (retry_counts or {}).get(r.log_id, 0)
            if r.outcome == "soft" and tries >= settings.max_retries:
                events.append(LogEvent(r.log_id, Event.RETRY_FAILED, failure_reason(r)))
                exhausted.add(r.log_id)
        rows = [
            {
                "log_id": r.log_id,
                "message_id": skeleton.message_id(r.log_id),
                "retry_at": retry_at if r.outcome == "soft" and r.log_id not in exhausted else None,
            }
            for r in results
        ]
        with self.ctx.sessions.begin() as s:
            apply_log_events(s, now, events)
            s.connection().execute(
                update(SendingLog.__table__)
                .where(SendingLog.__table__.c.id == bindparam("log_id"))
                .values(
                    message_id=bindparam("message_id"),
                    next_retry_at=bindparam("retry_at"),
                    claim_token=None,
                    claimed_at=None,
                ),
                rows,
            )

    @staticmethod
    def _clear_claims(s, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
        s.execute(
            update(SendingLog)
            .where(SendingLog.id.in_(ids))
            .values(claim_token=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )

    def _finish(self, execution_id: int) -> DeliveryState:
        now = self.ctx.clock.now()
        with self.ctx.sessions.begin() as s:
            e = s.get(Execution, execution_id)
            assert e is not None
            d = s.get(Delivery, e.delivery_id)
            assert d is not None
            after = transition(DeliveryState(d.state), Action.FINISH)
            if not d.recurrence_cron:
                # A recurring delivery goes on: only this occurrence's execution ends.
                d.state = after.value
                d.finished_at = now
            e.state = after.value
            e.finished_at = now
        return after

    def _leave(self, execution_id: int, state: DeliveryState) -> DeliveryState:
        if state is DeliveryState.STOPPED:
            with self.ctx.sessions.begin() as s:
                cancel_unsent(s, self.ctx.clock.now(), execution_id, include_claimed=True)
        return state
