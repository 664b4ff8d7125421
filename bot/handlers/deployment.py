"""The Deployment message's buttons: Compute stats, Pause, Resume, Stop send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.blocks import ids
from bot.blocks.campaign import error_blocks
from bot.domain.errors import DomainError
from bot.domain.roles import Permission, require
from bot.handlers import Deps
from bot.services.reporting import compute_delivery_stats
from bot.services.sending import pause_delivery, resume_delivery, stop_delivery


def register(app: Any, deps: Deps) -> None:
    async def steer(
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Any,
        fn: Callable[..., Any],
        kick: bool,
    ) -> None:
        user = body["user"]["id"]
        try:
            ref = ids.parse_button_value(action["value"])["ref"]
            roles = await deps.roles(user)
            await deps.call(fn, deps.ctx, ref, user, roles)
        except (DomainError, ValueError) as exc:
            message = str(exc)
            await respond(
                response_type="ephemeral",
                replace_original=False,
                text=message,
                blocks=error_blocks(message),
            )
            return
        if kick:
            deps.kick()
        await deps.refresh(ref, force=True)

    @app.action(ids.PAUSE)
    async def pause(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        await steer(body, action, respond, pause_delivery, kick=False)

    @app.action(ids.RESUME)
    async def resume(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        await steer(body, action, respond, resume_delivery, kick=True)

    @app.action(ids.STOP)
    async def stop(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        await steer(body, action, respond, stop_delivery, kick=True)

    def compute(ctx: Any, ref: str, user: str, roles: Any) -> Any:
        require(roles, Permission.COMPUTE_STATS)
        return compute_delivery_stats(ctx, ref)

    @app.action(ids.COMPUTE_STATS)
    async def compute_stats(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        await ack()
        await steer(body, action, respond, compute, kick=False)
