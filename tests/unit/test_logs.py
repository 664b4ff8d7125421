"""Sending-log statuses and their KPI effects: the two tables of SPEC section 6.

The row tests read like the spec's tables; the properties check the promises that make
late, repeated and out-of-order feedback safe, over random event sequences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.kpi import Counters, Kpis, kpis
from bot.domain.logs import (
    RELAYED_STATUSES,
    Event,
    FailureType,
    LogState,
    LogStatus,
    Mode,
    apply_event,
    initial_status,
)

E = Event
STD = Mode.STANDARD
EFS = Mode.EFS

Direction = Literal["up", "down", "same"]


def run(mode: Mode, events: Iterable[Event], state: LogState | None = None) -> LogState:
    """The state of one log after `events`, starting from queued."""
    state = state or LogState()
    for event in events:
        state = apply_event(mode, state, event).state
    return state


class Delivery:
    """Several logs and the counters kept from their deltas, as the engine keeps them."""

    def __init__(self, mode: Mode, size: int) -> None:
        self.mode = mode
        self.logs = [LogState() for _ in range(size)]
        self.counters = Counters(to_deliver=size, queued=size)

    def apply(self, index: int, event: Event) -> None:
        outcome = apply_event(self.mode, self.logs[index], event)
        self.logs[index] = outcome.state
        self.counters = self.counters.apply(outcome.deltas)

    def add_log(self, events: Sequence[Event]) -> int:
        self.logs.append(LogState())
        c = self.counters
        self.counters = replace(c, to_deliver=c.to_deliver + 1, queued=c.queued + 1)
        index = len(self.logs) - 1
        for event in events:
            self.apply(index, event)
        return index

    def recount(self) -> Counter[LogStatus]:
        return Counter(log.status for log in self.logs)

    @property
    def kpis(self) -> Kpis:
        return kpis(self.counters)


def with_background(mode: Mode) -> Delivery:
    """A delivery already holding logs in every relayed status, so rates sit mid-range."""
    if mode is STD:
        histories = [[E.RELAYED], [E.RELAYED], [E.RELAYED, E.HARD_BOUNCE]]
    else:
        histories = [[E.RELAYED, E.DELIVERED], [E.RELAYED], [E.RELAYED, E.HARD_BOUNCE]]
    delivery = Delivery(mode, 0)
    for history in histories:
        delivery.add_log(history)
    return delivery


def direction(before: float | None, after: float | None) -> Direction:
    assert before is not None and after is not None
    if after > before:
        return "up"
    if after < before:
        return "down"
    return "same"


# --------------------------------------------------------------------------- the tables


@dataclass(frozen=True)
class Row:
    """One step of a table: history so far, the event, the log and KPIs after it."""

    id: str
    mode: Mode
    history: tuple[Event, ...]
    event: Event
    status: LogStatus
    failure: FailureType | None
    delivered: Direction
    bounces: Direction


STEP_ROWS = [
    # Without EFS (the default).
    Row(
        "standard: hard bounce reported",
        STD,
        (E.RELAYED,),
        E.HARD_BOUNCE,
        LogStatus.FAILED,
        FailureType.HARD,
        "down",
        "up",
    ),
    Row(
        "standard: soft bounce reported",
        STD,
        (E.RELAYED,),
        E.SOFT_BOUNCE,
        LogStatus.SENT,
        FailureType.SOFT,
        "same",
        "same",
    ),
    Row(
        "standard: soft-bounce retry succeeds",
        STD,
        (E.RELAYED, E.SOFT_BOUNCE),
        E.RELAYED,
        LogStatus.SENT,
        None,
        "same",
        "same",
    ),
    Row(
        "standard: soft-bounce retry succeeds (delivery reported)",
        STD,
        (E.RELAYED, E.SOFT_BOUNCE),
        E.DELIVERED,
        LogStatus.SENT,
        None,
        "same",
        "same",
    ),
    Row(
        "standard: soft-bounce retry fails",
        STD,
        (E.RELAYED, E.SOFT_BOUNCE),
        E.RETRY_FAILED,
        LogStatus.FAILED,
        FailureType.SOFT,
        "down",
        "up",
    ),
    Row(
        "standard: soft bounce unresolved when validity ends",
        STD,
        (E.RELAYED, E.SOFT_BOUNCE),
        E.EXPIRED,
        LogStatus.FAILED,
        FailureType.SOFT,
        "down",
        "up",
    ),
    # With EFS.
    Row(
        "efs: delivery reported",
        EFS,
        (E.RELAYED,),
        E.DELIVERED,
        LogStatus.SENT,
        None,
        "up",
        "same",
    ),
    Row(
        "efs: hard bounce reported",
        EFS,
        (E.RELAYED,),
        E.HARD_BOUNCE,
        LogStatus.FAILED,
        FailureType.HARD,
        "same",
        "up",
    ),
    Row(
        "efs: soft bounce reported",
        EFS,
        (E.RELAYED,),
        E.SOFT_BOUNCE,
        LogStatus.FAILED,
        FailureType.SOFT,
        "same",
        "up",
    ),
    Row(
        "efs: soft-bounce retry succeeds",
        EFS,
        (E.RELAYED, E.SOFT_BOUNCE, E.RELAYED),
        E.DELIVERED,
        LogStatus.SENT,
        None,
        "up",
        "down",
    ),
    Row(
        "efs: soft-bounce retry fails",
        EFS,
        (E.RELAYED, E.SOFT_BOUNCE),
        E.RETRY_FAILED,
        LogStatus.FAILED,
        FailureType.SOFT,
        "same",
        "same",
    ),
]


@pytest.mark.parametrize("row", STEP_ROWS, ids=[r.id for r in STEP_ROWS])
def test_table_row_status_and_kpi_effect(row: Row) -> None:
    """Each row of SPEC section 6 moves the log and the two KPIs as the table says."""
    delivery = with_background(row.mode)
    index = delivery.add_log(row.history)
    before = delivery.kpis
    delivery.apply(index, row.event)
    after = delivery.kpis

    log = delivery.logs[index]
    assert log.status is row.status
    assert log.failure is row.failure
    assert direction(before.delivered_pct, after.delivered_pct) == row.delivered
    assert direction(before.bounces_errors_pct, after.bounces_errors_pct) == row.bounces
    assert after.sent == before.sent, "only a relay changes the Sent KPI"


@pytest.mark.parametrize(
    ("mode", "status", "delivered_pct"),
    [(STD, LogStatus.SENT, 100.0), (EFS, LogStatus.PENDING, 0.0)],
    ids=["standard: relayed to the MTA", "efs: relayed to the MTA"],
)
def test_table_row_relayed(mode: Mode, status: LogStatus, delivered_pct: float) -> None:
    """A fresh relay: Delivered starts at 100 % without EFS, 0 % with; no bounces yet."""
    delivery = Delivery(mode, 1)
    assert delivery.kpis.delivered_pct is None  # nothing relayed: nothing to divide by
    delivery.apply(0, E.RELAYED)
    assert delivery.logs[0].status is status
    assert delivery.logs[0].failure is None
    assert initial_status(mode) is status
    k = delivery.kpis
    assert k.sent == 1
    assert k.delivered_pct == delivered_pct
    assert k.bounces_errors_pct == 0.0


def test_efs_retry_relay_keeps_failed_until_reported() -> None:
    """With EFS, relaying a retry changes nothing: Failed stays until the MTA reports."""
    delivery = with_background(EFS)
    index = delivery.add_log([E.RELAYED, E.SOFT_BOUNCE])
    before = delivery.kpis
    delivery.apply(index, E.RELAYED)
    assert delivery.logs[index] == LogState(LogStatus.FAILED, FailureType.SOFT)
    assert delivery.logs[index].awaiting_retry
    assert delivery.kpis == before


@pytest.mark.parametrize(
    ("mode", "event", "status", "failure"),
    [
        (STD, E.HARD_BOUNCE, LogStatus.FAILED, FailureType.HARD),
        (STD, E.SOFT_BOUNCE, LogStatus.SENT, FailureType.SOFT),
        (EFS, E.HARD_BOUNCE, LogStatus.FAILED, FailureType.HARD),
        (EFS, E.SOFT_BOUNCE, LogStatus.FAILED, FailureType.SOFT),
    ],
    ids=["standard: sync 5xx", "standard: sync 4xx", "efs: sync 5xx", "efs: sync 4xx"],
)
def test_synchronous_answer_counts_as_relayed(
    mode: Mode, event: Event, status: LogStatus, failure: FailureType
) -> None:
    """A 5xx or 4xx while relaying: the MTA took the message and decided on it."""
    delivery = Delivery(mode, 1)
    delivery.apply(0, event)
    log = delivery.logs[0]
    assert (log.status, log.failure) == (status, failure)
    assert log.relayed
    assert delivery.kpis.sent == 1


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize("event", [E.EXPIRED, E.CANCELLED], ids=lambda e: e.value)
def test_queued_log_never_relayed_becomes_ignored(mode: Mode, event: Event) -> None:
    """Stopped or expired before it left: Ignored, final, and outside the Sent KPI."""
    delivery = Delivery(mode, 1)
    delivery.apply(0, event)
    assert delivery.logs[0] == LogState(LogStatus.IGNORED, FailureType.IGNORED, final=True)
    assert delivery.kpis.sent == 0
    delivery.apply(0, E.RELAYED)
    assert delivery.logs[0].status is LogStatus.IGNORED


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize("event", [E.DELIVERED, E.RETRY_FAILED], ids=lambda e: e.value)
def test_feedback_for_unrelayed_message_is_ignored(mode: Mode, event: Event) -> None:
    """A report about a message we never relayed cannot be ours: the log stays queued."""
    outcome = apply_event(mode, LogState(), event)
    assert outcome.state == LogState()
    assert not outcome.changed


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_cancel_after_relay_changes_nothing(mode: Mode) -> None:
    """Stopping a send does not undo messages that already left."""
    state = run(mode, [E.RELAYED])
    assert not apply_event(mode, state, E.CANCELLED).changed


def test_efs_pending_becomes_failed_when_validity_ends() -> None:
    """With EFS, no report before the end: the message is unresolved, so Failed."""
    delivery = with_background(EFS)
    index = delivery.add_log([E.RELAYED])
    before = delivery.kpis
    delivery.apply(index, E.EXPIRED)
    assert delivery.logs[index] == LogState(LogStatus.FAILED, FailureType.SOFT, final=True)
    assert direction(before.bounces_errors_pct, delivery.kpis.bounces_errors_pct) == "up"


def test_standard_sent_stays_sent_when_validity_ends() -> None:
    """Without EFS, a relayed message with no bounce is Sent for good."""
    state = run(STD, [E.RELAYED, E.EXPIRED])
    assert state == LogState(LogStatus.SENT, None, final=True)
    assert not state.awaiting_retry


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_late_delivered_never_revives_hard_bounce(mode: Mode) -> None:
    """The spec's example: a hard bounce, then a late 'delivered' → still Failed (hard)."""
    state = run(mode, [E.RELAYED, E.HARD_BOUNCE])
    outcome = apply_event(mode, state, E.DELIVERED)
    assert outcome.state.status is LogStatus.FAILED
    assert outcome.state.failure is FailureType.HARD
    assert not outcome.changed


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_awaiting_retry_only_for_unresolved_soft_bounce(mode: Mode) -> None:
    """The retry job resends soft bounces only until retries run out or validity ends."""
    soft = run(mode, [E.RELAYED, E.SOFT_BOUNCE])
    assert soft.awaiting_retry
    assert not run(mode, [E.RELAYED, E.SOFT_BOUNCE, E.RETRY_FAILED]).awaiting_retry
    assert not run(mode, [E.RELAYED, E.SOFT_BOUNCE, E.EXPIRED]).awaiting_retry
    assert not run(mode, [E.RELAYED, E.HARD_BOUNCE]).awaiting_retry
    assert not run(mode, [E.RELAYED]).awaiting_retry


