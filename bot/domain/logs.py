"""Sending-log transitions and their KPI effects (SPEC section 6), for both modes.

One pure function, `apply_event(mode, state, event)`, decides every status change.
The relay, the webhooks, bounce messages and the validity job all go through it, so
the two tables of the spec hold wherever an outcome comes from.

The KPI counters are counts of logs per status, so an event's effect on them is
"one log left status A and entered status B". Counters therefore always equal a
recount of the logs, and the KPIs of SPEC section 6 follow:

* Sent (messages relayed) = Pending + Sent + Failed logs;
* Delivered % = Sent logs ÷ Sent; Bounces + errors % = Failed logs ÷ Sent.

A log is "relayed" as soon as the MTA has answered for it, including a synchronous
5xx or 4xx: the message was handed over and the MTA took a decision on it.

Rules that make late, repeated and out-of-order feedback safe:

* a hard bounce is final: nothing after it changes the log (a late "delivered"
  never revives it);
* every event applied twice in a row has the effect of applying it once;
* once the validity period has ended (`EXPIRED`), nothing changes the log;
* a delivery reported outranks a soft bounce that arrives after it, in both modes,
  so "delivered" and a late soft bounce end in the same state whichever comes first
  (without EFS the log remembers the report in `delivered`: Sent alone says only that
  the relay took the message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from bot.domain.failures import FailureReason


class Mode(StrEnum):
    STANDARD = "standard"  # without the Email Feedback Service
    EFS = "efs"


class LogStatus(StrEnum):
    QUEUED = "queued"  # prepared, not yet relayed
    PENDING = "pending"  # relayed, waiting for the MTA's feedback (EFS only)
    SENT = "sent"
    FAILED = "failed"
    IGNORED = "ignored"  # never relayed: the send was stopped or its validity ended first


class FailureType(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    IGNORED = "ignored"


class Event(StrEnum):
    RELAYED = "relayed"  # the MTA accepted the message (first relay or a retry)
    DELIVERED = "delivered"  # the MTA reported delivery to the mailbox
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    RETRY_FAILED = "retry_failed"  # retries are exhausted
    EXPIRED = "expired"  # the validity period ended
    CANCELLED = "cancelled"  # the send was stopped before this message left


RELAYED_STATUSES = frozenset({LogStatus.PENDING, LogStatus.SENT, LogStatus.FAILED})


@dataclass(frozen=True)
class LogState:
    status: LogStatus = LogStatus.QUEUED
    failure: FailureType | None = None
    final: bool = False  # the validity period ended or retries ran out
    # The MTA reported delivery since the last relay. With EFS, Sent already says so;
    # without EFS a relayed message is Sent at once, so only this tells the two apart.
    delivered: bool = False

    @property
    def relayed(self) -> bool:
        return self.status in RELAYED_STATUSES

    @property
    def awaiting_retry(self) -> bool:
        """A soft bounce that the retry job should send again."""
        return self.failure is FailureType.SOFT and not self.final


@dataclass(frozen=True)
class Outcome:
    state: LogState
    deltas: Mapping[LogStatus, int]

    @property
    def changed(self) -> bool:
        return bool(self.deltas)


def _outcome(old: LogState, new: LogState) -> Outcome:
    if old.status == new.status:
        return Outcome(new, {})
    return Outcome(new, {old.status: -1, new.status: +1})


def apply_event(mode: Mode, state: LogState, event: Event) -> Outcome:
    """The log's next state and the counter deltas it causes."""
    if state.final or state.failure is FailureType.HARD:
        return Outcome(state, {})
    new = _standard(state, event) if mode is Mode.STANDARD else _efs(state, event)
    return _outcome(state, new)


def _common(state: LogState, event: Event) -> LogState | None:
    """Rules shared by both modes; None means the mode decides."""
    st = state.status
    if event is Event.HARD_BOUNCE and st is not LogStatus.IGNORED:
        return LogState(LogStatus.FAILED, FailureType.HARD)
    if st is LogStatus.QUEUED and event in (Event.EXPIRED, Event.CANCELLED):
        return LogState(LogStatus.IGNORED, FailureType.IGNORED, final=True)
    if st is LogStatus.IGNORED or event is Event.CANCELLED:
        return state
    if st is LogStatus.QUEUED and event in (Event.DELIVERED, Event.RETRY_FAILED):
        # Feedback for a message we never relayed cannot be ours; keep waiting.
        return state
    return None


def _standard(state: LogState, event: Event) -> LogState:
    """Without EFS: relayed means Sent; only a final failure moves Delivered down."""
    common = _common(state, event)
    if common is not None:
        return common
    soft = state.failure is FailureType.SOFT
    match event:
        case Event.RELAYED:
            return LogState(LogStatus.SENT)
        case Event.DELIVERED:
            return LogState(LogStatus.SENT, delivered=True)
        case Event.SOFT_BOUNCE:
            # A delivery already reported outranks a soft bounce that arrives late, as
            # with EFS: it must not send the message again.
            if state.delivered:
                return state
            return LogState(LogStatus.SENT, FailureType.SOFT)
        case Event.RETRY_FAILED:
            return LogState(LogStatus.FAILED, FailureType.SOFT, final=True) if soft else state
        case Event.EXPIRED:
            if soft:
                return LogState(LogStatus.FAILED, FailureType.SOFT, final=True)
            return LogState(state.status, state.failure, final=True, delivered=state.delivered)
    return state


def _efs(state: LogState, event: Event) -> LogState:
    """With EFS: relayed means Pending; the MTA's reports move Delivered and Bounces."""
    common = _common(state, event)
    if common is not None:
        return common
    st = state.status
    match event:
        case Event.RELAYED:
            # A retry relayed after a soft bounce stays Failed until it is reported.
            return LogState(LogStatus.PENDING) if st is LogStatus.QUEUED else state
        case Event.DELIVERED:
            return LogState(LogStatus.SENT, delivered=True)
        case Event.SOFT_BOUNCE:
            # A delivery already reported outranks a soft bounce that arrives late.
            if st is LogStatus.SENT:
                return state
            return LogState(LogStatus.FAILED, FailureType.SOFT)
        case Event.RETRY_FAILED:
            if state.failure is FailureType.SOFT:
                return LogState(LogStatus.FAILED, FailureType.SOFT, final=True)
            return state
        case Event.EXPIRED:
            if st is LogStatus.PENDING:
                # No report before the period ended: unresolved becomes Failed.
                return LogState(LogStatus.FAILED, FailureType.SOFT, final=True)
            return LogState(state.status, state.failure, final=True, delivered=state.delivered)
    return state


def initial_status(mode: Mode) -> LogStatus:
    """The status a successful relay leads to: what Delivered % starts from."""
    return LogStatus.SENT if mode is Mode.STANDARD else LogStatus.PENDING


@dataclass(frozen=True)
class LogEvent:
    """One outcome for one sending log, as any feedback source reports it."""

    sending_log_id: int
    event: Event
    reason: FailureReason | None = None  # SPEC section 7, e.g. "user unknown"
    smtp_status: str | None = None
    diagnostic: str | None = None
