"""Occurrences of a recurring delivery and the periods they aggregate into (SPEC section 4).

Fire times come from APScheduler's `CronTrigger` in the delivery's time zone, so the
cron semantics are the scheduler's, not a second hand-written implementation. Two
rules are added on top, both about what a person expects of "every day at 02:30":

* when clocks go back, a wall-clock time that happens twice fires once (the first);
* when clocks go forward over it, it fires once, at the first instant after the gap
  (APScheduler's own behaviour).

One translation is needed: APScheduler 3 numbers weekdays from Monday = 0, crontab
from Sunday = 0 (and 7), so `0 9 * * 1` would fire on Tuesdays if passed through.
`crontab_trigger` rewrites the day-of-week field into weekday names first.

Everything here is pure: instants in, instants or strings out, all aware.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from bot.domain.schedule import Aggregation

# How far back `latest_between` looks at a time, widening until it reaches `after`:
# a missed occurrence is found without walking every tick of a long downtime.
_WINDOWS = (timedelta(hours=2), timedelta(days=2), timedelta(days=40), timedelta(days=800))
_STEP = timedelta(seconds=1)


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day_number(text: str) -> int:
    word = text.strip().lower()
    if word in _DAY_NAMES:
        return _DAY_NAMES.index(word)
    if not word.isdigit() or not 0 <= int(word) <= 7:
        raise ValueError(
            f"day of week {text!r} is neither a number from 0 to 7 nor a name (sun … sat)"
        )
    return int(word) % 7


def _step(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"step {text!r} must be a whole number of at least 1")
    return int(text)


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, names, ranges, lists, steps) as
    the comma-separated weekday names APScheduler reads the same way."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = _step(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)  # "mon-fri-x": high is "fri-x", refused
            first, last = _day_number(low), 7 if high.strip() == "7" else _day_number(high)
        else:
            first = _day_number(span)
            last = 6 if step_text else first
        if last < first:
            raise ValueError(f"day-of-week range {span!r} goes backwards")
        days |= {d % 7 for d in range(first, last + 1, step)}
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def crontab_trigger(cron: str, tz: str) -> CronTrigger:
    """APScheduler's trigger for a standard 5-field crontab line, weekdays as cron means them.

    Raises ValueError, with APScheduler's or our reason, for an invalid expression.
    """
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    fields[4] = crontab_weekdays(fields[4])
    trigger = CronTrigger.from_crontab(" ".join(fields), timezone=ZoneInfo(tz))
    # A date that never comes (31 February) would be accepted and never fire; every
    # date that exists comes within 8 years (29 February, skipped in 2100).
    if trigger.get_next_fire_time(None, NEVER_AFTER) is None:
        raise ValueError("it names a date that never comes (the day does not exist in that month)")
    return trigger


NEVER_AFTER = datetime(2000, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=256)
def _floating(cron: str) -> CronTrigger:
    """The trigger on a floating wall clock (its times read as UTC, which has no DST)."""
    return crontab_trigger(cron, "UTC")


def next_after(cron: str, tz: str, after: datetime) -> datetime:
    """The first occurrence strictly after `after`, in UTC.

    The expression is matched against the wall clock of `tz`, found on a floating
    clock (no DST) and only then placed in the zone. APScheduler 3 steps a day as 24
    hours in the zone itself, so across a change of the clocks it skips occurrences
    (`15 0 1 * *` in Paris, asked on 27 March 2026, answered 1 May: 1 April was lost).
    A wall time the clocks skip (spring forward) comes once, just after the gap; one
    they repeat (fall back) comes once, the first time. Cron has minute resolution, so
    searching from one second later is "strictly".
    """
    zone = ZoneInfo(tz)
    trigger = _floating(cron)
    wall = after.astimezone(zone).replace(tzinfo=UTC)
    while True:
        fire = trigger.get_next_fire_time(None, wall + _STEP)
        if fire is None:  # pragma: no cover - a 5-field crontab always fires again
            raise ValueError(f"{cron!r} never fires again")
        wall = fire
        # fold=0: a repeated wall time's first instant; a skipped one reads with the
        # offset before the change, so it comes once, just after the gap.
        found: datetime = fire.replace(tzinfo=zone).astimezone(UTC)
        if found > after:  # (the first instant of a repeated time may have passed)
            return found


def between(cron: str, tz: str, after: datetime, until: datetime) -> list[datetime]:
    """Every occurrence in (after, until], oldest first."""
    out: list[datetime] = []
    at = after
    while True:
        at = next_after(cron, tz, at)
        if at > until:
            return out
        out.append(at)


def latest_between(cron: str, tz: str, after: datetime, until: datetime) -> datetime | None:
    """The latest occurrence in (after, until], or None.

    This is the catch-up rule: after a downtime only the latest missed occurrence
    runs. The search starts near `until` and widens, so a year of downtime of a
    per-minute recurrence costs a few thousand steps, not half a million.
    """
    if until <= after:
        return None
    for window in _WINDOWS:
        start = max(after, until - window)
        found = between(cron, tz, start, until)
        if found:
            return found[-1]
        if start == after:
            return None
    found = between(cron, tz, after, until)
    return found[-1] if found else None


def period_key(aggregation: Aggregation, occurrence: datetime, tz: str) -> str:
    """The execution key of an occurrence: its instant, or its period in the delivery's zone.

    `none` -> "2026-11-23T09:00:00+00:00" (UTC, so it sorts and never depends on a
    zone's rules); `day` -> "2026-11-23"; `week` -> ISO week "2026-W48"; `month` ->
    "2026-11". Periods are local: a Paris delivery's day runs from midnight in Paris.
    """
    if aggregation is Aggregation.NONE:
        return occurrence.astimezone(UTC).isoformat()
    local = occurrence.astimezone(ZoneInfo(tz))
    if aggregation is Aggregation.DAY:
        return local.date().isoformat()
    if aggregation is Aggregation.WEEK:
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{local.year:04d}-{local.month:02d}"


def approval_deadline(
    cron: str, tz: str, occurrence: datetime, expiry: timedelta | None
) -> datetime:
    """When an undecided approval request expires: the next occurrence, or sooner.

    An optional expiry shortens the wait (never lengthens it: two occurrences must
    not wait for approval at the same time).
    """
    deadline = next_after(cron, tz, occurrence)
    if expiry is not None:
        deadline = min(deadline, occurrence + expiry)
    return deadline
