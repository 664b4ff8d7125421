"""The end of a validity period, and the hourly recount of opens and clicks (SPEC 6)."""

from __future__ import annotations

from datetime import timedelta

from bot.context import Context
from bot.domain.failures import FailureReason
from bot.domain.logs import Event, LogEvent
from bot.store import counters, logs
from bot.store.outcomes import apply_log_events

CHUNK = 1000  # logs resolved per transaction
INDICATOR_PERIOD = timedelta(hours=1)


def expire_due(ctx: Context) -> int:
    """Resolve the open logs of executions whose validity period has ended, in chunks."""
    now = ctx.clock.now()
    total = 0
    while True:
        with ctx.sessions.begin() as s:
            ids = logs.open_past_validity(s, now, CHUNK)
            if not ids:
                return total
            events = [LogEvent(i, Event.EXPIRED, reason=FailureReason.NOT_DEFINED) for i in ids]
            apply_log_events(s, now, events)
            total += len(ids)


def refresh_indicators(ctx: Context) -> int:
    """The hourly job: recount unique openers and clickers of executions still in validity.

    Each execution is refreshed at most once an hour, so a tick every few seconds
    costs one indexed query when nothing is due.
    """
    with ctx.sessions.begin() as s:
        return counters.refresh_rates(s, ctx.clock.now(), INDICATOR_PERIOD)
