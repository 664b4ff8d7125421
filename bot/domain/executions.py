"""Executions (SPEC section 4): the unit that sending logs and KPIs belong to.

A one-off delivery has one execution, keyed `MAIN_KEY`, whose state mirrors the
delivery's. A recurring delivery has one per occurrence (keyed by its instant) or per
aggregation period (keyed by the period), with states of their own: an occurrence is
prepared, may wait for approval, is sent, or ends skipped, expired, empty or failed,
while the delivery itself stays in progress as long as its recurrence is active.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

MAIN_KEY = "main"

# How long a process may take to prepare an occurrence before another takes it over.
PREPARE_LEASE = timedelta(minutes=10)


class ExecutionState(StrEnum):
    # A one-off delivery's execution follows the delivery (bot.domain.lifecycle) ...
    EDITING = "editing"
    READY = "ready"
    START_PENDING = "start-pending"
    IN_PROGRESS = "in-progress"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    # ... an occurrence of a recurring one also has these.
    PREPARING = "preparing"
    PENDING_APPROVAL = "pending-approval"
    SKIPPED = "skipped"
    EXPIRED = "expired"


# An occurrence not yet sent, that a stop ends with its delivery.
UNSENT_OCCURRENCE_STATES = frozenset({ExecutionState.PREPARING, ExecutionState.PENDING_APPROVAL})


def label(ref: str, key: str) -> str:
    """How people and reports name an execution: the ref, or "ref@key" for an occurrence."""
    return ref if key == MAIN_KEY else f"{ref}@{key}"


class OccurrenceOutcome(StrEnum):
    """What running one occurrence did (`jobs run-due` prints it)."""

    SENDING = "sending"
    AWAITING_APPROVAL = "awaiting-approval"
    EMPTY = "empty"  # nobody to deliver to
    NOBODY_NEW = "nobody new"  # a later occurrence of a period added no newcomer
    FAILED = "failed"  # a template no longer renders for someone


@dataclass(frozen=True)
class Settlement:
    """Where an occurrence goes once prepared; `state` None: the execution keeps its own."""

    outcome: OccurrenceOutcome
    state: ExecutionState | None

    @property
    def ends(self) -> bool:
        """The execution is over as it settles (nothing will be sent)."""
        return self.state in (ExecutionState.FAILED, ExecutionState.FINISHED)


def settle(
    *, fresh: bool, failed: bool, to_deliver: int, added: int, request_confirmation: bool
) -> Settlement:
    """The settle table of an occurrence, once its preparation is done.

    `fresh`: the execution is new (still preparing), not a later occurrence of an
    aggregation period it already holds. Only a fresh execution changes state here;
    a later occurrence only sends its newcomers, if it has any.
    """
    o, s = OccurrenceOutcome, ExecutionState
    if not fresh:
        if failed:
            return Settlement(o.FAILED, None)
        return Settlement(o.SENDING, None) if added else Settlement(o.NOBODY_NEW, None)
    if failed:
        return Settlement(o.FAILED, s.FAILED)
    if to_deliver == 0:
        return Settlement(o.EMPTY, s.FINISHED)
    if request_confirmation:
        return Settlement(o.AWAITING_APPROVAL, s.PENDING_APPROVAL)
    return Settlement(o.SENDING, s.IN_PROGRESS)
