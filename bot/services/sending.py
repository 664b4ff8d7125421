"""Confirm, start, pause, resume and stop a delivery (SPEC section 3).

These change the delivery's state only; the sender (`bot.engine.sender`) reads the
state between batches and acts on it, so a pause takes effect after the batch in
flight and a stop never sends the rest.

Each transition is an atomic `UPDATE … WHERE state = <expected>`: of two people
clicking at once, or a click and Slack's retry of it, exactly one changes the state;
the other is told what happened instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.clock import Clock
from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.lifecycle import Action, DeliveryState, transition
from bot.domain.logs import Event, LogStatus
from bot.domain.roles import Permission, Role, require
from bot.services import audit
from bot.services.executions import main_execution
from bot.services.outcomes import LogEvent, apply_log_events
from bot.services.reporting import get_delivery, is_preparation_current
from bot.store.models import Delivery, Execution, SendingLog


@dataclass(frozen=True)
class Transitioned:
    ref: str
    before: DeliveryState
    after: DeliveryState


def not_ready_reason(d: Delivery) -> str | None:
    """Why a delivery cannot be confirmed now, in words a person can act on."""
    state = DeliveryState(d.state)
    if state is not DeliveryState.READY:
        if d.prepared_at is None:
            return f"{d.ref} is not prepared yet: run `/campaign prepare {d.ref}` first"
        if state is DeliveryState.EDITING and d.preparation_errors:
            return f"{d.ref} has preparation errors: fix them and prepare it again"
        if state is DeliveryState.EDITING:
            return f"{d.ref} changed after it was prepared: prepare it again"
        return f"{d.ref} is {state.value}: it was already confirmed"
    if not is_preparation_current(d):
        return f"{d.ref} changed after it was prepared: prepare it again"
    if d.recurrence_cron and d.request_confirmation and not d.slack_channel:
        return (
            f"{d.ref} asks for approval of each occurrence but has no slack_channel to post "
            "the requests in: set slack_channel, or request_confirmation: false"
        )
    if d.to_deliver == 0:
        return f"{d.ref} has nobody to deliver to (to deliver = 0): check its audience"
    return None


def _move(
    session: Session, clock: Clock, d: Delivery, action: Action, actor: str, **values: object
) -> Transitioned:
    before = DeliveryState(d.state)
    after = transition(before, action)
    done = session.execute(
        update(Delivery)
        .where(Delivery.id == d.id, Delivery.state == before.value)
        .values(state=after.value, **values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not done:
        # Someone else acted first (a double click, Slack's retry, another person):
        # say what the delivery became, as a refusal from that state would.
        now_state = session.scalar(select(Delivery.state).where(Delivery.id == d.id))
        if action is Action.CONFIRM and now_state != DeliveryState.READY.value:
            raise DomainError(f"{d.ref} is {now_state}: it was already confirmed")
        raise DomainError(
            f"{d.ref} changed meanwhile (it is {now_state} now); look at it again before acting"
        )
    if not d.recurrence_cron:
        # A recurring delivery's "main" execution is only its preview; its occurrences
        # have states of their own (bot.services.recurring).
        session.execute(
            update(Execution)
            .where(Execution.delivery_id == d.id, Execution.key == "main")
            .values(state=after.value)
        )
    audit.record(
        session,
        clock,
        actor=actor,
        action=f"delivery.{action.value}",
        subject_kind="delivery",
        subject_ref=d.ref,
        detail={"from": before.value, "to": after.value},
    )
    return Transitioned(d.ref, before, after)


def confirm_send(ctx: Context, ref: str, actor: str, roles: Iterable[Role]) -> Transitioned:
    """The OK of the confirmation dialog: record who and when, then start or wait.

    A recurring delivery starts at once: from now on each occurrence of its
    recurrence is prepared and sent (or waits for approval) when it comes.
    """
    require(roles, Permission.CONFIRM_SEND)
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        d = get_delivery(s, ref)
        reason = not_ready_reason(d)
        if reason:
            raise DomainError(reason)
        moved = _move(s, ctx.clock, d, Action.CONFIRM, actor, confirmed_by=actor, confirmed_at=now)
    if d.schedule_mode == "on-confirm" or d.recurrence_cron:
        return start_delivery(ctx, ref, actor="system")
    return moved


def start_delivery(ctx: Context, ref: str, actor: str = "system") -> Transitioned:
    """Begin sending: the validity period starts now.

    For a recurring delivery, "started" means its recurrence is active: the first
    occurrence is the first one after now (the cursor of bot.services.recurring).
    """
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        d = get_delivery(s, ref)
        if d.recurrence_cron:
            return _move(
                s, ctx.clock, d, Action.START, actor, started_at=now, recurrence_cursor=now
            )
        moved = _move(s, ctx.clock, d, Action.START, actor, started_at=now)
        e = main_execution(s, d, now)
        e.started_at = now
        e.validity_ends_at = now + timedelta(seconds=d.validity_seconds)
        e.state = DeliveryState.IN_PROGRESS.value
    return moved


def pause_delivery(ctx: Context, ref: str, actor: str, roles: Iterable[Role]) -> Transitioned:
    require(roles, Permission.PAUSE)
    with ctx.sessions.begin() as s:
        return _move(s, ctx.clock, get_delivery(s, ref), Action.PAUSE, actor)


def resume_delivery(ctx: Context, ref: str, actor: str, roles: Iterable[Role]) -> Transitioned:
    """Resume sending; a recurring delivery's occurrences that fell while it was paused
    are not caught up (pausing them was the point), the next one runs on time."""
    require(roles, Permission.RESUME)
    with ctx.sessions.begin() as s:
        d = get_delivery(s, ref)
        if d.recurrence_cron:
            now = ctx.clock.now()
            return _move(s, ctx.clock, d, Action.RESUME, actor, recurrence_cursor=now)
        return _move(s, ctx.clock, d, Action.RESUME, actor)


def stop_delivery(ctx: Context, ref: str, actor: str, roles: Iterable[Role]) -> Transitioned:
    """End the send for good: recipients not yet claimed by a sender are never sent."""
    require(roles, Permission.STOP)
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        d = get_delivery(s, ref)
        moved = _move(s, ctx.clock, d, Action.STOP, actor, finished_at=now)
        for e in s.scalars(select(Execution).where(Execution.delivery_id == d.id)):
            cancel_unsent(s, now, e.id, include_claimed=False)
            if d.recurrence_cron and e.state in ("preparing", "pending-approval"):
                e.state = DeliveryState.STOPPED.value
                e.finished_at = now
        if d.recurrence_cron:
            from bot.services.approvals import stop_requests

            stop_requests(s, now, d.id, "the delivery was stopped")
    return moved


def cancel_unsent(
    session: Session,
    now: datetime,
    execution_id: int,
    include_claimed: bool,
    reason: str = "stopped",
) -> int:
    """Queued logs become Ignored (never relayed), with `reason`; claimed ones only when
    `include_claimed` (their sender is done with them)."""
    stmt = select(SendingLog.id).where(
        SendingLog.execution_id == execution_id, SendingLog.status == LogStatus.QUEUED.value
    )
    if not include_claimed:
        stmt = stmt.where(SendingLog.claim_token.is_(None))
    ids = list(session.scalars(stmt))
    apply_log_events(session, now, [LogEvent(i, Event.CANCELLED, reason=reason) for i in ids])
    return len(ids)


def readiness(ctx: Context, ref: str) -> str | None:
    """None when `ref` can be confirmed now, else the reason in words a person acts on."""
    with ctx.sessions() as s:
        return not_ready_reason(get_delivery(s, ref))
