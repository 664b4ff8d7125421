"""Sending what is due: every execution in progress, then the soft bounces to retry.

The engine's sender does the work batch by batch; this use case only decides what it
works on, from the database, so any process can run it and find the same work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.context import Context
from bot.domain.executions import label
from bot.domain.lifecycle import DeliveryState
from bot.engine.sender import Sender
from bot.engine.transports.base import Transport
from bot.store import executions


@dataclass
class SendReport:
    # ref (one-off) or "ref@key" (an occurrence) -> its state after sending
    sent: dict[str, DeliveryState] = field(default_factory=dict)
    retried: int = 0


async def send_due(
    ctx: Context,
    transport: Transport,
    *,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SendReport:
    """Send what in-progress executions still have queued, then the retries due.

    `should_stop` (the process shutting down) ends sending after the batch in flight;
    what is left is due again at the next start.
    """
    report = SendReport()
    sender = Sender(ctx, transport, on_batch=on_batch, should_stop=should_stop)
    with ctx.sessions() as s:
        sending = executions.to_send(s)
        retrying = executions.with_retries_due(s, ctx.clock.now())
    for execution_id, ref, key in sending:
        report.sent[label(ref, key)] = await sender.run(execution_id)
    for execution_id in retrying:
        report.retried += await sender.retry(execution_id)
    return report
