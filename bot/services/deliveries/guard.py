"""The send guard: pause a send whose relay answers say it is going wrong.

After each batch the sender records, `check` reads the execution's latest relayed
answers (those after the guard's window start) and asks the rule
(`domain.guard.trips`). When they cross the threshold it pauses the delivery, the
same compare-and-set as the Pause button (so the sender stops after the batch in
flight, and every recipient stays either sent once or queued), moves the window's
start to now and writes the alert that `services.messages.guard_alerts` posts in the
delivery's channel, all in one transaction, audited as `guard`.

Why it never pauses twice for one window: the pause and the window's move are one
transaction, and the move is a compare-and-set on the window start that was read.
Two senders of one execution that both read a crossing window pause it once; a
sender that read the window before a person's Resume (which starts the window
again) finds it moved and does nothing. After a Resume only new answers count, so
the send goes on until they cross the threshold in their turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.guard import Reading, policy_for, read, trips
from bot.domain.lifecycle import DeliveryState
from bot.services.deliveries.lifecycle import pause_by_guard
from bot.store import executions, guard

log = logging.getLogger(__name__)


class _Moved(Exception):
    """The window's start changed since it was read: this reading is not the window's."""


@dataclass(frozen=True)
class Tripped:
    """The guard paused `ref`: what it read."""

    ref: str
    execution_id: int
    reading: Reading


def check(ctx: Context, execution_id: int) -> Tripped | None:
    """Pause the execution's delivery if its window crosses the threshold; what it read
    then, or None (under the threshold, off, or someone acted first)."""
    with ctx.sessions() as s:
        w = guard.watched(s, execution_id)
        if w.state is not DeliveryState.IN_PROGRESS:
            return None
        policy = policy_for(w.guard, ctx.settings.guard)
        if not policy.enabled:
            return None
        since = w.since
        reading = read(guard.window(s, execution_id, since, policy.window), policy)
    if not trips(reading, policy):
        return None
    now = ctx.clock.now()
    detail = {
        "execution": w.key,
        "rate": round(reading.rate, 4),
        "failed": reading.failed,
        "counted": reading.counted,
        "policy": policy.to_json(),
    }
    try:
        with ctx.sessions.begin() as s:
            if not guard.move_window(s, execution_id, since, now):
                raise _Moved
            d = executions.get(s, execution_id).delivery
            ref = d.ref
            channel = d.deployment_channel or d.slack_channel
            pause_by_guard(s, now, d, {**detail, "channel": channel})
            guard.add_alert(s, execution_id, now, reading, policy.to_json(), channel)
    except (_Moved, DomainError):
        return None  # another sender paused it, or a person acted meanwhile
    log.warning(
        "send guard paused %s: %d of the last %d relayed refused or hard-bounced",
        ref,
        reading.failed,
        reading.counted,
    )
    return Tripped(ref, execution_id, reading)