def test_outcome_deltas_move_one_log_between_statuses() -> None:
    """A change is exactly one log leaving its status and entering another."""
    outcome = apply_event(EFS, LogState(LogStatus.PENDING), E.DELIVERED)
    assert dict(outcome.deltas) == {LogStatus.PENDING: -1, LogStatus.SENT: +1}
    assert outcome.changed


def test_same_status_change_has_no_deltas() -> None:
    """A soft bounce without EFS keeps Sent: the counters do not move."""
    outcome = apply_event(STD, LogState(LogStatus.SENT), E.SOFT_BOUNCE)
    assert outcome.state.failure is FailureType.SOFT
    assert dict(outcome.deltas) == {}


# --------------------------------------------------------------------------- properties

modes = st.sampled_from(list(Mode))
events = st.sampled_from(list(Event))
event_lists = st.lists(events, max_size=12)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[Mode, int, list[tuple[int, Event]]]:
    """A mode, a number of logs and events for them in any order, repeats included."""
    mode = draw(modes)
    size = draw(st.integers(min_value=1, max_value=12))
    index = st.integers(min_value=0, max_value=size - 1)
    steps = draw(st.lists(st.tuples(index, events), max_size=80))
    return mode, size, steps


def first_decisive(events: Sequence[Event]) -> Event | None:
    """The first event that takes a queued log out of queued (independent of the code)."""
    for event in events:
        if event in (E.RELAYED, E.HARD_BOUNCE, E.SOFT_BOUNCE, E.EXPIRED, E.CANCELLED):
            return event
    return None


