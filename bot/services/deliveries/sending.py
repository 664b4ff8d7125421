"""Sending what is due: every execution in progress, then the soft bounces to retry.

The engine's sender does the work batch by batch; this use case only decides what it
works on, from the database, so any process can run it and find the same work.

One execution that cannot be sent (its messages cannot be built, say) must not stop
the others: its failure is caught here, the execution is failed with the reason
(`lifecycle.fail_execution`, shown in its Deployment message), and the loop goes on.
A database that is unavailable is not such a failure: it stops the round, and the
next tick tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.executions import label
from bot.domain.lifecycle import DeliveryState
from bot.engine.sender import RelayGaveUp, Sender
from bot.engine.transports.base import Transport
from bot.services.deliveries import guard
from bot.services.deliveries.lifecycle import fail_execution
from bot.services.progress import Progress
from bot.store import counters, executions
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class SendReport:
    # ref (one-off) or "ref@key" (an occurrence) -> its state after sending
    sent: dict[str, DeliveryState] = field(default_factory=dict)
    retried: int = 0
    relay_unavailable: str | None = None  # why sending stopped for this round
    failed: dict[str, str] = field(default_factory=dict)  # label -> why it could not be sent
    deferred: list[str] = field(default_factory=list)  # handed to the workers (PostgreSQL)


@dataclass(frozen=True)
class Work:
    """What is due to send: (execution id, label) in progress, and executions to retry."""

    sending: list[tuple[int, str]]
    retrying: list[int]


def what_to_send(ctx: Context) -> Work:
    with ctx.sessions() as s:
        sending = [(i, label(ref, key)) for i, ref, key in executions.to_send(s, ctx.clock.now())]
        return Work(sending, executions.with_retries_due(s, ctx.clock.now()))


async def send_due(
    ctx: Context,
    transport: Transport,
    *,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    relay_wait: float | None = None,
    progress: Progress | None = None,
) -> SendReport:
    """Send what in-progress executions still have queued, then the retries due.

    `should_stop` (the process shutting down) ends sending after the batch in flight;
    what is left is due again at the next start. `relay_wait`: after that many seconds
    of retries in one relay outage, sending stops for this round (`relay_unavailable`);
    nothing is marked failed and the rest is due again. `progress(done, total, step)`
    is told, after each batch, how many of an execution's messages are no longer queued
    out of its messages to deliver (its counters: one row read).
    """
    report = SendReport()
    names: dict[int, str] = {}
    told = _Told(ctx, names, on_batch, progress)
    sender = Sender(
        ctx,
        transport,
        on_batch=told.batch_done,
        should_stop=should_stop,
        relay_wait=relay_wait,
        guard=lambda execution_id: guard.check(ctx, execution_id),
    )
    with ctx.sessions() as s:
        sending = executions.to_send(s, ctx.clock.now())
        retrying = executions.with_retries_due(s, ctx.clock.now())
    for execution_id, ref, key in sending:
        name = names[execution_id] = label(ref, key)
        told.batch_done(execution_id, sent=False)
        try:
            report.sent[name] = await sender.run(execution_id)
        except RelayGaveUp as exc:
            report.relay_unavailable = str(exc)
            with ctx.sessions() as s:
                report.sent[name] = executions.sending_state(s, execution_id)
            if on_batch is not None:
                on_batch(execution_id)
            return report  # the relay is every delivery's: the others would wait too
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("sending %s failed; the other deliveries go on", name)
            report.failed[name] = _reason(exc)
            report.sent[name] = _give_up(ctx, execution_id, report.failed[name])
            if on_batch is not None:
                on_batch(execution_id)
    for execution_id in retrying:
        try:
            report.retried += await sender.retry(execution_id)
        except RelayGaveUp as exc:
            report.relay_unavailable = str(exc)
            return report
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("retrying the soft bounces of execution %d failed", execution_id)
            report.failed[f"retries of execution {execution_id}"] = _reason(exc)
    return report


class _Told:
    """After each batch: the caller's `on_batch`, then the execution's progress."""

    def __init__(
        self,
        ctx: Context,
        names: dict[int, str],
        on_batch: Callable[[int], None] | None,
        progress: Progress | None,
    ) -> None:
        self.ctx = ctx
        self.names = names
        self.on_batch = on_batch
        self.progress = progress

    def batch_done(self, execution_id: int, *, sent: bool = True) -> None:
        if sent and self.on_batch is not None:
            self.on_batch(execution_id)
        if self.progress is None:
            return
        with self.ctx.sessions() as s:
            now = counters.live_counters(s, execution_id)
        step = f"sending {self.names.get(execution_id, execution_id)}"
        self.progress(max(now.to_deliver - now.queued, 0), now.to_deliver, step)


def _reason(exc: BaseException) -> str:
    """What the channel is told: the error as it reads, its kind when it says nothing."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _give_up(ctx: Context, execution_id: int, reason: str) -> DeliveryState:
    """Fail the execution (unless a person stopped or paused it meanwhile); its state."""
    try:
        fail_execution(ctx, execution_id, reason)
    except DomainError:
        log.warning("execution %d changed while being failed; left as it is", execution_id)
    with ctx.sessions() as s:
        return executions.sending_state(s, execution_id)
