"""`/confirm-send [ref]`, the delivery picker, and the **Confirm send** button."""

from __future__ import annotations

import logging
from typing import Any

from bot.blocks import ids
from bot.blocks.campaign import error_blocks
from bot.blocks.card import delivery_card, delivery_picker
from bot.blocks.kit import local_time
from bot.domain.errors import DomainError
from bot.domain.roles import Permission, allows, require
from bot.handlers import Deps
from bot.services.recurring import next_occurrence
from bot.services.reporting import delivery_detail, list_deliveries
from bot.services.sending import confirm_send, readiness

log = logging.getLogger(__name__)

USAGE = "Usage: `/confirm-send [delivery-ref]` — without a ref, pick a ready delivery."


async def _private(respond: Any, message: str) -> None:
    await respond(response_type="ephemeral", text=message, blocks=error_blocks(message))


async def show_card(deps: Deps, respond: Any, ref: str) -> None:
    try:
        detail = await deps.call(delivery_detail, deps.ctx, ref)
        reason = await deps.call(readiness, deps.ctx, ref)
    except DomainError as exc:
        await _private(respond, str(exc))
        return
    await respond(
        response_type="ephemeral",
        replace_original=False,
        text=f"{detail['name']} ({ref})",
        blocks=delivery_card(detail, reason),
    )


def register(app: Any, deps: Deps) -> None:
    @app.command(ids.CONFIRM_SEND_COMMAND)
    async def confirm_send_command(ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        roles = await deps.roles(command["user_id"])
        if not allows(roles, Permission.CONFIRM_SEND):
            try:
                require(roles, Permission.CONFIRM_SEND)
            except DomainError as exc:
                await _private(respond, str(exc))
            return
        args = (command.get("text") or "").split()
        if len(args) > 1:
            await _private(respond, f"`{command.get('text')}` is more than one ref. {USAGE}")
            return
        if args:
            await show_card(deps, respond, args[0])
            return
        rows = await deps.call(list_deliveries, deps.ctx)
        ready = [r for r in rows if r["state"] == "ready" and r["prepared"]]
        await respond(
            response_type="ephemeral", text="Pick a delivery", blocks=delivery_picker(ready)
        )

    @app.action(ids.PICK_DELIVERY)
    async def picked(ack: Any, action: dict[str, Any], respond: Any) -> None:
        await ack()
        await show_card(deps, respond, action["selected_option"]["value"])

    @app.action(ids.CONFIRM_SEND)
    async def confirmed(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        """The OK of the dialog: Slack sends this action only after OK was clicked."""
        await ack()
        user = body["user"]["id"]
        try:
            ref = ids.parse_button_value(action["value"])["ref"]
        except ValueError:
            await _private(respond, "This button is out of date: run `/confirm-send` again.")
            return
        roles = await deps.roles(user)
        try:
            moved = await deps.call(confirm_send, deps.ctx, ref, user, roles)
        except DomainError as exc:
            await _private(respond, str(exc))
            return
        deps.kick()
        upcoming = await deps.call(next_occurrence, deps.ctx, ref)
        if upcoming is not None:
            detail = await deps.call(delivery_detail, deps.ctx, ref)
            recurrence = detail["recurrence"]
            how = (
                "waits for approval in this delivery's channel"
                if recurrence["request_confirmation"]
                else "is prepared and sent"
            )
            when = local_time(upcoming, recurrence["timezone"])
            text = f"<@{user}> confirmed *{ref}*: each occurrence {how}. The first is at {when}."
        elif moved.after.value == "in-progress":
            text = f"<@{user}> confirmed *{ref}*: sending now."
            await deps.refresh(ref, force=True)
        else:
            text = f"<@{user}> confirmed *{ref}*: it starts by itself at its contact date."
        await respond(replace_original=True, text=text)
