"""Quarantine rules of SPEC section 7: when an address stops being sent to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.quarantine import (
    EXCLUDED_STATUSES,
    AddressHealth,
    EmailStatus,
    complaint,
    delivered,
    hard_error,
    soft_error,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
VALID = AddressHealth()


def soft_errors(times: Sequence[datetime], h: AddressHealth = VALID) -> AddressHealth:
    for t in times:
        h = soft_error(h, t)
    return h


def every(spacing: timedelta, count: int, start: datetime = T0) -> list[datetime]:
    return [start + i * spacing for i in range(count)]


# --------------------------------------------------------------------------- hard errors


def test_hard_error_quarantines_at_once() -> None:
    """One hard error is enough: the address leaves the target at the next preparation."""
    h = hard_error(VALID, T0)
    assert h.status is EmailStatus.QUARANTINE
    assert h.status in EXCLUDED_STATUSES
    assert h.last_counted_error_at == T0


def test_hard_error_on_erroneous_address_quarantines() -> None:
    """Soft errors already counted do not delay a hard error's quarantine."""
    h = hard_error(soft_errors(every(2 * DAY, 2)), T0 + 5 * DAY)
    assert h.status is EmailStatus.QUARANTINE
    assert h.error_count == 3


def test_hard_error_after_lapsed_counter_starts_a_new_count() -> None:
    """A counter whose last error is over 10 days old has reset before the hard error."""
    old = soft_errors(every(2 * DAY, 4))
    h = hard_error(old, T0 + 6 * DAY + 11 * DAY)
    assert h.status is EmailStatus.QUARANTINE
    assert h.error_count == 1


def test_hard_error_keeps_denylist() -> None:
    """Denylisted is stronger than quarantine: a bounce does not downgrade it."""
    denied = complaint(VALID, T0)
    assert hard_error(denied, T0 + DAY).status is EmailStatus.DENYLISTED


# --------------------------------------------------------------------------- soft errors


def test_first_soft_error_counts() -> None:
    """A first soft error makes the address erroneous, still sent to."""
    h = soft_error(VALID, T0)
    assert h == AddressHealth(EmailStatus.ERRONEOUS, 1, T0)
    assert h.status not in EXCLUDED_STATUSES


@pytest.mark.parametrize(
    ("gap", "counted"),
    [
        (timedelta(hours=1), False),
        (timedelta(hours=23, minutes=59), False),
        (DAY, False),  # "more than 1 day": exactly one day is not enough
        (DAY + SECOND, True),
        (2 * DAY, True),
    ],
    ids=["1h", "23h59m", "exactly 1d", "1d+1s", "2d"],
)
def test_soft_error_counts_only_with_more_than_a_day_spacing(gap: timedelta, counted: bool) -> None:
    """Hourly retries of one message do not quarantine an address within a day."""
    first = soft_error(VALID, T0)
    second = soft_error(first, T0 + gap)
    assert second.error_count == (2 if counted else 1)
    assert second.last_counted_error_at == (T0 + gap if counted else T0)


def test_spacing_is_measured_from_last_counted_error() -> None:
    """Uncounted errors do not move the reference time forward."""
    times = [T0, T0 + timedelta(hours=12), T0 + timedelta(hours=20), T0 + DAY + SECOND]
    assert soft_errors(times).error_count == 2


def test_fifth_counted_error_quarantines() -> None:
    """Four counted soft errors leave the address erroneous; the fifth quarantines it."""
    four = soft_errors(every(2 * DAY, 4))
    assert four.status is EmailStatus.ERRONEOUS
    assert four.error_count == 4
    five = soft_error(four, T0 + 8 * DAY)
    assert five.status is EmailStatus.QUARANTINE
    assert five.error_count == 5


def test_many_errors_within_a_day_never_quarantine() -> None:
    """Fifty soft errors in one day count once."""
    h = soft_errors(every(timedelta(minutes=20), 50))
    assert h.error_count == 1
    assert h.status is EmailStatus.ERRONEOUS


