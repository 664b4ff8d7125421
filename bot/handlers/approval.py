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
from bot.blocks.approval import decision_message
from bot.domain.approval import Choice, Result
from bot.domain.errors import DomainError
from bot.handlers.deps import actor_of, deps_of
from bot.handlers.replies import refuse, send
from bot.services.messages.approval_requests import sync_requests
from bot.services.recurring.approvals import decide

OUT_OF_DATE = "This button is out of date: the approval request it belonged to is gone."


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
    deps.changed()
    await send(respond, decision_message(decision))
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
