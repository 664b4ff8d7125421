"""Recipient-local sends: a time of day on a date, reached in each recipient's own zone.

A delivery with `mode: recipient-local` names a wall-clock moment ("09:00 on
2026-12-05") and a zone for profiles that have none. Each recipient's message is
due when that moment comes where they are; the recipients whose moment is the same
instant form a **wave** (Paris and Berlin share one; Tokyo's is eight hours earlier).
The waves are fixed at preparation, from the profiles' zones then.

Wall clocks are not always continuous. A time that does not exist on that date (the
hour skipped when summer time begins) is taken with the offset from before the
change, so it falls that much later; a time that exists twice (when summer time
ends) is its first occurrence. Both are what `zoneinfo` gives for `fold=0`.

The validity period counts from the start of sending, as for every send: the first
wave. It must reach past the last wave, or the last recipients would be sent after
feedback and retries had already stopped counting; such a delivery is refused at
preparation, with the shortest validity that fits. After the last wave the
execution is finished and the validity period runs on until it ends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.domain.errors import DomainError
from bot.domain.kpi import DASH
from bot.domain.schedule import format_duration
from bot.domain.times import local_date, parse_time, utc_minute

_LOCAL = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2})")
ZONES_SHOWN = 3  # zones named per wave in one line; the others are counted


@dataclass(frozen=True)
class LocalMoment:
    """The wall-clock moment every recipient gets the message at, in their zone."""

    day: date
    time_of_day: time

    @classmethod
    def parse(cls, text: str) -> LocalMoment:
        """ "2026-12-05T09:00", as stored with the delivery."""
        found = _LOCAL.fullmatch(text.strip())
        if found is None:
            raise DomainError(f"{text!r} is not a local date and time like 2026-12-05T09:00")
        day, hour, minute = found.groups()
        return cls(date.fromisoformat(day), time(int(hour), int(minute)))

    def text(self) -> str:
        return f"{self.day.isoformat()}T{self.time_of_day:%H:%M}"

    def instant_in(self, zone: str) -> datetime:
        """When this wall clock shows the moment in `zone`, in UTC."""
        local = datetime.combine(self.day, self.time_of_day, tzinfo=ZoneInfo(zone))
        return local.astimezone(UTC)


@dataclass(frozen=True)
class Wave:
    """The recipients due at one instant, and the zones they are in."""

    at: datetime  # UTC
    zones: tuple[str, ...]
    recipients: int

    def zones_text(self) -> str:
        """ "Europe/Paris, Europe/Berlin and 3 more zones"."""
        named = list(self.zones[:ZONES_SHOWN])
        more = len(self.zones) - len(named)
        if more:
            return ", ".join(named) + f" and {more} more zone{'s' if more > 1 else ''}"
        return ", ".join(named)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "zones": list(self.zones), "recipients": self.recipients}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Wave:
        at = parse_time(data["at"])
        assert at is not None
        return cls(at, tuple(data.get("zones") or ()), int(data.get("recipients") or 0))


class WavePlanner:
    """Each recipient's instant, one zone conversion per zone, and the waves they make."""

    def __init__(self, moment: LocalMoment, default_zone: str) -> None:
        self.moment = moment
        self.default_zone = default_zone
        self._instants: dict[str, datetime] = {}
        self._counts: dict[str, int] = {}

    def instant(self, zone: str | None) -> datetime:
        """When the recipient in `zone` (None: the delivery's zone) is due; counted."""
        name = zone or self.default_zone
        at = self._instants.get(name)
        if at is None:
            at = self._instants[name] = self.moment.instant_in(name)
        self._counts[name] = self._counts.get(name, 0) + 1
        return at

    def waves(self) -> list[Wave]:
        """The waves, earliest first, each with its zones (most recipients first)."""
        by_instant: dict[datetime, list[str]] = {}
        for name in self._counts:
            by_instant.setdefault(self._instants[name], []).append(name)
        return [
            Wave(
                at,
                tuple(sorted(names, key=lambda n: (-self._counts[n], n))),
                sum(self._counts[n] for n in names),
            )
            for at, names in sorted(by_instant.items())
        ]


def validity_problem(waves: Sequence[Wave], validity: timedelta) -> str | None:
    """Why a validity period counted from the first wave does not reach past the last."""
    if not waves:
        return None
    first, last = waves[0].at, waves[-1].at
    if first + validity > last:
        return None
    span = last - first
    return (
        f"the validity period ({format_duration(validity)}) counts from the first wave "
        f"({utc_minute(first)}) and would end at {utc_minute(first + validity)}, before the "
        f"last wave ({utc_minute(last)}, {waves[-1].zones_text()}); make validity longer "
        f"than {format_duration(span)}"
    )


def retries_short(
    waves: Sequence[Wave], validity: timedelta, retry_every: timedelta, retries: int
) -> str | None:
    """Why the last wave's soft bounces may not get all their retries: the validity left
    after it is shorter than they take. A warning, not an error: most messages are
    answered at the first try."""
    if not waves or retries <= 0:
        return None
    left = waves[0].at + validity - waves[-1].at
    needed = retry_every * retries
    if left <= timedelta(0) or left >= needed:
        return None  # too short is an error (validity_problem); long enough is fine
    return (
        f"the last wave ({utc_minute(waves[-1].at)}, {waves[-1].zones_text()}) has "
        f"{format_duration(left)} of the validity period left, less than the "
        f"{format_duration(needed)} its soft bounces' {retries} retries take (one every "
        f"{format_duration(retry_every)}); a longer validity gives them all"
    )


def passed_problem(ref: str, waves: Sequence[Wave], now: datetime) -> str | None:
    """Why a recipient-local delivery cannot be confirmed at `now`: a wave has passed."""
    passed = [w for w in waves if w.at <= now]
    if not passed:
        return None
    late = sum(w.recipients for w in passed)
    who = "recipient" if late == 1 else "recipients"
    return (
        f"{ref}'s wave for {passed[0].zones_text()} was due at {utc_minute(passed[0].at)}, "
        f"before now: {late:,} {who} would get it late; set a later date and prepare it again"
    )


def describe_local(local: str | None, zone: str | None) -> str:
    """ "09:00 in each recipient's time zone on Sat 5 Dec 2026 (Europe/Paris when a
    profile has none)": a recipient-local schedule as people are shown it."""
    if not local:
        return DASH
    moment = LocalMoment.parse(local)
    return (
        f"{moment.time_of_day:%H:%M} in each recipient's time zone on "
        f"{local_date(datetime.combine(moment.day, moment.time_of_day))} "
        f"({zone or 'UTC'} when a profile has none)"
    )


def span_text(waves: Sequence[Wave]) -> str:
    """ "3 waves, from 2026-12-05 00:00 UTC to 2026-12-05 17:00 UTC"."""
    if not waves:
        return "no waves"
    if len(waves) == 1:
        return f"1 wave, at {utc_minute(waves[0].at)}"
    return f"{len(waves)} waves, from {utc_minute(waves[0].at)} to {utc_minute(waves[-1].at)}"
