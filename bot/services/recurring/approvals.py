"""Approving or skipping an occurrence of a recurring delivery (SPEC section 4).

A decision is taken in one transaction that starts by locking the request with a
guarded `UPDATE … WHERE state = 'open'` (`store.approvals.lock`): two people clicking
at once, a double click and Slack's retry of a click are serialised, and exactly one
of them decides. The rule is the domain's (`domain.approval.cast`, then `EFFECTS`);
every click, refused ones included, goes to the audit log.

The Slack message is not changed here: the request's `version` grows, and
`services.messages.approval_requests` brings the message up to date (right after the
click, or at the next tick if Slack failed), so a decision is never lost because
Slack was down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.context import Context, Session
from bot.domain.approval import EFFECTS, Ballot, Choice, RequestState, Result, cast, click_note
from bot.domain.errors import PermissionDenied
from bot.domain.executions import ExecutionState
from bot.domain.roles import Actor, Permission
from bot.store import approvals, audit, executions, logs

PERMISSIONS = {Choice.APPROVE: Permission.APPROVE, Choice.SKIP: Permission.SKIP}


@dataclass(frozen=True)
class Decision:
    """What a click did: `outcome` is the domain's `Result`; `state`, `by` and `at` say
    what the request is now (who decided and when, once it is decided)."""

    request_id: int
    ref: str
    key: str
    outcome: Result
    state: RequestState
    approvals: int
    required: int
    by: list[str] = field(default_factory=list)
    at: datetime | None = None


def _audit_click(
    session: Session, now: datetime, user: str, ref: str, key: str, **detail: Any
) -> None:
    audit.record(
        session,
        now,
        actor=user,
        action="approval.click",
        subject_kind="delivery",
        subject_ref=ref,
        detail={"occurrence": key, **detail},
    )


def decide(ctx: Context, actor: Actor, ref: str, key: str, choice: Choice) -> Decision:
    """Approve or skip occurrence `key` of `ref` for `actor`, checked at the click.

    Raises PermissionDenied (recorded in the audit log) for someone without
    `start-deliveries`, NotFound for a request that does not exist.
    """
    now = ctx.clock.now()
    try:
        actor.require(PERMISSIONS[choice])
    except PermissionDenied:
        with ctx.sessions.begin() as s:
            _audit_click(s, now, actor.id, ref, key, choice=choice.value, result="refused: no role")
        raise
    with ctx.sessions.begin() as s:
        request, execution, delivery = approvals.find(s, ref, key)
        request = approvals.lock(s, request, now)  # clicks on one request, one at a time
        before = Ballot(
            request.state,
            request.required,
            tuple(u for u, _ in approvals.voters(s, request.id)),
            tuple(request.decided_by or ()),
        )
        result, after = cast(before, actor.id, choice)
        effects = EFFECTS[result]
        note = click_note(result, before, after)
        _audit_click(s, now, actor.id, ref, key, choice=choice.value, result=note)
        if effects.vote:
            approvals.add_vote(s, request.id, actor.id, now)
        if effects.close:
            approvals.close(s, request.id, after.state, after.decided_by, now)
        elif effects.visible:
            approvals.changed(s, request.id, now)
        if effects.skip:
            executions.move(
                s,
                execution.id,
                ExecutionState.PENDING_APPROVAL,
                ExecutionState.SKIPPED,
                finished_at=now,
            )
            logs.cancel_unsent(s, now, execution.id, include_claimed=True)
        if effects.send:
            executions.start(s, now, delivery, execution.id)
        decided = after.state is not RequestState.OPEN
        return Decision(
            request.id,
            ref,
            key,
            result,
            after.state,
            len(after.approvers),
            after.required,
            list(after.decided_by),
            (now if effects.close else request.decided_at) if decided else None,
        )


@dataclass(frozen=True)
class OpenRequest:
    """An approval request waiting for its decision, as `approvals list` shows it."""

    ref: str
    key: str
    occurrence_at: datetime
    approvals: int
    required: int
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "key": self.key,
            "occurrence_at": self.occurrence_at.isoformat(),
            "approvals": self.approvals,
            "required": self.required,
            "expires_at": self.expires_at.isoformat(),
        }


def open_requests(ctx: Context, actor: Actor) -> list[OpenRequest]:
    """The requests waiting for a decision, the soonest deadline first."""
    actor.require(Permission.VIEW_DELIVERIES)
    with ctx.sessions() as s:
        return [OpenRequest(*row) for row in approvals.open_requests(s)]
