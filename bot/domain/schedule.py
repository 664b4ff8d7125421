"""Schedules, recurrence options and the validity period (SPEC sections 3 and 4)."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum

from bot.domain.errors import DomainError

MAX_VALIDITY = timedelta(days=3, hours=12)
DEFAULT_VALIDITY = MAX_VALIDITY

_DURATION = re.compile(r"(\d+)\s*([dhm])", re.IGNORECASE)
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class ScheduleMode(StrEnum):
    ON_CONFIRM = "on-confirm"
    AT = "at"
    RECIPIENT_LOCAL = "recipient-local"  # a time of day in each recipient's zone


class ScheduleKind(StrEnum):
    """How a delivery leaves, as people are shown it: a recurring one has a recurrence
    instead of a schedule."""

    ON_CONFIRM = "on-confirm"
    AT = "at"
    RECIPIENT_LOCAL = "recipient-local"
    RECURRING = "recurring"


class Aggregation(StrEnum):
    NONE = "none"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def parse_duration(text: str) -> timedelta:
    """Parse "3d12h", "36h" or "90m"; raise DomainError naming the accepted form."""
    cleaned = text.strip().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts).lower() != cleaned.lower():
        raise DomainError(f"{text!r} is not a duration; write it like 3d12h, 36h or 90m")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit.lower()]: int(number)})
    return total


def check_validity(period: timedelta) -> timedelta:
    if period <= timedelta(0):
        raise DomainError("the validity period must be longer than zero")
    if period > MAX_VALIDITY:
        raise DomainError("the validity period is at most 3d12h (3.5 days)")
    return period


def format_duration(period: timedelta) -> str:
    minutes = int(period.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n)
    return text or "0m"


def default_request_confirmation(aggregation: Aggregation) -> bool:
    """Confirmation is on by default, and only possible, without an aggregation period."""
    return aggregation is Aggregation.NONE


def check_request_confirmation(aggregation: Aggregation, requested: bool) -> None:
    if requested and aggregation is not Aggregation.NONE:
        raise DomainError(
            f"confirmation before sending is only possible without an aggregation period "
            f"(this one aggregates by {aggregation.value}); remove request_confirmation "
            "or set aggregation: none"
        )
