"""Occurrences, daylight-saving changes, the catch-up rule and aggregation periods."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.recurrence import (
    approval_deadline,
    between,
    crontab_trigger,
    crontab_weekdays,
    latest_between,
    next_after,
    period_key,
)
from bot.domain.schedule import Aggregation

PARIS = "Europe/Paris"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_next_occurrence_is_strictly_after_and_in_the_delivery_zone() -> None:
    # 10:00 in Paris is 09:00 UTC in winter.
    at = utc(2026, 11, 23, 9, 0)
    assert next_after("0 10 * * *", PARIS, at) == utc(2026, 11, 24, 9, 0)
    assert next_after("0 10 * * *", PARIS, at - timedelta(seconds=1)) == at


def test_spring_forward_keeps_the_local_time_and_moves_the_utc_one() -> None:
    found = between("0 9 * * *", PARIS, utc(2027, 3, 26, 12), utc(2027, 3, 29, 12))
    assert found == [utc(2027, 3, 27, 8), utc(2027, 3, 28, 7), utc(2027, 3, 29, 7)]
    assert {f.astimezone(ZoneInfo(PARIS)).hour for f in found} == {9}


def test_a_wall_time_repeated_when_clocks_go_back_fires_once() -> None:
    found = between("30 2 * * *", PARIS, utc(2026, 10, 24, 0), utc(2026, 10, 26, 12))
    # 02:30 happens twice on 25 October (00:30 and 01:30 UTC): it fires at the first only.
    assert found == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_a_wall_time_skipped_when_clocks_go_forward_fires_once_after_the_gap() -> None:
    found = between("30 2 * * *", PARIS, utc(2027, 3, 27, 12), utc(2027, 3, 29, 12))
    assert found == [utc(2027, 3, 28, 1, 30), utc(2027, 3, 29, 0, 30)]


def test_an_occurrence_after_the_clocks_change_is_not_skipped() -> None:
    """APScheduler 3 alone steps the days across the change of 29 March 2026 as 24 hours
    in Paris and answers 1 May for the first of the month; 1 April 00:15 (CEST) comes."""
    after = utc(2026, 3, 26, 23)
    assert next_after("15 0 1 * *", PARIS, after) == utc(2026, 3, 31, 22, 15)
    assert between("15 0 1 * *", PARIS, after, utc(2026, 3, 31, 22, 15)) == [
        utc(2026, 3, 31, 22, 15)
    ]
    # Every day at 00:30 across the change: no day lost, none twice.
    days = between("30 0 * * *", PARIS, utc(2026, 3, 27), utc(2026, 4, 1))
    assert days == [
        utc(2026, 3, 27, 23, 30),
        utc(2026, 3, 28, 23, 30),
        utc(2026, 3, 29, 22, 30),
        utc(2026, 3, 30, 22, 30),
        utc(2026, 3, 31, 22, 30),
    ]


def test_after_a_long_downtime_only_the_latest_missed_occurrence_is_due() -> None:
    after = utc(2026, 1, 1)
    until = utc(2026, 11, 23, 9, 7, 30)
    assert latest_between("* * * * *", "UTC", after, until) == utc(2026, 11, 23, 9, 7)
    assert latest_between("0 9 1 1 *", PARIS, after, until) == utc(2026, 1, 1, 8)
    assert latest_between("0 9 1 1 *", PARIS, utc(2026, 1, 2), until) is None
    assert latest_between("0 9 * * 1", PARIS, after, until) == utc(2026, 11, 23, 8)
    assert latest_between("0 9 * * *", PARIS, until, until) is None


CRONS = ["0 9 * * *", "30 2 * * *", "*/20 * * * *", "0 9,15 * * 1-5", "15 0 1 * *", "0 */7 * * *"]
ZONES = ["UTC", PARIS, "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=60, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    tz=st.sampled_from(ZONES),
    after=instants,
    span=st.integers(min_value=0, max_value=6 * 24 * 60),
)
def test_latest_between_is_the_last_of_all_occurrences(
    cron: str, tz: str, after: datetime, span: int
) -> None:
    until = after + timedelta(minutes=span)
    every = between(cron, tz, after, until)
    assert all(after < a < b <= until for a, b in itertools.pairwise(every))
    assert all(after < a <= until for a in every)
    # no local wall time twice
    walls = [a.astimezone(ZoneInfo(tz)).replace(tzinfo=None) for a in every]
    assert len(set(walls)) == len(walls)
    assert latest_between(cron, tz, after, until) == (every[-1] if every else None)


def test_period_keys() -> None:
    at = utc(2026, 11, 23, 9)
    assert period_key(Aggregation.NONE, at, PARIS) == "2026-11-23T09:00:00+00:00"
    assert period_key(Aggregation.DAY, at, PARIS) == "2026-11-23"
    assert period_key(Aggregation.WEEK, at, PARIS) == "2026-W48"
    assert period_key(Aggregation.MONTH, at, PARIS) == "2026-11"
    # Periods are local: 23:30 UTC on 30 November is 1 December in Paris.
    late = utc(2026, 11, 30, 23, 30)
    assert period_key(Aggregation.DAY, late, PARIS) == "2026-12-01"
    assert period_key(Aggregation.MONTH, late, PARIS) == "2026-12"
    assert period_key(Aggregation.DAY, late, "UTC") == "2026-11-30"
    # ISO weeks across a year end: 31 December 2026 is in week 53 of 2026.
    assert period_key(Aggregation.WEEK, utc(2026, 12, 31, 12), PARIS) == "2026-W53"
    assert period_key(Aggregation.WEEK, utc(2027, 1, 4, 12), PARIS) == "2027-W01"


@settings(max_examples=80, deadline=None)
@given(
    a=instants,
    b=instants,
    tz=st.sampled_from(ZONES),
    aggregation=st.sampled_from([Aggregation.DAY, Aggregation.WEEK, Aggregation.MONTH]),
)
def test_two_instants_share_a_period_exactly_when_their_local_period_is_the_same(
    a: datetime, b: datetime, tz: str, aggregation: Aggregation
) -> None:
    la, lb = a.astimezone(ZoneInfo(tz)), b.astimezone(ZoneInfo(tz))
    same = {
        Aggregation.DAY: la.date() == lb.date(),
        Aggregation.WEEK: la.isocalendar()[:2] == lb.isocalendar()[:2],
        Aggregation.MONTH: (la.year, la.month) == (lb.year, lb.month),
    }[aggregation]
    assert (period_key(aggregation, a, tz) == period_key(aggregation, b, tz)) is same
    if a <= b:
        # Keys sort like time: "2026-W09" < "2026-W10", "2026-09" < "2026-10".
        assert period_key(aggregation, a, tz) <= period_key(aggregation, b, tz)


@pytest.mark.parametrize(
    ("expiry", "expected"),
    [
        (None, utc(2026, 11, 24, 9)),
        (timedelta(hours=2), utc(2026, 11, 23, 11)),
        (timedelta(days=3), utc(2026, 11, 24, 9)),
    ],
)
def test_an_approval_waits_until_the_next_occurrence_or_its_shorter_expiry(
    expiry: timedelta | None, expected: datetime
) -> None:
    assert approval_deadline("0 10 * * *", PARIS, utc(2026, 11, 23, 9), expiry) == expected


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("1", "mon"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,sun", "sun,sat"),
        ("mon-wed,5", "mon,tue,wed,fri"),
        ("3/2", "wed,fri"),
        ("*", "*"),
    ],
)
def test_weekdays_are_read_as_crontab_numbers(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


def test_monday_in_crontab_is_monday() -> None:
    # 23 November 2026 is a Monday; APScheduler alone would read "1" as Tuesday.
    mondays = between("0 9 * * 1", PARIS, utc(2026, 11, 20), utc(2026, 12, 1))
    assert mondays == [utc(2026, 11, 23, 8), utc(2026, 11, 30, 8)]
    assert {m.astimezone(ZoneInfo(PARIS)).strftime("%A") for m in mondays} == {"Monday"}


@pytest.mark.parametrize("bad", ["0 9 * *", "0 9 * * 8", "0 9 * * 5-2", "0 25 * * *"])
def test_invalid_crontabs_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        crontab_trigger(bad, "UTC")
