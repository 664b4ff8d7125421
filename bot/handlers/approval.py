"""**Confirm send** and **Skip this occurrence** on an approval request (SPEC section 4).

Slack sends the Confirm send action only after the OK of its dialog. The role is
checked at the click; the decision is the service's (`bot.services.approvals`),
which makes double clicks and Slack's retries act once. The clicker is answered
privately; the request message in the channel is updated for everyone.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.blocks import ids
from bot.blocks.campaign import error_blocks
from bot.domain.errors import DomainError
from bot.handlers import Deps
from bot.services.approvals import APPROVE, SKIP, Decision, decide, sync_messages

log = logging.getLogger(__name__)

OUT_OF_DATE = "This button is out of date: the approval request it belonged to is gone."


def _people(users: list[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users) or "nobody"


def reply_text(decision: Decision) -> str:
    """What the clicker is told, privately: what their click did, or what was decided."""
    what = f"*{decision.ref}* (occurrence {decision.key})"
    if decision.outcome == "approved":
        return f"You approved {what}: it is being sent now."
    if decision.outcome == "skipped":
        return f"You skipped {what}: it will not be sent."
    if decision.outcome == "recorded":
        return (
            f"Your approval of {what} is recorded: {decision.approvals} of "
            f"{decision.required}. It is sent once {decision.required} people have approved."
        )
    if decision.outcome == "already-voted":
        return (
            f"You already approved {what}; {decision.approvals} of {decision.required} "
            "approvals so far. Another person must approve it."
        )
    when = decision.at.strftime("%Y-%m-%d %H:%M UTC") if decision.at else "earlier"
    if decision.state == "expired":
        return f"{what} expired at {when} without a decision: it was not sent."
    verb = {"approved": "approved", "skipped": "skipped"}.get(decision.state, decision.state)
    return f"{what} was already {verb} by {_people(decision.by)} at {when}. Nothing more was done."


async def _private(respond: Any, message: str) -> None:
    await respond(
        response_type="ephemeral",
        replace_original=False,
        text=message,
        blocks=error_blocks(message),
    )


def register(app: Any, deps: Deps) -> None:
    async def clicked(
        body: dict[str, Any], action: dict[str, Any], respond: Any, client: Any, choice: str
    ) -> None:
        user = body["user"]["id"]
        try:
            value = ids.parse_button_value(action["value"])
            ref, key = value["ref"], str(value[ids.OCCURRENCE_KEY])
        except (ValueError, KeyError):
            await _private(respond, OUT_OF_DATE)
            return
        roles = await deps.roles(user)
        try:
            decision = await deps.call(decide, deps.ctx, ref, key, user, roles, choice)
        except DomainError as exc:
            await _private(respond, str(exc))
            return
        if decision.outcome == "approved":
            deps.kick()
        await respond(response_type="ephemeral", replace_original=False, text=reply_text(decision))
        if decision.outcome != "decided":
            await sync_messages(deps.ctx, client, only=decision.request_id)

    @app.action(ids.APPROVE_OCCURRENCE)
    async def approve(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any, client: Any
    ) -> None:
        await ack()
        await clicked(body, action, respond, client, APPROVE)

    @app.action(ids.SKIP_OCCURRENCE)
    async def skip(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any, client: Any
    ) -> None:
        await ack()
        await clicked(body, action, respond, client, SKIP)
