"""The delivery lifecycle (SPEC section 3) as a table of allowed transitions.

Keeping the table in one place lets the Slack card, the CLI and the services all
explain a refusal the same way: which state the delivery is in, and where the
action would have been allowed.
"""

from __future__ import annotations

from enum import StrEnum

from bot.domain.errors import IllegalTransition


class DeliveryState(StrEnum):
    EDITING = "editing"
    READY = "ready"
    START_PENDING = "start-pending"
    IN_PROGRESS = "in-progress"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class Action(StrEnum):
    PREPARE = "prepare"
    EDIT = "edit"
    CONFIRM = "confirm"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    FINISH = "finish"
    FAIL = "fail"


S = DeliveryState

# action -> (states it is allowed from, state it leads to). EDIT leads back to editing:
# a change after preparation must be prepared again before it can be confirmed.
TRANSITIONS: dict[Action, tuple[frozenset[DeliveryState], DeliveryState]] = {
    Action.PREPARE: (frozenset({S.EDITING, S.READY}), S.READY),
    Action.EDIT: (frozenset({S.EDITING, S.READY}), S.EDITING),
    Action.CONFIRM: (frozenset({S.READY}), S.START_PENDING),
    Action.START: (frozenset({S.START_PENDING}), S.IN_PROGRESS),
    Action.PAUSE: (frozenset({S.IN_PROGRESS}), S.PAUSED),
    Action.RESUME: (frozenset({S.PAUSED}), S.IN_PROGRESS),
    Action.STOP: (frozenset({S.START_PENDING, S.IN_PROGRESS, S.PAUSED}), S.STOPPED),
    Action.FINISH: (frozenset({S.IN_PROGRESS}), S.FINISHED),
    Action.FAIL: (frozenset({S.START_PENDING, S.IN_PROGRESS, S.PAUSED}), S.FAILED),
}

_ORDER = list(DeliveryState)


def allowed_from(action: Action) -> tuple[DeliveryState, ...]:
    sources = TRANSITIONS[action][0]
    return tuple(s for s in _ORDER if s in sources)


def can(action: Action, state: DeliveryState) -> bool:
    return state in TRANSITIONS[action][0]


def transition(state: DeliveryState, action: Action) -> DeliveryState:
    """The state after `action`, or IllegalTransition saying where it is allowed."""
    sources, target = TRANSITIONS[action]
    if state not in sources:
        raise IllegalTransition(
            action.value, state.value, tuple(s.value for s in allowed_from(action))
        )
    return target


def actions_from(state: DeliveryState) -> tuple[Action, ...]:
    """What a person can do next: used to explain a state on the card."""
    return tuple(a for a in Action if state in TRANSITIONS[a][0])


def is_terminal(state: DeliveryState) -> bool:
    return not actions_from(state)
