"""The Deployment message's buttons: Compute stats, Pause, Resume, Stop send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks import ids
from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.roles import Actor
from bot.handlers.deps import actor_of, deps_of
from bot.handlers.replies import refuse
from bot.services.deliveries.lifecycle import pause_delivery, resume_delivery, stop_delivery
from bot.services.deliveries.views import compute_stats

Steer = Callable[[Context, Actor, str], Any]


async def _steer(
    action: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
    use_case: Steer,
    kick: bool,
) -> None:
    """Act on the button's delivery as the clicker, then bring its message up to date."""
    deps = deps_of(context)
    try:
        ref = str(ids.parse_button_value(action["value"])["ref"])
        await deps.call(use_case, deps.ctx, actor_of(context), ref)
    except (DomainError, ValueError) as exc:
        await refuse(respond, str(exc))
        return
    if kick:
        deps.kick()
    deps.changed()
    await deps.deployments.refresh(ref, force=True)


async def pause_clicked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    await _steer(action, respond, context, pause_delivery, kick=False)


async def resume_clicked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    await _steer(action, respond, context, resume_delivery, kick=True)


async def stop_clicked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    await ack()
    await _steer(action, respond, context, stop_delivery, kick=True)


async def compute_stats_clicked(
    ack: AsyncAck,
    action: dict[str, Any],
    body: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
) -> None:
    """Recount, then update the message clicked (an older occurrence's too) and the latest."""
    await ack()
    deps = deps_of(context)
    try:
        value = ids.parse_button_value(action["value"])
        ref = str(value["ref"])
        await deps.call(compute_stats, deps.ctx, actor_of(context), ref)
    except (DomainError, ValueError) as exc:
        await refuse(respond, str(exc))
        return
    deps.changed()
    key = value.get("execution")
    channel, ts = _clicked_message(body)
    await deps.deployments.refresh_clicked(ref, str(key) if key else None, channel, ts)


def _clicked_message(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Where the clicked button is: a channel message's channel and ts, or nothing (an
    ephemeral reply such as `/campaign status`, which chat.update cannot reach)."""
    container = body.get("container") or {}
    if container.get("type") != "message" or container.get("is_ephemeral"):
        return None, None
    channel, ts = container.get("channel_id"), container.get("message_ts")
    return (str(channel), str(ts)) if channel and ts else (None, None)
