"""Durations, the validity period and the request-confirmation option (SPEC 3 and 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.errors import DomainError
from bot.domain.schedule import (
    DEFAULT_VALIDITY,
    MAX_VALIDITY,
    Aggregation,
    check_request_confirmation,
    check_validity,
    default_request_confirmation,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d12h", timedelta(days=3, hours=12)),
        ("36h", timedelta(hours=36)),
        ("90m", timedelta(minutes=90)),
        ("1d", timedelta(days=1)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("1d2h3m", timedelta(days=1, hours=2, minutes=3)),
        ("3D12H", timedelta(days=3, hours=12)),
        (" 3d 12h ", timedelta(days=3, hours=12)),
        ("0m", timedelta(0)),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: str, expected: timedelta) -> None:
    """3d12h, 36h, 90m and combinations, case and spaces aside."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "3", "d", "3x", "3.5d", "-3d", "3d12", "three days", "12h!", "1w", "3d,12h"],
)
def test_parse_duration_rejects_other_forms_helpfully(text: str) -> None:
    """A bad duration is refused with an example of the accepted form."""
    with pytest.raises(DomainError) as info:
        parse_duration(text)
    message = str(info.value)
    assert repr(text) in message
    assert "3d12h" in message and "36h" in message and "90m" in message


def test_validity_default_and_maximum_are_three_and_a_half_days() -> None:
    """SPEC section 3: default 3.5 days, at most 3.5 days."""
    assert DEFAULT_VALIDITY == MAX_VALIDITY == timedelta(days=3, hours=12)


@pytest.mark.parametrize(
    "period",
    [timedelta(minutes=1), timedelta(hours=36), timedelta(days=3, hours=12)],
    ids=["1m", "36h", "3d12h"],
)
def test_check_validity_accepts_up_to_maximum(period: timedelta) -> None:
    """Any positive period up to and including 3d12h is valid."""
    assert check_validity(period) == period


def test_check_validity_rejects_longer_than_maximum() -> None:
    """One minute over 3.5 days is refused, and the message gives the limit."""
    with pytest.raises(DomainError, match="at most 3d12h"):
        check_validity(parse_duration("3d12h1m"))
    with pytest.raises(DomainError, match="at most 3d12h"):
        check_validity(parse_duration("4d"))


@pytest.mark.parametrize("period", [timedelta(0), timedelta(hours=-1)], ids=["zero", "negative"])
def test_check_validity_rejects_empty_period(period: timedelta) -> None:
    """A period of zero would expire every message at once."""
    with pytest.raises(DomainError, match="longer than zero"):
        check_validity(period)


@pytest.mark.parametrize(
    ("period", "text"),
    [
        (timedelta(days=3, hours=12), "3d12h"),
        (timedelta(hours=36), "1d12h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(0), "0m"),
    ],
)
def test_format_duration(period: timedelta, text: str) -> None:
    """Durations print in the same form people type them."""
    assert format_duration(period) == text


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=60 * 24 * 30))
def test_format_then_parse_round_trips(minutes: int) -> None:
    """Whatever Greenlight prints, it reads back to the same duration."""
    period = timedelta(minutes=minutes)
    assert parse_duration(format_duration(period)) == period


@pytest.mark.parametrize(
    ("aggregation", "default"),
    [
        (Aggregation.NONE, True),
        (Aggregation.DAY, False),
        (Aggregation.WEEK, False),
        (Aggregation.MONTH, False),
    ],
    ids=str,
)
def test_request_confirmation_default(aggregation: Aggregation, default: bool) -> None:
    """Confirmation is on by default without aggregation, off (impossible) with it."""
    assert default_request_confirmation(aggregation) is default


def test_request_confirmation_allowed_without_aggregation() -> None:
    """Occurrences that are their own execution can ask for confirmation."""
    check_request_confirmation(Aggregation.NONE, True)
    check_request_confirmation(Aggregation.NONE, False)


@pytest.mark.parametrize(
    "aggregation", [Aggregation.DAY, Aggregation.WEEK, Aggregation.MONTH], ids=str
)
def test_request_confirmation_with_aggregation_is_a_clear_error(
    aggregation: Aggregation,
) -> None:
    """Asking for confirmation with an aggregation period says why and how to fix it."""
    with pytest.raises(DomainError) as info:
        check_request_confirmation(aggregation, True)
    message = str(info.value)
    assert "without an aggregation period" in message
    assert aggregation.value in message
    assert "aggregation: none" in message
    check_request_confirmation(aggregation, False)  # not asking is always fine
