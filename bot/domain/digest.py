"""Rules of the hourly KPI digest that need no I/O: which slot is due, what changed.

A *slot* is a fire time of `DIGEST_CRON` in `DIGEST_TIMEZONE`. Only the latest slot at
or before now is ever due: a process that was down for three hours posts one digest
when it comes back, not three.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from bot.domain.kpi import Kpis
from bot.domain.recurrence import crontab_trigger


class DigestState(StrEnum):
    PENDING = "pending"  # due, not yet claimed, or released after a Slack failure
    POSTING = "posting"  # claimed by one process
    POSTED = "posted"
    EMPTY = "empty"  # nothing was active: nothing posted
    SUPERSEDED = "superseded"  # a newer slot came before it was posted


FINAL_STATES = frozenset({DigestState.POSTED, DigestState.EMPTY, DigestState.SUPERSEDED})


class DigestPartKind(StrEnum):
    """One Slack post of a digest: a page of rows, or the chart."""

    PAGE = "page"
    CHART = "chart"
    MESSAGE = "message"  # a page stored as Block Kit by an earlier version, posted as is


# Windows tried, shortest first, when looking back for the latest fire time: an hourly
# cron is found in the first, a yearly one in the last.
_LOOKBACKS = (
    timedelta(hours=2),
    timedelta(days=1, hours=1),
    timedelta(days=8),
    timedelta(days=32),
    timedelta(days=367),
    timedelta(days=5 * 366),
)


def latest_slot(cron: str, tz: str, now: datetime) -> datetime | None:
    """The latest fire time of `cron` (read in `tz`) at or before `now`, in UTC.

    None when the expression has not fired in the last five years (e.g. 30 February).
    """
    trigger = crontab_trigger(cron, tz)
    now = now.astimezone(UTC)
    for lookback in _LOOKBACKS:
        fire = trigger.get_next_fire_time(None, now - lookback)
        if fire is None or fire > now:
            continue
        while True:
            following = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            if following is None or following > now:
                slot: datetime = fire.astimezone(UTC)
                return slot
            fire = following
    return None


@dataclass(frozen=True)
class KpiChange:
    """How a delivery's KPIs moved since the previous digest.

    `sent` is a count of messages; the rates move in percentage points. A figure is
    None when either side has no value (a rate with nothing to divide by).
    """

    sent: int
    delivered_pct: float | None
    bounces_errors_pct: float | None
    open_rate: float | None
    click_through_rate: float | None


def _points(now: float | None, before: float | None) -> float | None:
    if now is None or before is None:
        return None
    return round(now - before, 2)


def kpi_change(current: Kpis, previous: Kpis | None) -> KpiChange | None:
    """The change since `previous`; None when the delivery was not in the previous digest."""
    if previous is None:
        return None
    return KpiChange(
        sent=current.sent - previous.sent,
        delivered_pct=_points(current.delivered_pct, previous.delivered_pct),
        bounces_errors_pct=_points(current.bounces_errors_pct, previous.bounces_errors_pct),
        open_rate=_points(current.open_rate, previous.open_rate),
        click_through_rate=_points(current.click_through_rate, previous.click_through_rate),
    )


def rates_due_since(now: datetime, digest_slot: datetime | None) -> datetime:
    """The instant open and click rates must have been recounted at or after, at `now`.

    The start of the current hour (UTC), or the latest digest slot when it is later (a
    `DIGEST_TIMEZONE` half an hour off UTC): a refresh at 08:35 is redone at 09:00, not
    at 09:35, and since the due work refreshes before it builds the digest, a digest's
    rates are never older than its slot.
    """
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return max(hour, digest_slot) if digest_slot is not None else hour
