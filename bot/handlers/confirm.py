"""`/confirm-send [ref]`, the delivery picker, and the **Confirm send** button."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks import ids
from bot.blocks.card import card_message, confirmed_message, picker_message
from bot.blocks.kit import local_time
from bot.domain.errors import DomainError
from bot.domain.lifecycle import DeliveryState
from bot.handlers.deps import HandlerDeps, actor_of, deps_of
from bot.handlers.replies import refuse, send
from bot.services.deliveries import views
from bot.services.deliveries.lifecycle import Transitioned, confirm_send
from bot.services.recurring.occurrences import next_occurrence

USAGE = "Usage: `/confirm-send [delivery-ref]` — without a ref, pick a ready delivery."
OUT_OF_DATE = "This button is out of date: run `/confirm-send` again."


async def _show_card(
    deps: HandlerDeps, context: AsyncBoltContext, respond: AsyncRespond, ref: str
) -> None:
    try:
        card = await deps.call(views.card, deps.ctx, actor_of(context), ref)
    except DomainError as exc:
        await refuse(respond, str(exc))
        return
    await send(respond, card_message(card))


async def confirm_send_command(
    ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """With a ref, that delivery's card; without one, a picker of the ready deliveries."""
    await ack()
    deps = deps_of(context)
    args = (command.get("text") or "").split()
    if len(args) > 1:
        await refuse(respond, f"`{command.get('text')}` is more than one ref. {USAGE}")
        return
    if args:
        await _show_card(deps, context, respond, args[0])
        return
    try:
        ready = await deps.call(views.ready_to_confirm, deps.ctx, actor_of(context))
    except DomainError as exc:
        await refuse(respond, str(exc))
        return
    await send(respond, picker_message(ready))


async def delivery_picked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    await _show_card(deps_of(context), context, respond, action["selected_option"]["value"])


async def confirm_clicked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """The OK of the dialog: Slack sends this action only after OK was clicked."""
    await ack()
    deps, actor = deps_of(context), actor_of(context)
    try:
        ref = str(ids.parse_button_value(action["value"])["ref"])
    except ValueError:
        await refuse(respond, OUT_OF_DATE)
        return
    try:
        moved = await deps.call(confirm_send, deps.ctx, actor, ref)
    except DomainError as exc:
        await refuse(respond, str(exc))
        return
    deps.kick()
    deps.changed()
    outcome = await _outcome(deps, ref, moved)
    await send(respond, confirmed_message(actor.id, ref, outcome), replace=True)


async def _outcome(deps: HandlerDeps, ref: str, moved: Transitioned) -> str:
    upcoming = await deps.call(next_occurrence, deps.ctx, ref)
    if upcoming is not None:
        how = (
            "waits for approval in this delivery's channel"
            if upcoming.request_confirmation
            else "is prepared and sent"
        )
        when = local_time(upcoming.at, upcoming.timezone)
        return f"each occurrence {how}. The first is at {when}."
    if moved.after is DeliveryState.IN_PROGRESS:
        await deps.deployments.refresh(ref, force=True)
        return "sending now."
    return "it starts by itself at its contact date."
