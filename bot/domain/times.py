"""Moments as people read them, in a time zone: "09:00 Europe/Paris on Fri 27 Nov 2026".

The same words in every locale and every place Greenlight shows a time (Slack, the
command line, the digest's chart), from the tzdata the project depends on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain.kpi import DASH

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 string or datetime as an aware datetime; naive values are UTC.

    SQLite gives datetimes back without their offset; the database holds UTC.
    """
    if value is None or value == "":
        return None
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone `name`, or UTC when it is missing or unknown (a label must not fail)."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def tz_name(name: str | None) -> str:
    return str(zone(name))


def local_date(at: datetime) -> str:
    """ "Fri 27 Nov 2026", the same in every locale."""
    return f"{_DAYS[at.weekday()]} {at.day} {_MONTHS[at.month - 1]} {at.year}"


def local_time(value: str | datetime | None, tz: str | None) -> str:
    """A moment as a person in `tz` reads it: "09:00 Europe/Paris on Fri 27 Nov 2026"."""
    at = parse_time(value)
    if at is None:
        return DASH
    local = at.astimezone(zone(tz))
    return f"{local:%H:%M} {tz_name(tz)} on {local_date(local)}"


def clock_time(value: str | datetime | None, tz: str | None, same_day_as: datetime | None) -> str:
    """ "09:02 Europe/Paris", with the date only when it differs from `same_day_as`."""
    at = parse_time(value)
    if at is None:
        return DASH
    local = at.astimezone(zone(tz))
    text = f"{local:%H:%M} {tz_name(tz)}"
    if same_day_as is None or same_day_as.astimezone(zone(tz)).date() != local.date():
        text += f" on {local_date(local)}"
    return text


def utc_minute(value: str | datetime | None) -> str:
    """ "2026-11-27 08:02 UTC": lists that mix many moments read best in one zone."""
    at = parse_time(value)
    if at is None:
        return DASH
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