@settings(max_examples=300)
@given(deliveries())
def test_counters_from_deltas_equal_recount(case: tuple[Mode, int, list[tuple[int, Event]]]):
    """Counters kept from deltas never drift from the logs (so Compute stats agrees)."""
    mode, size, steps = case
    delivery = Delivery(mode, size)
    for index, event in steps:
        delivery.apply(index, event)
        recount = delivery.recount()
        c = delivery.counters
        assert c.queued == recount[LogStatus.QUEUED]
        assert c.pending == recount[LogStatus.PENDING]
        assert c.sent == recount[LogStatus.SENT]
        assert c.failed == recount[LogStatus.FAILED]
        assert c.ignored == recount[LogStatus.IGNORED]
        assert c.relayed == sum(1 for log in delivery.logs if log.relayed)


@settings(max_examples=300)
@given(modes, event_lists, events)
def test_event_twice_in_a_row_is_same_as_once(mode: Mode, history: list[Event], event: Event):
    """A duplicated report (webhook retry, double bounce mail) changes nothing more."""
    once = apply_event(mode, run(mode, history), event)
    twice = apply_event(mode, once.state, event)
    assert twice.state == once.state
    assert not twice.changed


@settings(max_examples=300)
@given(
    modes,
    st.lists(st.sampled_from([E.RELAYED, E.DELIVERED, E.SOFT_BOUNCE, E.HARD_BOUNCE])),
    event_lists,
)
def test_hard_bounce_is_final(mode: Mode, before: list[Event], after: list[Event]) -> None:
    """A hard bounce while the log is open ends Failed (hard), whatever comes later.

    `before` holds no event that closes the log (expiry, cancel, retries exhausted);
    `after` is anything, a late "delivered" included.
    """
    state = run(mode, [*before, E.HARD_BOUNCE, *after])
    assert state.status is LogStatus.FAILED
    assert state.failure is FailureType.HARD


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize(
    "closing",
    [(E.EXPIRED,), (E.RELAYED, E.EXPIRED), (E.RELAYED, E.SOFT_BOUNCE, E.RETRY_FAILED)],
    ids=["expired-queued", "expired-relayed", "retries-exhausted"],
)
def test_hard_bounce_after_log_closed_changes_nothing(
    mode: Mode, closing: tuple[Event, ...]
) -> None:
    """The flip side of finality: a closed log does not take a late hard bounce either."""
    state = run(mode, closing)
    assert not apply_event(mode, state, E.HARD_BOUNCE).changed


