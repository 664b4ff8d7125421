"""`/campaign` subcommands: list, status, prepare, history, roles, help."""

from __future__ import annotations

from typing import Any

from bot.blocks import ids
from bot.blocks.campaign import (
    error_blocks,
    help_blocks,
    history_blocks,
    list_blocks,
    prepare_result_blocks,
    roles_blocks,
)
from bot.blocks.deployment import deployment_message
from bot.domain.errors import DomainError
from bot.domain.roles import Permission, require
from bot.handlers import Deps
from bot.services import roles as role_service
from bot.services.prepare import prepare_delivery
from bot.services.reporting import (
    delivery_detail,
    list_deliveries,
    marketing_history,
    sending_progress,
)

HELP_TEXT = "Greenlight: `/campaign help` lists the subcommands."


def register(app: Any, deps: Deps) -> None:
    async def reply(respond: Any, text: str, blocks: list[dict[str, Any]]) -> None:
        await respond(response_type="ephemeral", text=text, blocks=blocks)

    async def refuse(respond: Any, message: str) -> None:
        await reply(respond, message, error_blocks(message))

    async def run(user: str, words: list[str], respond: Any) -> None:
        sub, args = (words[0].lower(), words[1:]) if words else ("help", [])
        roles = await deps.roles(user)
        if sub == "list":
            require(roles, Permission.VIEW_DELIVERIES)
            rows = await deps.call(list_deliveries, deps.ctx)
            await reply(respond, f"{len(rows)} deliveries", list_blocks(rows))
        elif sub == "status" and len(args) == 1:
            require(roles, Permission.VIEW_DELIVERIES)
            detail = await deps.call(delivery_detail, deps.ctx, args[0])
            progress = await deps.call(sending_progress, deps.ctx, args[0])
            message = deployment_message(detail, progress, now=deps.ctx.clock.now())
            await reply(respond, message["text"], message["blocks"])
        elif sub == "prepare" and len(args) == 1:
            require(roles, Permission.PREPARE)
            await reply(respond, f"Preparing {args[0]}…", [])
            result = await deps.call(prepare_delivery, deps.ctx, args[0], actor=user)
            await reply(
                respond, f"{args[0]}: {result.state}", prepare_result_blocks(result.as_dict())
            )
        elif sub == "history" and len(args) == 1:
            require(roles, Permission.VIEW_DELIVERIES)
            email = _unlink_email(args[0])
            rows = await deps.call(marketing_history, deps.ctx, email)
            await reply(respond, f"History of {email}", history_blocks(email, rows))
        elif sub == "roles":
            await roles_command(user, roles, args, respond)
        else:
            await reply(respond, HELP_TEXT, help_blocks())

    async def roles_command(user: str, roles: Any, args: list[str], respond: Any) -> None:
        require(roles, Permission.MANAGE_ROLES)
        action = args[0].lower() if args else "list"
        if action == "list" and len(args) <= 1:
            grants = await deps.call(role_service.list_grants, deps.ctx)
            await reply(respond, "Roles", roles_blocks([g.as_dict() for g in grants]))
        elif action in ("grant", "revoke") and len(args) == 3:
            fn = role_service.grant if action == "grant" else role_service.revoke
            changed = await deps.call(fn, deps.ctx, args[1], args[2], actor=user)
            verb = "granted to" if action == "grant" else "revoked from"
            text = f"{args[2]} {verb} {args[1]}" if changed else "Nothing to change."
            await reply(respond, text, [])
        else:
            await refuse(
                respond, "Usage: `/campaign roles list|grant @user ROLE|revoke @user ROLE`"
            )

    @app.command(ids.CAMPAIGN_COMMAND)
    async def campaign(ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        try:
            await run(command["user_id"], (command.get("text") or "").split(), respond)
        except DomainError as exc:
            await refuse(respond, str(exc))


def _unlink_email(text: str) -> str:
    """Slack turns addresses into `<mailto:a@b.c|a@b.c>`; keep the address."""
    if text.startswith("<mailto:") and text.endswith(">"):
        return text[len("<mailto:") : -1].split("|", 1)[0]
    return text
