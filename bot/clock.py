"""Time as a dependency, so schedules, validity periods and hourly jobs are testable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that moves only when told to: tests and `jobs run-due --at` use it."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._at += delta


class ShiftedClock:
    """The system's time moved ahead by an offset that only grows: the playground's clock.

    The local playground lets a person jump ahead (to the next occurrence of a
    recurring delivery, to the next hour's digest) instead of waiting; every part of
    the server reads this one clock, so what it schedules, sends and tracks agrees.
    Time never goes back: a step back would run the same due work twice.
    """

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @property
    def offset(self) -> timedelta:
        return self._offset

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("the playground's clock only moves forward")
        self._offset += delta

    def jump_to(self, at: datetime) -> None:
        """Move on to `at` (nothing when it has passed already)."""
        ahead = at.astimezone(UTC) - self.now()
        if ahead > timedelta(0):
            self._offset += ahead