@settings(max_examples=100)
@given(modes, st.integers(min_value=1, max_value=200))
def test_right_after_relay_delivered_starts_at_100_or_0(mode: Mode, size: int) -> None:
    """After relaying N messages: 100 % delivered without EFS, 0 % with; 0 % bounces."""
    delivery = Delivery(mode, size)
    for index in range(size):
        delivery.apply(index, E.RELAYED)
    k = delivery.kpis
    assert k.sent == size
    assert k.delivered_pct == (100.0 if mode is STD else 0.0)
    assert k.bounces_errors_pct == 0.0


@settings(max_examples=300)
@given(deliveries())
def test_failed_and_sent_never_exceed_relayed(case: tuple[Mode, int, list[tuple[int, Event]]]):
    """Only a message the MTA answered for counts as relayed, Sent or Failed."""
    mode, size, steps = case
    delivery = Delivery(mode, size)
    per_log: list[list[Event]] = [[] for _ in range(size)]
    for index, event in steps:
        delivery.apply(index, event)
        per_log[index].append(event)
    answered = sum(
        1 for evs in per_log if first_decisive(evs) in (E.RELAYED, E.HARD_BOUNCE, E.SOFT_BOUNCE)
    )
    c = delivery.counters
    assert c.relayed == answered
    assert c.sent + c.failed <= c.relayed
    assert c.sent <= answered and c.failed <= answered
    assert c.relayed + c.queued + c.ignored == size


