"""KPI formulas of the Deployment block (SPEC section 6): rates, rounding and the dash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.kpi import DASH, Counters, Kpis, format_pct, kpis, ratio
from bot.domain.logs import Event, LogState, LogStatus, Mode, apply_event


@pytest.mark.parametrize("denominator", [0, -1])
def test_ratio_with_nothing_to_divide_by_is_none(denominator: int) -> None:
    """A zero denominator is "no value yet", never a ZeroDivisionError."""
    assert ratio(0, denominator) is None
    assert ratio(3, denominator) is None


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (0, 5, 0.0),
        (5, 5, 100.0),
        (1, 2, 50.0),
        (1, 3, 33.33),
        (2, 3, 66.67),
        (1, 6, 16.67),
        (1, 8, 12.5),
        (12_407, 12_408, 99.99),
        (1, 12_408, 0.01),
    ],
)
def test_ratio_is_a_percentage_rounded_to_two_places(
    numerator: int, denominator: int, expected: float
) -> None:
    """Rates are percentages with two decimals, as Slack shows them."""
    assert ratio(numerator, denominator) == expected


def test_format_pct_shows_dash_for_none() -> None:
    """A rate with a zero denominator reads as "—" in Slack and the CLI."""
    assert format_pct(None) == DASH == "—"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (100.0, "100 %"),
        (0.0, "0 %"),
        (97.5, "97.5 %"),
        (33.33, "33.33 %"),
        (66.67, "66.67 %"),
        (10.0, "10 %"),
        (0.01, "0.01 %"),
    ],
)
def test_format_pct_trims_trailing_zeros(value: float, text: str) -> None:
    """Trailing zeros go: "97.5 %" rather than "97.50 %", "100 %" rather than "100.0 %"."""
    assert format_pct(value) == text


def test_kpis_of_empty_delivery_are_dashes() -> None:
    """Before anything is relayed every rate is None, and shows as a dash."""
    k = kpis(Counters(to_deliver=10, queued=10))
    assert k == Kpis(
        to_deliver=10,
        sent=0,
        delivered_pct=None,
        bounces_errors_pct=None,
        open_rate=None,
        click_through_rate=None,
    )
    assert {format_pct(v) for v in (k.delivered_pct, k.open_rate)} == {DASH}


def test_kpis_follow_the_spec_definitions() -> None:
    """Sent = relayed logs; Delivered/Bounces over Sent; opens/clicks over Sent logs."""
    c = Counters(
        to_deliver=12,
        queued=1,
        pending=1,
        sent=6,
        failed=3,
        ignored=1,
        unique_opens=3,
        unique_clicks=2,
    )
    k = kpis(c)
    assert k.to_deliver == 12
    assert k.sent == 10  # pending + sent + failed
    assert k.delivered_pct == 60.0
    assert k.bounces_errors_pct == 30.0
    assert k.open_rate == 50.0
    assert k.click_through_rate == 33.33


def test_open_rate_dash_when_no_log_is_sent() -> None:
    """Everything bounced: Delivered is 0 %, and open rates have nothing to divide by."""
    k = kpis(Counters(to_deliver=2, failed=2))
    assert k.delivered_pct == 0.0
    assert k.bounces_errors_pct == 100.0
    assert k.open_rate is None
    assert k.click_through_rate is None


def test_apply_moves_counts_between_statuses() -> None:
    """Counters.apply adds each delta to its status's counter and leaves the rest."""
    c = Counters(to_deliver=3, queued=3, unique_opens=1)
    after = c.apply({LogStatus.QUEUED: -1, LogStatus.PENDING: +1})
    assert after == Counters(to_deliver=3, queued=2, pending=1, unique_opens=1)
    assert c.queued == 3, "Counters is immutable"


def test_as_dict_round_trips() -> None:
    """Counters and KPIs serialise to plain dicts (stored as JSON snapshots)."""
    c = Counters(to_deliver=2, sent=1, failed=1)
    assert Counters(**c.as_dict()) == c
    assert kpis(c).as_dict()["delivered_pct"] == 50.0


@st.composite
def counters_from_transitions(draw: st.DrawFn) -> Counters:
    """Counters reached by real log transitions, with openers/clickers among Sent logs."""
    mode = draw(st.sampled_from(list(Mode)))
    size = draw(st.integers(min_value=0, max_value=12))
    logs = [LogState() for _ in range(size)]
    counters = Counters(to_deliver=size, queued=size)
    step = st.tuples(st.integers(0, max(size - 1, 0)), st.sampled_from(list(Event)))
    steps = draw(st.lists(step, max_size=60)) if size else []
    for index, event in steps:
        outcome = apply_event(mode, logs[index], event)
        logs[index] = outcome.state
        counters = counters.apply(outcome.deltas)
    opens = draw(st.integers(min_value=0, max_value=counters.sent))
    clicks = draw(st.integers(min_value=0, max_value=opens))  # a click counts as an open
    return Counters(**{**counters.as_dict(), "unique_opens": opens, "unique_clicks": clicks})


@settings(max_examples=300)
@given(counters_from_transitions())
def test_rates_stay_between_0_and_100(c: Counters) -> None:
    """No sequence of valid transitions can show a rate outside 0–100 %."""
    k = kpis(c)
    for rate in (k.delivered_pct, k.bounces_errors_pct, k.open_rate, k.click_through_rate):
        assert rate is None or 0.0 <= rate <= 100.0
    assert min(c.queued, c.pending, c.sent, c.failed, c.ignored) >= 0
    if k.delivered_pct is not None and k.bounces_errors_pct is not None:
        assert k.delivered_pct + k.bounces_errors_pct <= 100.0 + 0.01
    assert (k.delivered_pct is None) is (k.sent == 0)
    assert format_pct(k.delivered_pct).endswith("%") or k.sent == 0


def test_counters_add_field_by_field() -> None:
    """A recurring delivery's totals are the sum of its executions' counters."""
    a = Counters(to_deliver=3, sent=2, failed=1, unique_opens=1)
    b = Counters(to_deliver=5, pending=4, unique_clicks=2)
    assert a + b == Counters(
        to_deliver=8, pending=4, sent=2, failed=1, unique_opens=1, unique_clicks=2
    )
    assert (a + b).relayed == 7
