"""The delivery lifecycle of SPEC section 3: which action is allowed from which state."""

from __future__ import annotations

import pytest

from bot.domain.errors import DomainError, IllegalTransition
from bot.domain.lifecycle import (
    TRANSITIONS,
    Action,
    DeliveryState,
    actions_from,
    allowed_from,
    can,
    is_terminal,
    transition,
)

S = DeliveryState
A = Action

# The lifecycle as SPEC section 3 describes it, written out independently of the table.
EXPECTED: dict[tuple[DeliveryState, Action], DeliveryState] = {
    (S.EDITING, A.PREPARE): S.READY,
    (S.READY, A.PREPARE): S.READY,  # prepare can run again at any time before confirm
    (S.EDITING, A.EDIT): S.EDITING,
    (S.READY, A.EDIT): S.EDITING,  # a change after preparation must be prepared again
    (S.READY, A.CONFIRM): S.START_PENDING,  # confirm only from ready
    (S.START_PENDING, A.START): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.PAUSE): S.PAUSED,
    (S.PAUSED, A.RESUME): S.IN_PROGRESS,
    (S.START_PENDING, A.STOP): S.STOPPED,
    (S.IN_PROGRESS, A.STOP): S.STOPPED,
    (S.PAUSED, A.STOP): S.STOPPED,
    (S.IN_PROGRESS, A.FINISH): S.FINISHED,
    (S.START_PENDING, A.FAIL): S.FAILED,
    (S.IN_PROGRESS, A.FAIL): S.FAILED,
    (S.PAUSED, A.FAIL): S.FAILED,
}

ILLEGAL = [(s, a) for s in DeliveryState for a in Action if (s, a) not in EXPECTED]


@pytest.mark.parametrize(
    ("state", "action", "target"),
    [(s, a, t) for (s, a), t in EXPECTED.items()],
    ids=[f"{s.value} --{a.value}--> {t.value}" for (s, a), t in EXPECTED.items()],
)
def test_allowed_transition_leads_to_expected_state(
    state: DeliveryState, action: Action, target: DeliveryState
) -> None:
    """Each transition of the spec is allowed and lands where the spec says."""
    assert can(action, state)
    assert transition(state, action) is target


def test_table_holds_exactly_the_expected_transitions() -> None:
    """No transition beyond the spec's sneaks into the table (e.g. confirm from editing)."""
    table = {(s, a): target for a, (sources, target) in TRANSITIONS.items() for s in sources}
    assert table == EXPECTED


@pytest.mark.parametrize(
    ("state", "action"), ILLEGAL, ids=[f"{a.value} from {s.value}" for s, a in ILLEGAL]
)
def test_illegal_transition_raises_with_explanation(state: DeliveryState, action: Action) -> None:
    """A refusal names the current state and every state where the action is allowed."""
    assert not can(action, state)
    with pytest.raises(IllegalTransition) as info:
        transition(state, action)
    err = info.value
    allowed = [s for (s, a) in EXPECTED if a is action]
    message = str(err)
    assert f"that is {state.value}" in message
    assert action.value in message
    for source in allowed:
        assert source.value in message.split("allowed from:")[1]
    assert err.state == state.value
    assert err.action == action.value
    assert set(err.allowed_from) == {s.value for s in allowed}


def test_illegal_transition_is_a_domain_error() -> None:
    """Callers catching DomainError also catch lifecycle refusals."""
    with pytest.raises(DomainError):
        transition(S.EDITING, A.CONFIRM)


def test_confirm_from_editing_message_is_exact() -> None:
    """The sentence a person reads when confirming a delivery that was edited."""
    with pytest.raises(IllegalTransition) as info:
        transition(S.EDITING, A.CONFIRM)
    assert str(info.value) == (
        "cannot confirm a delivery that is editing; confirm is allowed from: ready"
    )


def test_stop_message_lists_states_in_lifecycle_order() -> None:
    """Several allowed states read in lifecycle order, so the message is stable."""
    with pytest.raises(IllegalTransition) as info:
        transition(S.FINISHED, A.STOP)
    assert str(info.value).endswith("stop is allowed from: start-pending, in-progress, paused")


def test_allowed_from_is_in_lifecycle_order() -> None:
    """allowed_from follows the declaration order of the states."""
    assert allowed_from(A.FAIL) == (S.START_PENDING, S.IN_PROGRESS, S.PAUSED)
    assert allowed_from(A.CONFIRM) == (S.READY,)


@pytest.mark.parametrize(
    ("state", "actions"),
    [
        (S.EDITING, (A.PREPARE, A.EDIT)),
        (S.READY, (A.PREPARE, A.EDIT, A.CONFIRM)),
        (S.START_PENDING, (A.START, A.STOP, A.FAIL)),
        (S.IN_PROGRESS, (A.PAUSE, A.STOP, A.FINISH, A.FAIL)),
        (S.PAUSED, (A.RESUME, A.STOP, A.FAIL)),
        (S.FINISHED, ()),
        (S.STOPPED, ()),
        (S.FAILED, ()),
    ],
    ids=lambda v: v.value if isinstance(v, DeliveryState) else None,
)
def test_actions_from_lists_next_steps(state: DeliveryState, actions: tuple[Action, ...]) -> None:
    """The card offers exactly the actions the state allows."""
    assert actions_from(state) == actions


@pytest.mark.parametrize("state", list(DeliveryState), ids=lambda s: s.value)
def test_terminal_states(state: DeliveryState) -> None:
    """Finished, stopped and failed are for good; every other state has a way on."""
    assert is_terminal(state) is (state in {S.FINISHED, S.STOPPED, S.FAILED})


def test_full_happy_path_with_pause() -> None:
    """A delivery goes from editing to finished through a pause and a resume."""
    state = S.EDITING
    for action in (A.PREPARE, A.EDIT, A.PREPARE, A.CONFIRM, A.START, A.PAUSE, A.RESUME):
        state = transition(state, action)
    assert state is S.IN_PROGRESS
    assert transition(state, A.FINISH) is S.FINISHED


def test_edit_after_confirm_is_refused() -> None:
    """Once confirmed, content cannot change without stopping the send first."""
    with pytest.raises(IllegalTransition):
        transition(S.START_PENDING, A.EDIT)
