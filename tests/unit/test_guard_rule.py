"""The send guard's rule (bot.domain.guard): when answers cross the threshold."""

from __future__ import annotations

import pytest

from bot.domain.guard import Answer, GuardPolicy, domain_of, policy_for, read, trips

POLICY = GuardPolicy(rate=0.05, window=500, minimum=200)


def answers(failed: int, ok: int, domain: str = "x.example") -> list[Answer]:
    return [Answer(True, "user unknown", domain)] * failed + [Answer(False, None, domain)] * ok


@pytest.mark.parametrize(
    ("failed", "ok", "tripped"),
    [
        (20, 180, True),  # 10 % of 200: over
        (10, 190, False),  # exactly 5 %: not more than the rate
        (11, 189, True),  # 5.5 %
        (4, 196, False),  # 2 %
        (100, 99, False),  # half refused, but 199 < the minimum of 200
    ],
)
def test_more_than_the_rate_once_the_minimum_is_reached(
    failed: int, ok: int, tripped: bool
) -> None:
    assert trips(read(answers(failed, ok), POLICY), POLICY) is tripped


def test_only_the_newest_window_counts() -> None:
    # Newest first: 500 clean answers, then 100 refused ones that fell out of the window.
    reading = read(answers(0, 500) + answers(100, 0), POLICY)
    assert (reading.counted, reading.failed) == (500, 0)
    assert not trips(reading, POLICY)
    # The same answers the other way round: the refusals are in the window.
    assert trips(read(answers(100, 0) + answers(0, 500), POLICY), POLICY)


def test_top_reasons_and_domains() -> None:
    window = (
        [Answer(True, "user unknown", "a.example")] * 5
        + [Answer(True, "mailbox full", "b.example")] * 3
        + [Answer(True, None, "c.example")] * 1
        + [Answer(True, "refused", "d.example")] * 1
        + [Answer(False, None, "a.example")] * 190
    )
    reading = read(window, POLICY)
    assert reading.reasons == (("user unknown", 5), ("mailbox full", 3), ("unknown", 1))
    assert reading.domains[:2] == (("a.example", 5), ("b.example", 3))
    assert reading.rate == pytest.approx(0.05)


def test_policy_from_a_delivery_over_the_global_one() -> None:
    default = GuardPolicy(0.05, 500, 200)
    assert policy_for(None, default) == default
    assert policy_for({}, default) == default
    assert policy_for({"rate": 0.2}, default) == GuardPolicy(0.2, 500, 200)
    off = policy_for({"off": True}, default)
    assert not off.enabled and not trips(read(answers(500, 0), off), off)


def test_nothing_relayed_never_trips_and_reads_zero() -> None:
    reading = read([], POLICY)
    assert reading.rate == 0.0 and not trips(reading, POLICY)
    assert not trips(reading, GuardPolicy(0.05, 500, 1))


def test_domain_of() -> None:
    assert domain_of("Ann@Stale.Example") == "stale.example"
    assert domain_of("nobody") == "nobody"