@settings(max_examples=300)
@given(modes, event_lists, event_lists)
def test_nothing_changes_after_expired(mode: Mode, before: list[Event], after: list[Event]):
    """When the validity period ends, the log and the KPIs are frozen for good."""
    expired = run(mode, [*before, E.EXPIRED])
    # A hard bounce is already frozen by its failure type; everything else is marked final.
    assert expired.final or expired.failure is FailureType.HARD
    assert not expired.awaiting_retry
    state = expired
    for event in after:
        outcome = apply_event(mode, state, event)
        assert not outcome.changed
        assert outcome.state == expired
        state = outcome.state


@settings(max_examples=300)
@given(
    st.sampled_from([STD, EFS]),
    st.sampled_from([E.RELAYED, E.SOFT_BOUNCE]),
    st.lists(st.sampled_from([E.RELAYED, E.SOFT_BOUNCE, E.DELIVERED])),
    st.lists(st.sampled_from([E.SOFT_BOUNCE, E.DELIVERED])),
)
def test_soft_and_delivered_in_any_order_end_sent(
    mode: Mode, first: Event, left: list[Event], right: list[Event]
) -> None:
    """Once delivery is reported, a soft bounce before or after it loses, with EFS or not.

    (A relay after the report is a retry of an earlier soft bounce: what comes after it
    is about the new message, so `right` holds reports only.)
    """
    state = run(mode, [first, *left, E.DELIVERED, *right])
    assert state == LogState(LogStatus.SENT, delivered=True)
    assert not state.awaiting_retry


@pytest.mark.parametrize("mode", [STD, EFS])
@pytest.mark.parametrize(
    "order",
    [(E.SOFT_BOUNCE, E.DELIVERED), (E.DELIVERED, E.SOFT_BOUNCE)],
    ids=["soft then delivered", "delivered then soft"],
)
def test_soft_and_delivered_either_order_same_state_and_kpis(
    mode: Mode, order: tuple[Event, Event]
) -> None:
    """Both orders end in one state, not awaiting a retry, with the same KPIs: one
    delivered message, no bounce. Without EFS a late soft bounce after "delivered" used
    to mark the log for a retry, so the message went out again."""
    delivery = Delivery(mode, 1)
    for event in (E.RELAYED, *order):
        delivery.apply(0, event)
    assert delivery.logs[0] == LogState(LogStatus.SENT, delivered=True)
    assert not delivery.logs[0].awaiting_retry
    assert delivery.kpis.delivered_pct == 100.0
    assert delivery.kpis.bounces_errors_pct == 0.0


def test_relayed_statuses_are_those_counted_in_sent_kpi() -> None:
    """The Sent KPI and LogState.relayed agree on which statuses were relayed."""
    assert {LogStatus.PENDING, LogStatus.SENT, LogStatus.FAILED} == RELAYED_STATUSES
    c = Counters(queued=5, pending=1, sent=2, failed=3, ignored=7)
    assert c.relayed == 6