def test_counter_resets_via_effective_after_ten_days() -> None:
    """Read eleven days later, an untouched counter has lapsed and the address is valid."""
    h = soft_errors(every(2 * DAY, 3))
    last = T0 + 4 * DAY
    assert h.effective(last + 10 * DAY) == h, "exactly 10 days: not yet reset"
    lapsed = h.effective(last + 10 * DAY + SECOND)
    assert lapsed == AddressHealth(EmailStatus.VALID, 0, None)


def test_counter_resets_at_next_soft_error_after_ten_days() -> None:
    """A soft error after a long quiet period counts as the first of a new series."""
    h = soft_errors(every(2 * DAY, 4))
    again = soft_error(h, T0 + 6 * DAY + 10 * DAY + SECOND)
    assert again == AddressHealth(EmailStatus.ERRONEOUS, 1, T0 + 16 * DAY + SECOND)


def test_counter_does_not_reset_at_exactly_ten_days() -> None:
    """Ten days to the second is not "more than 10 days": the fifth error quarantines."""
    h = soft_errors([*every(2 * DAY, 4), T0 + 6 * DAY + 10 * DAY])
    assert h.status is EmailStatus.QUARANTINE
    assert h.error_count == 5


def test_effective_keeps_quarantine() -> None:
    """A lapsed counter does not lift a quarantine: only a person does."""
    q = soft_errors(every(2 * DAY, 5))
    later = q.effective(T0 + 100 * DAY)
    assert later.status is EmailStatus.QUARANTINE
    assert later.error_count == 0


def test_effective_of_valid_address_is_itself() -> None:
    """Nothing to lapse on a clean address."""
    assert VALID.effective(T0) == VALID


# --------------------------------------------------------------------------- successes


def test_success_resets_counter() -> None:
    """A delivered message clears the errors counted so far."""
    h = delivered(soft_errors(every(2 * DAY, 4)), T0 + 7 * DAY)
    assert h == AddressHealth(EmailStatus.VALID, 0, None)


def test_success_between_errors_prevents_quarantine() -> None:
    """4 errors, a success, 4 errors: never 5 in a row, so never quarantined."""
    h = soft_errors(every(2 * DAY, 4))
    h = delivered(h, T0 + 7 * DAY)
    h = soft_errors(every(2 * DAY, 4, start=T0 + 8 * DAY), h)
    assert h.status is EmailStatus.ERRONEOUS
    assert h.error_count == 4


def test_soft_error_right_after_success_counts() -> None:
    """After a reset, the next error counts even within a day of the previous one."""
    h = delivered(soft_error(VALID, T0), T0 + timedelta(hours=1))
    assert soft_error(h, T0 + timedelta(hours=2)).error_count == 1


@pytest.mark.parametrize("status", sorted(EXCLUDED_STATUSES), ids=str)
def test_success_does_not_lift_exclusion(status: EmailStatus) -> None:
    """Quarantine and denylist are lifted only by a person, not by a delivery."""
    h = AddressHealth(status, 3, T0)
    assert delivered(h, T0 + DAY) == h


# --------------------------------------------------------------------------- complaints


@pytest.mark.parametrize(
    "before",
    [
        VALID,
        AddressHealth(EmailStatus.ERRONEOUS, 2, T0),
        AddressHealth(EmailStatus.QUARANTINE, 5, T0),
    ],
    ids=["valid", "erroneous", "quarantine"],
)
def test_complaint_denylists(before: AddressHealth) -> None:
    """A spam complaint denylists the address, whatever its status was."""
    assert complaint(before, T0).status is EmailStatus.DENYLISTED


def test_denylisted_stays_denylisted_through_everything() -> None:
    """Errors, successes and the passing of time never take an address off the denylist."""
    h = complaint(VALID, T0)
    h = soft_errors(every(2 * DAY, 6, start=T0 + DAY), h)
    assert h.status is EmailStatus.DENYLISTED
    h = hard_error(h, T0 + 20 * DAY)
    h = delivered(h, T0 + 21 * DAY)
    assert h.status is EmailStatus.DENYLISTED
    assert h.effective(T0 + 400 * DAY).status is EmailStatus.DENYLISTED


