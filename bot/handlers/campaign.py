"""`/campaign` subcommands: list, status, prepare, proof, history, audit, roles, help.

Each subcommand is a row of `SUBCOMMANDS`: its name, how many words follow it, and
the coroutine that answers; anything else gets the help. Permissions are the use
cases' to check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import ids
from bot.blocks.campaign import (
    audit_message,
    help_message,
    history_message,
    list_message,
    prepare_result_message,
    preparing_message,
    role_change_message,
    roles_message,
)
from bot.blocks.deployment import deployment_message
from bot.blocks.kit import Message
from bot.domain.errors import DomainError
from bot.domain.roles import Actor
from bot.handlers import proof
from bot.handlers.deps import HandlerDeps, actor_of, deps_of
from bot.handlers.replies import refuse, send
from bot.services import roles
from bot.services.audit import audit_page
from bot.services.deliveries import views
from bot.services.deliveries.prepare import prepare_delivery

ROLES_USAGE = "Usage: `/campaign roles list|grant @user ROLE|revoke @user ROLE`"
AUDIT_USAGE = "Usage: `/campaign audit [delivery-ref] [page N]` — without a ref, every entry."
AUDIT_OUT_OF_DATE = "This button is out of date: run `/campaign audit` again."
PROOF_USAGE = (
    "Usage: `/campaign proof delivery-ref [email]` — the message as that profile of the "
    "audience gets it (its first profile without one), sent to you."
)


@dataclass(frozen=True)
class Request:
    """One `/campaign` command: who, the words after the subcommand, where to answer."""

    deps: HandlerDeps
    actor: Actor
    args: list[str]
    respond: AsyncRespond
    client: AsyncWebClient

    async def reply(self, message: Message) -> None:
        await send(self.respond, message)


async def _list(r: Request) -> None:
    rows = await r.deps.call(views.list_deliveries, r.deps.ctx, r.actor)
    await r.reply(list_message(rows))


async def _status(r: Request) -> None:
    view = await r.deps.call(views.deployment, r.deps.ctx, r.actor, r.args[0])
    await r.reply(deployment_message(view))


async def _prepare(r: Request) -> None:
    await r.reply(preparing_message(r.args[0]))
    result = await r.deps.render(prepare_delivery, r.deps.ctx, r.actor, r.args[0])
    r.deps.changed()
    await r.reply(prepare_result_message(result))


async def _history(r: Request) -> None:
    email = _unlink_email(r.args[0])
    rows = await r.deps.call(views.marketing_history, r.deps.ctx, r.actor, email)
    await r.reply(history_message(email, rows))


async def _proof(r: Request) -> None:
    if not 1 <= len(r.args) <= 2:
        raise DomainError(PROOF_USAGE)
    email = _unlink_email(r.args[1]) if len(r.args) == 2 else None
    await r.reply(await proof.proof(r.deps, r.actor, r.client, r.args[0], email))


async def _roles(r: Request) -> None:
    action = r.args[0].lower() if r.args else "list"
    if action == "list" and len(r.args) <= 1:
        grants = await r.deps.call(roles.list_grants, r.deps.ctx, r.actor)
        await r.reply(roles_message(grants))
    elif action in ("grant", "revoke") and len(r.args) == 3:
        grant = action == "grant"
        change = roles.grant if grant else roles.revoke
        changed = await r.deps.call(change, r.deps.ctx, r.actor, r.args[1], r.args[2])
        await r.reply(role_change_message(r.args[1], r.args[2], grant, changed))
    else:
        raise DomainError(ROLES_USAGE)


def _audit_args(args: list[str]) -> tuple[str | None, int]:
    """`[ref] [page N]`: the ref (None: the whole trail) and the page, from 1."""
    ref: str | None = None
    rest = args
    if rest and rest[0].lower() != "page":
        ref, rest = rest[0], rest[1:]
    if not rest:
        return ref, 1
    if len(rest) == 2 and rest[0].lower() == "page" and rest[1].isdigit() and int(rest[1]) > 0:
        return ref, int(rest[1])
    raise DomainError(AUDIT_USAGE)


async def _audit(r: Request) -> None:
    ref, page = _audit_args(r.args)
    found = await r.deps.call(audit_page, r.deps.ctx, r.actor, ref=ref, page=page)
    await r.reply(audit_message(found))


async def audit_page_clicked(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """**More** or **Newer** under an audit page: that page replaces it, read as the clicker."""
    await ack()
    deps = deps_of(context)
    try:
        ref, page, upto = ids.parse_audit_page_value(action.get("value"))
    except ValueError:
        await refuse(respond, AUDIT_OUT_OF_DATE)
        return
    try:
        found = await deps.call(
            audit_page, deps.ctx, actor_of(context), ref=ref, page=page, upto=upto
        )
    except DomainError as exc:
        await refuse(respond, str(exc))
        return
    await send(respond, audit_message(found), replace=True)


async def _help(r: Request) -> None:
    await r.reply(help_message())


Answer = Callable[[Request], Awaitable[None]]

# name -> (words after it: an exact count, or None for any; what answers it)
SUBCOMMANDS: dict[str, tuple[int | None, Answer]] = {
    "list": (None, _list),
    "status": (1, _status),
    "prepare": (1, _prepare),
    "proof": (None, _proof),
    "history": (1, _history),
    "audit": (None, _audit),
    "roles": (None, _roles),
}


async def campaign_command(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
    client: AsyncWebClient,
) -> None:
    await ack()
    words = (command.get("text") or "").split()
    name, args = (words[0].lower(), words[1:]) if words else ("help", [])
    arity, answer = SUBCOMMANDS.get(name, (None, _help))
    if arity is not None and len(args) != arity:
        answer = _help
    request = Request(deps_of(context), actor_of(context), args, respond, client)
    try:
        await answer(request)
    except DomainError as exc:
        await refuse(respond, str(exc))


def _unlink_email(text: str) -> str:
    """Slack turns addresses into `<mailto:a@b.c|a@b.c>`; keep the address."""
    if text.startswith("<mailto:") and text.endswith(">"):
        return text[len("<mailto:") : -1].split("|", 1)[0]
    return text
