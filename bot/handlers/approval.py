"""**Confirm send** and **Skip this occurrence** on an approval request (SPEC section 4).

Slack sends the Confirm send action only after the OK of its dialog. The decision is
the use case's (`services.recurring.approvals.decide`, which checks the role at the
click and makes double clicks and Slack's retries act once). The clicker is answered
privately; the request message in the channel is updated for everyone.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks import ids
from bot.domain.approval import Choice, RequestState, Result
from bot.domain.errors import DomainError
from bot.handlers.deps import actor_of, deps_of
from bot.handlers.replies import refuse, tell
from bot.services.messages.approval_requests import sync_requests
from bot.services.recurring.approvals import Decision, decide

OUT_OF_DATE = "This button is out of date: the approval request it belonged to is gone."


def _people(users: list[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users) or "nobody"


def reply_text(decision: Decision) -> str:
    """What the clicker is told, privately: what their click did, or what was decided."""
    what = f"*{decision.ref}* (occurrence {decision.key})"
    if decision.outcome is Result.APPROVED:
        return f"You approved {what}: it is being sent now."
    if decision.outcome is Result.SKIPPED:
        return f"You skipped {what}: it will not be sent."
    if decision.outcome is Result.RECORDED:
        return (
            f"Your approval of {what} is recorded: {decision.approvals} of "
            f"{decision.required}. It is sent once {decision.required} people have approved."
        )
    if decision.outcome is Result.ALREADY_VOTED:
        return (
            f"You already approved {what}; {decision.approvals} of {decision.required} "
            "approvals so far. Another person must approve it."
        )
    when = decision.at.strftime("%Y-%m-%d %H:%M UTC") if decision.at else "earlier"
    if decision.state is RequestState.EXPIRED:
        return f"{what} expired at {when} without a decision: it was not sent."
    return (
        f"{what} was already {decision.state.value} by {_people(decision.by)} at {when}. "
        "Nothing more was done."
    )


async def _clicked(
    action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext, choice: Choice
) -> None:
    deps = deps_of(context)
    try:
        value = ids.parse_button_value(action["value"])
        ref, key = str(value["ref"]), str(value[ids.OCCURRENCE_KEY])
    except (ValueError, KeyError):
        await refuse(respond, OUT_OF_DATE)
        return
    try:
        decision = await deps.call(decide, deps.ctx, actor_of(context), ref, key, choice)
    except DomainError as exc:
        await refuse(respond, str(exc))
        return
    if decision.outcome is Result.APPROVED:
        deps.kick()
    await tell(respond, reply_text(decision))
    if decision.outcome is not Result.DECIDED:
        await sync_requests(deps.ctx, deps.notifications, only=decision.request_id)


async def approve_clicked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    await _clicked(action, respond, context, Choice.APPROVE)


async def skip_clicked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    await _clicked(action, respond, context, Choice.SKIP)
