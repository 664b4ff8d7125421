"""The rule of an approval request (SPEC section 4), apart from storage and Slack.

A request is open until one decision closes it: a skip by any allowed person, or the
approval of the N-th distinct person (`approvals_required: N`). Whatever comes after
(a double click, Slack's retry, someone late) is told what was decided and changes
nothing. The service applies this under a row lock, so clicks arrive one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class RequestState(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    SKIPPED = "skipped"
    EXPIRED = "expired"


class Choice(StrEnum):
    APPROVE = "approve"
    SKIP = "skip"


class Result(StrEnum):
    APPROVED = "approved"  # this click decided: the occurrence is sent
    SKIPPED = "skipped"  # this click decided: the occurrence is not sent
    RECORDED = "recorded"  # an approval counted; more are needed
    ALREADY_VOTED = "already-voted"  # this person had approved already
    DECIDED = "decided"  # decided before this click: nothing changes


@dataclass(frozen=True)
class Ballot:
    state: RequestState
    required: int
    approvers: tuple[str, ...] = ()  # distinct, in the order they approved
    decided_by: tuple[str, ...] = ()


def cast(ballot: Ballot, user: str, choice: Choice) -> tuple[Result, Ballot]:
    """What one (allowed) person's click does to the request."""
    if ballot.state is not RequestState.OPEN:
        return Result.DECIDED, ballot
    if choice is Choice.SKIP:
        return Result.SKIPPED, replace(ballot, state=RequestState.SKIPPED, decided_by=(user,))
    if user in ballot.approvers:
        return Result.ALREADY_VOTED, ballot
    approvers = (*ballot.approvers, user)
    if len(approvers) < max(ballot.required, 1):
        return Result.RECORDED, replace(ballot, approvers=approvers)
    return Result.APPROVED, replace(
        ballot, state=RequestState.APPROVED, approvers=approvers, decided_by=approvers
    )


@dataclass(frozen=True)
class Effects:
    """What a click's result asks of the store."""

    vote: bool = False  # this person's approval is recorded
    close: bool = False  # the request is decided: its state, by whom and when
    skip: bool = False  # the occurrence is never sent
    send: bool = False  # the occurrence is sent now

    @property
    def visible(self) -> bool:
        """The request's message in Slack must change to show it."""
        return self.vote or self.close


EFFECTS: dict[Result, Effects] = {
    Result.APPROVED: Effects(vote=True, close=True, send=True),
    Result.SKIPPED: Effects(close=True, skip=True),
    Result.RECORDED: Effects(vote=True),
    Result.ALREADY_VOTED: Effects(),
    Result.DECIDED: Effects(),
}


def click_note(result: Result, before: Ballot, after: Ballot) -> str:
    """The audit log's words for what a click did."""
    if result is Result.DECIDED:
        return f"already {before.state.value}"
    if result is Result.ALREADY_VOTED:
        return "already approved by them"
    if result is Result.RECORDED:
        return f"approval {len(after.approvers)} of {after.required}"
    if result is Result.SKIPPED:
        return "skipped"
    return "approved: sending"


# Why an undecided request expired, unless the delivery's approval_expiry said sooner.
EXPIRED_REASON = "not decided before the next occurrence"
