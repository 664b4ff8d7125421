"""The approval rule: one decision per request, whatever the order or repetition of clicks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.domain.approval import Ballot, Choice, RequestState, Result, cast

USERS = ["U1", "U2", "U3", "U4"]
clicks = st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(list(Choice))), max_size=12)


def walk(required: int, seq: list[tuple[str, Choice]]) -> tuple[Ballot, list[Result]]:
    ballot = Ballot(RequestState.OPEN, required)
    results = []
    for user, choice in seq:
        result, ballot = cast(ballot, user, choice)
        results.append(result)
    return ballot, results


@given(required=st.integers(min_value=1, max_value=4), seq=clicks)
def test_exactly_one_click_decides_and_the_rest_change_nothing(
    required: int, seq: list[tuple[str, Choice]]
) -> None:
    ballot, results = walk(required, seq)
    deciding = [r for r in results if r in (Result.APPROVED, Result.SKIPPED)]
    assert len(deciding) == (0 if ballot.state is RequestState.OPEN else 1)
    if deciding:
        # Every click after the decision is told it was decided.
        first = results.index(deciding[0])
        assert set(results[first + 1 :]) <= {Result.DECIDED}


@given(required=st.integers(min_value=1, max_value=4), seq=clicks)
def test_approved_exactly_when_n_distinct_people_approved_before_any_skip(
    required: int, seq: list[tuple[str, Choice]]
) -> None:
    ballot, _ = walk(required, seq)
    before_skip = []
    for user, choice in seq:
        if choice is Choice.SKIP:
            break
        before_skip.append(user)
    distinct = list(dict.fromkeys(before_skip))
    if len(distinct) >= required:
        assert ballot.state is RequestState.APPROVED
        assert ballot.decided_by == tuple(distinct[:required])
    elif len(before_skip) < len(seq):
        assert ballot.state is RequestState.SKIPPED
        assert ballot.decided_by == (seq[len(before_skip)][0],)
    else:
        assert ballot.state is RequestState.OPEN
        assert ballot.approvers == tuple(distinct)


def test_a_second_click_by_the_same_person_does_not_count() -> None:
    ballot, results = walk(2, [("U1", Choice.APPROVE), ("U1", Choice.APPROVE)])
    assert results == [Result.RECORDED, Result.ALREADY_VOTED]
    assert (ballot.state, ballot.approvers) == (RequestState.OPEN, ("U1",))


def test_an_expired_request_takes_no_more_decisions() -> None:
    expired = Ballot(RequestState.EXPIRED, 1)
    for choice in Choice:
        assert cast(expired, "U1", choice) == (Result.DECIDED, expired)
