"""The end of a validity period, and the hourly recount of opens and clicks (SPEC 6)."""

from __future__ import annotations

from datetime import timedelta

from bot.context import Context
from bot.domain.digest import latest_slot, rates_due_since
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

    Due once per hour boundary (and per digest slot), not an hour after the last
    recount: the due work runs it before the digest, so the digest of 09:00 shows the
    rates of 09:00, not of 08:35. Between boundaries a tick costs one indexed query.
    """
    now = ctx.clock.now()
    s = ctx.settings
    since = rates_due_since(now, latest_slot(s.digest_cron, s.digest_timezone, now))
    with ctx.sessions.begin() as session:
        return counters.refresh_rates(session, since, now, INDICATOR_PERIOD)
