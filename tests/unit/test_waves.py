"""Recipient-local waves: each recipient's instant, the waves they make, the refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.errors import DomainError
from bot.domain.waves import (
    LocalMoment,
    Wave,
    WavePlanner,
    describe_local,
    passed_problem,
    retries_short,
    span_text,
    validity_problem,
)

NINE = LocalMoment(date(2026, 12, 5), time(9, 0))


def test_each_zone_gets_its_own_nine_oclock() -> None:
    assert NINE.instant_in("Asia/Tokyo") == datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
    assert NINE.instant_in("Europe/Paris") == datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    assert NINE.instant_in("America/New_York") == datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
    assert NINE.instant_in("Pacific/Honolulu") == datetime(2026, 12, 5, 19, 0, tzinfo=UTC)


def test_zones_at_one_instant_make_one_wave_and_zoneless_profiles_get_the_delivery_s() -> None:
    planner = WavePlanner(NINE, "Europe/Paris")
    for tz in ["Europe/Paris", "Europe/Berlin", "Europe/Berlin", None, "Asia/Tokyo"]:
        planner.instant(tz)
    waves = planner.waves()
    assert [w.at.hour for w in waves] == [0, 8]
    assert waves[0] == Wave(datetime(2026, 12, 5, 0, 0, tzinfo=UTC), ("Asia/Tokyo",), 1)
    # Berlin has the most recipients, so it is named first; None counted as Paris.
    assert waves[1].zones == ("Europe/Berlin", "Europe/Paris") and waves[1].recipients == 4


def test_a_wall_clock_skipped_by_summer_time_falls_later_and_a_repeated_one_is_the_first() -> None:
    # Europe/Paris: 2026-03-29 02:00 → 03:00; 2026-10-25 03:00 → 02:00.
    gap = LocalMoment(date(2026, 3, 29), time(2, 30)).instant_in("Europe/Paris")
    assert gap == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 summer time
    fold = LocalMoment(date(2026, 10, 25), time(2, 30)).instant_in("Europe/Paris")
    assert fold == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30 (summer)


def test_the_validity_must_reach_past_the_last_wave() -> None:
    waves = [
        Wave(datetime(2026, 12, 5, 0, 0, tzinfo=UTC), ("Asia/Tokyo",), 1),
        Wave(datetime(2026, 12, 5, 19, 0, tzinfo=UTC), ("Pacific/Honolulu",), 1),
    ]
    assert validity_problem(waves, timedelta(hours=20)) is None
    problem = validity_problem(waves, timedelta(hours=12))
    assert problem is not None
    assert "would end at 2026-12-05 12:00 UTC, before the last wave" in problem
    assert "Pacific/Honolulu" in problem and "longer than 19h" in problem
    assert validity_problem(waves, timedelta(hours=19)) is not None  # ends at it: too short


def test_a_wave_already_past_refuses_the_confirm_with_who_would_be_late() -> None:
    waves = [
        Wave(datetime(2026, 12, 5, 0, 0, tzinfo=UTC), ("Asia/Tokyo",), 3),
        Wave(datetime(2026, 12, 5, 8, 0, tzinfo=UTC), ("Europe/Paris",), 5),
    ]
    assert passed_problem("sale", waves, datetime(2026, 12, 4, 23, 59, tzinfo=UTC)) is None
    problem = passed_problem("sale", waves, datetime(2026, 12, 5, 1, 0, tzinfo=UTC))
    assert problem is not None
    assert problem.startswith("sale's wave for Asia/Tokyo was due at 2026-12-05 00:00 UTC")
    assert "3 recipients would get it late" in problem


def test_words() -> None:
    assert describe_local("2026-12-05T09:00", "Europe/Paris") == (
        "09:00 in each recipient's time zone on Sat 5 Dec 2026 "
        "(Europe/Paris when a profile has none)"
    )
    one = [Wave(datetime(2026, 12, 5, 8, 0, tzinfo=UTC), ("Europe/Paris",), 1)]
    assert span_text(one) == "1 wave, at 2026-12-05 08:00 UTC"
    many = Wave(datetime(2026, 12, 5, 8, 0, tzinfo=UTC), ("A/a", "B/b", "C/c", "D/d", "E/e"), 5)
    assert many.zones_text() == "A/a, B/b, C/c and 2 more zones"
    with pytest.raises(DomainError, match="like 2026-12-05T09:00"):
        LocalMoment.parse("9 o'clock")


@given(
    st.sampled_from(
        [
            "Asia/Tokyo",
            "Europe/Paris",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "Pacific/Kiritimati",
            "Pacific/Pago_Pago",
        ]
    ),
    st.dates(date(2026, 1, 1), date(2027, 12, 31)),
    st.integers(0, 23),
    st.integers(0, 59),
)
def test_a_recipient_s_wall_clock_reads_the_time_asked_for_unless_it_does_not_exist(
    tz: str, day: date, hour: int, minute: int
) -> None:
    from zoneinfo import ZoneInfo

    moment = LocalMoment(day, time(hour, minute))
    local = moment.instant_in(tz).astimezone(ZoneInfo(tz))
    if (local.date(), local.time()) != (day, time(hour, minute)):
        # Only inside a summer-time gap, and then later by the gap (Lord Howe's is 30 min).
        assert local.replace(tzinfo=None) - datetime.combine(day, time(hour, minute)) in (
            timedelta(minutes=30),
            timedelta(hours=1),
        )
    assert LocalMoment.parse(moment.text()) == moment


def test_the_last_wave_left_less_than_its_retries_take_is_a_warning() -> None:
    waves = [
        Wave(datetime(2026, 12, 5, 0, 0, tzinfo=UTC), ("Asia/Tokyo",), 1),
        Wave(datetime(2026, 12, 5, 14, 0, tzinfo=UTC), ("America/New_York",), 4),
    ]
    hourly = timedelta(hours=1)
    assert retries_short(waves, timedelta(hours=19), hourly, 5) is None  # 5h left: enough
    assert retries_short(waves, timedelta(hours=12), hourly, 5) is None  # an error instead
    assert retries_short(waves, timedelta(hours=16), hourly, 0) is None  # no retries
    warning = retries_short(waves, timedelta(hours=16), hourly, 5)
    assert warning == (
        "the last wave (2026-12-05 14:00 UTC, America/New_York) has 2h of the validity "
        "period left, less than the 5h its soft bounces' 5 retries take (one every 1h); "
        "a longer validity gives them all"
    )