# --------------------------------------------------------------------------- properties


class Kind(Enum):
    SOFT = "soft"
    SUCCESS = "success"


@dataclass(frozen=True)
class Reference:
    """What SPEC section 7 says, computed from the whole history at once."""

    quarantined: bool
    count: int  # the counter as of `now`, meaningful while not quarantined


def reference(timeline: Sequence[tuple[datetime, Kind]], now: datetime) -> Reference:
    """Split counted errors into series; a series ends at a success or a >10-day gap.

    An error is counted when it is the first of its series or more than a day after
    the series' last counted error. The address is quarantined once any series
    reaches 5 counted errors.
    """
    series: list[list[datetime]] = [[]]
    for at, kind in timeline:
        current = series[-1]
        if kind is Kind.SUCCESS:
            series.append([])
        elif current and at - current[-1] > timedelta(days=10):
            series.append([at])
        elif not current or at - current[-1] > timedelta(days=1):
            current.append(at)
    quarantined = any(len(s) >= 5 for s in series)
    last = series[-1]
    lapsed = not last or now - last[-1] > timedelta(days=10)
    return Reference(quarantined, 0 if lapsed else len(last))


OPS: dict[Kind, Callable[[AddressHealth, datetime], AddressHealth]] = {
    Kind.SOFT: soft_error,
    Kind.SUCCESS: delivered,
}

gaps = st.one_of(
    st.sampled_from([timedelta(0), DAY, DAY + SECOND, 10 * DAY, 10 * DAY + SECOND]),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=13)),
)
kinds = st.sampled_from([Kind.SOFT] * 5 + [Kind.SUCCESS])  # mostly errors, some successes


@settings(max_examples=300)
@given(st.lists(st.tuples(gaps, kinds), max_size=40), gaps)
def test_quarantine_matches_reference_model(
    steps: list[tuple[timedelta, Kind]], read_after: timedelta
) -> None:
    """At every point of a random history, the address is quarantined iff the model says so."""
    h = VALID
    at = T0
    timeline: list[tuple[datetime, Kind]] = []
    for gap, kind in steps:
        at += gap
        timeline.append((at, kind))
        h = OPS[kind](h, at)
        expected = reference(timeline, at)
        assert (h.status is EmailStatus.QUARANTINE) is expected.quarantined
        if not expected.quarantined:
            assert h.effective(at).error_count == expected.count
    now = at + read_after
    expected = reference(timeline, now)
    current = h.effective(now)
    if expected.quarantined:
        assert current.status is EmailStatus.QUARANTINE
    else:
        assert current.error_count == expected.count
        assert current.status is (EmailStatus.ERRONEOUS if expected.count else EmailStatus.VALID)


events = st.sampled_from([soft_error, hard_error, delivered, complaint])


@settings(max_examples=200)
@given(st.lists(st.tuples(gaps, events), max_size=30))
def test_excluded_address_is_never_released_by_itself(
    steps: list[tuple[timedelta, Callable[[AddressHealth, datetime], AddressHealth]]],
) -> None:
    """Once quarantined it stays excluded; once denylisted it stays denylisted."""
    h = VALID
    at = T0
    was_quarantined = was_denylisted = False
    for gap, op in steps:
        at += gap
        h = op(h, at)
        was_quarantined |= h.status is EmailStatus.QUARANTINE
        was_denylisted |= h.status is EmailStatus.DENYLISTED
        effective = h.effective(at + 30 * DAY)
        if was_denylisted:
            assert h.status is EmailStatus.DENYLISTED
            assert effective.status is EmailStatus.DENYLISTED
        elif was_quarantined:
            assert h.status is EmailStatus.QUARANTINE
            assert effective.status is EmailStatus.QUARANTINE
        assert h.error_count >= 0
