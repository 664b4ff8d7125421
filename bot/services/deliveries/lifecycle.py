"""Confirm, start, pause, resume and stop a delivery (SPEC section 3).

These change the delivery's state only; the sender reads the state between batches
and acts on it, so a pause takes effect after the batch in flight and a stop never
sends the rest.

Each transition is a compare-and-set (`store.deliveries.move`): of two people clicking
at once, or a click and Slack's retry of it, exactly one changes the state; the other
is told what happened instead. Each use case is one transaction: the OK of an
on-confirm delivery confirms *and* starts it, or does neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.context import Context, Session
from bot.domain.approval import RequestState
from bot.domain.errors import DomainError
from bot.domain.executions import ExecutionState
from bot.domain.lifecycle import Action, DeliveryState, transition
from bot.domain.readiness import not_ready_reason
from bot.domain.roles import Actor, Permission
from bot.domain.schedule import ScheduleMode
from bot.store import approvals, audit, deliveries, executions, guard, logs
from bot.store.models import Delivery

STOPPED_REASON = "the delivery was stopped"
GUARD_ACTOR = "guard"  # who the send guard's acts are recorded as
MAX_FAILURE_REASON = 1000
SENDING = (ExecutionState.IN_PROGRESS, ExecutionState.PAUSED)


@dataclass(frozen=True)
class Transitioned:
    ref: str
    before: DeliveryState
    after: DeliveryState


def _move(
    session: Session,
    now: datetime,
    d: Delivery,
    action: Action,
    actor: str,
    detail: dict[str, Any] | None = None,
    **values: Any,
) -> Transitioned:
    before = d.state
    after = transition(before, action)
    if not deliveries.move(session, d.id, before, after, **values):
        # Someone else acted first (a double click, Slack's retry, another person):
        # say what the delivery became, as a refusal from that state would.
        now_state = deliveries.state_of(session, d.id)
        if action is Action.CONFIRM and now_state is not DeliveryState.READY:
            raise DomainError(f"{d.ref} is {now_state}: it was already confirmed")
        raise DomainError(
            f"{d.ref} changed meanwhile (it is {now_state} now); look at it again before acting"
        )
    audit.record(
        session,
        now,
        actor=actor,
        action=f"delivery.{action.value}",
        subject_kind="delivery",
        subject_ref=d.ref,
        detail={"from": before.value, "to": after.value, **(detail or {})},
    )
    return Transitioned(d.ref, before, after)


def _start(session: Session, now: datetime, d: Delivery, actor: str) -> Transitioned:
    """Begin sending: the validity period starts now.

    For a recurring delivery, "started" means its recurrence is active: the first
    occurrence is the first one after now (the cursor of the recurring step).
    """
    if d.recurrence_cron:
        return _move(session, now, d, Action.START, actor, started_at=now, recurrence_cursor=now)
    moved = _move(session, now, d, Action.START, actor, started_at=now)
    execution = executions.main_execution(session, d, now)
    executions.start(session, now, d, execution.id)
    return moved


def confirm_send(ctx: Context, actor: Actor, ref: str) -> Transitioned:
    """The OK of the confirmation dialog: record who and when, then start or wait.

    An on-confirm delivery, or a recurring one, starts in the same transaction: a
    process that dies between the two, or a write that fails, leaves the delivery
    ready to be confirmed again, never confirmed and not started.
    """
    actor.require(Permission.CONFIRM_SEND)
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        d = deliveries.get(s, ref)
        reason = not_ready_reason(deliveries.facts(d), now)
        if reason:
            raise DomainError(reason)
        moved = _move(s, now, d, Action.CONFIRM, actor.id, confirmed_by=actor.id, confirmed_at=now)
        if d.schedule_mode is ScheduleMode.ON_CONFIRM or d.recurrence_cron:
            return _start(s, now, deliveries.reload(s, d.id), actor="system")
        return moved


def start_delivery(ctx: Context, ref: str, actor: str = "system") -> Transitioned:
    """Start a confirmed `at` delivery whose contact date has come (the scheduler's act)."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        return _start(s, now, deliveries.get(s, ref), actor)


def start_due(ctx: Context) -> list[str]:
    """Start `at` deliveries whose date has come (also dates missed while down), once."""
    with ctx.sessions() as s:
        refs = deliveries.waiting_to_start(s, ctx.clock.now())
    started = []
    for ref in refs:
        try:
            start_delivery(ctx, ref, actor="scheduler")
            started.append(ref)
        except DomainError:
            continue  # another process started it first
    return started


def pause_delivery(ctx: Context, actor: Actor, ref: str) -> Transitioned:
    actor.require(Permission.PAUSE)
    with ctx.sessions.begin() as s:
        return _move(s, ctx.clock.now(), deliveries.get(s, ref), Action.PAUSE, actor.id)


def resume_delivery(ctx: Context, actor: Actor, ref: str) -> Transitioned:
    """Resume sending; a recurring delivery's occurrences that fell while it was paused
    are not caught up (pausing them was the point), the next one runs on time.

    The send guard's window starts again now: a person who resumes has read the
    answers that crossed the threshold, so only answers after the Resume count.
    """
    actor.require(Permission.RESUME)
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        d = deliveries.get(s, ref)
        sending = [e.id for e in executions.of_delivery(s, d.id) if e.state in SENDING]
        guard.restart_windows(s, sending, now)
        if d.recurrence_cron:
            return _move(s, now, d, Action.RESUME, actor.id, recurrence_cursor=now)
        return _move(s, now, d, Action.RESUME, actor.id)


def pause_by_guard(
    session: Session, now: datetime, d: Delivery, detail: dict[str, Any]
) -> Transitioned:
    """The send guard's pause (`services.deliveries.guard`): the Pause button's
    transition, in the guard's transaction, audited as `guard` with what it read."""
    return _move(session, now, d, Action.PAUSE, GUARD_ACTOR, detail)


def stop_delivery(ctx: Context, actor: Actor, ref: str) -> Transitioned:
    """End the send for good: recipients not yet claimed by a sender are never sent.

    A recurring delivery's occurrences waiting to be prepared or approved end too, and
    its open approval requests expire (their buttons go).
    """
    actor.require(Permission.STOP)
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        d = deliveries.get(s, ref)
        moved = _move(s, now, d, Action.STOP, actor.id, finished_at=now)
        for e in executions.of_delivery(s, d.id):
            logs.cancel_unsent(s, now, e.id, include_claimed=False)
        if d.recurrence_cron:
            executions.stop_unsent_occurrences(s, d.id, now)
            for request_id in approvals.open_of_delivery(s, d.id):
                approvals.close(s, request_id, RequestState.EXPIRED, (), now, STOPPED_REASON)
    return moved


def fail_execution(ctx: Context, execution_id: int, reason: str) -> bool:
    """Sending this execution cannot go on (its message cannot even be built): say why.

    The execution is failed with the reason, and so is a one-off delivery (a recurring
    one goes on: the next occurrence may well send); what was not sent is never sent.
    False when the execution had already left sending (a stop, a pause meanwhile).
    """
    now = ctx.clock.now()
    reason = reason.strip()[:MAX_FAILURE_REASON] or "unknown failure"
    with ctx.sessions.begin() as s:
        e = executions.get(s, execution_id)
        d = e.delivery
        if not executions.move(
            s, execution_id, SENDING, ExecutionState.FAILED, finished_at=now, failure_reason=reason
        ):
            return False
        logs.cancel_unsent(s, now, execution_id, include_claimed=True)
        before = d.state
        if d.recurrence_cron is None:
            deliveries.move(s, d.id, before, transition(before, Action.FAIL), finished_at=now)
        audit.record(
            s,
            now,
            actor="system",
            action=f"delivery.{Action.FAIL.value}",
            subject_kind="delivery",
            subject_ref=d.ref,
            detail={"execution": e.key, "reason": reason},
        )
    return True
