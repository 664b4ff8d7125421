"""Whether a delivery can be confirmed now, and why not (SPEC section 3).

The card, the picker, `/confirm-send` and the confirm itself all ask this one
question, so a person is never offered a button that the click would then refuse,
and a refusal always says what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.lifecycle import DeliveryState
from bot.domain.waves import Wave, passed_problem


@dataclass(frozen=True)
class Preparation:
    """What a preparation was made for: it counts only for that content and audience."""

    prepared_at: datetime | None
    prepared_hash: str | None
    definition_hash: str
    prepared_audience_version: int | None
    audience_version: int

    @property
    def current(self) -> bool:
        return (
            self.prepared_at is not None
            and self.prepared_hash == self.definition_hash
            and self.prepared_audience_version == self.audience_version
        )


@dataclass(frozen=True)
class DeliveryFacts:
    """The facts about a delivery that decide whether it can be confirmed."""

    ref: str
    state: DeliveryState
    preparation: Preparation
    has_preparation_errors: bool
    recurring: bool
    request_confirmation: bool
    slack_channel: str | None
    to_deliver: int
    waves: tuple[Wave, ...] = ()  # a recipient-local send's, as prepared


def not_ready_reason(d: DeliveryFacts, now: datetime | None = None) -> str | None:
    """Why `d` cannot be confirmed now, in words a person can act on; None if it can.

    A recipient-local send whose first wave has passed by `now` is refused: its
    recipients there would get the message late, which is what the mode is to avoid.
    """
    if d.state is not DeliveryState.READY:
        if d.preparation.prepared_at is None:
            return f"{d.ref} is not prepared yet: run `/campaign prepare {d.ref}` first"
        if d.state is DeliveryState.EDITING and d.has_preparation_errors:
            return f"{d.ref} has preparation errors: fix them and prepare it again"
        if d.state is DeliveryState.EDITING:
            return f"{d.ref} changed after it was prepared: prepare it again"
        return f"{d.ref} is {d.state.value}: it was already confirmed"
    if not d.preparation.current:
        return f"{d.ref} changed after it was prepared: prepare it again"
    if d.recurring and d.request_confirmation and not d.slack_channel:
        return (
            f"{d.ref} asks for approval of each occurrence but has no slack_channel to post "
            "the requests in: set slack_channel, or request_confirmation: false"
        )
    if d.to_deliver == 0:
        return f"{d.ref} has nobody to deliver to (to deliver = 0): check its audience"
    if now is not None:
        return passed_problem(d.ref, d.waves, now)
    return None


def is_pickable(state: DeliveryState, prepared_current: bool) -> bool:
    """Offered by the picker of `/confirm-send`: ready, and prepared for what it is now.

    The rest of `not_ready_reason` is checked on the card, which says it in words.
    """
    return state is DeliveryState.READY and prepared_current
