"""**Send me a proof** (the card's button) and `/campaign proof REF [EMAIL]`.

The proof goes to PROOF_ADDRESSES when set, else to the asker's own address, which only
Slack knows: `users.info` (scope `users:read.email`) gives `user.profile.email`. The
role and the minute's count are asked first (`may_send_proof`), so a refused person
costs no Slack call; the use case checks them again when it sends.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import ids
from bot.blocks.card import proof_sent_message
from bot.blocks.kit import Message
from bot.domain.errors import DomainError
from bot.domain.roles import Actor
from bot.engine.transports import make_transport
from bot.handlers.deps import HandlerDeps, actor_of, deps_of
from bot.handlers.replies import refuse, send
from bot.services.deliveries.proofs import configured_addresses, may_send_proof, send_proof

OUT_OF_DATE = "This button is out of date: run `/confirm-send` again."
NO_ADDRESS = (
    "Slack did not give your email address ({why}), so the proof has nowhere to go. "
    "An admin can add the `users:read.email` scope to the app, or set PROOF_ADDRESSES."
)


async def own_address(client: AsyncWebClient, user_id: str) -> str:
    """The asker's address from `users.info`; a DomainError that says why when Slack
    gives none (no scope, an unknown user, Slack down)."""
    try:
        resp = await client.users_info(user=user_id)
    except SlackApiError as exc:
        data = exc.response.data  # JSON from Slack; text from a proxy or an error page
        error = data.get("error") if isinstance(data, dict) else None
        why = f"users.info: {error or f'HTTP {exc.response.status_code}'}"
        raise DomainError(NO_ADDRESS.format(why=why)) from None
    except (SlackClientError, OSError) as exc:
        raise DomainError(NO_ADDRESS.format(why=f"users.info failed: {exc}")) from None
    user = resp.get("user")
    profile = user.get("profile") if isinstance(user, dict) else None
    email = profile.get("email") if isinstance(profile, dict) else None
    if not isinstance(email, str) or not email:
        raise DomainError(NO_ADDRESS.format(why="your profile has no email for the app"))
    return email


async def proof(
    deps: HandlerDeps, actor: Actor, client: AsyncWebClient, ref: str, email: str | None
) -> Message:
    """Send the proof of `ref` for `email`'s profile; what the asker is told."""
    await deps.call(may_send_proof, deps.ctx, actor)
    to = await deps.call(configured_addresses, deps.ctx) or (await own_address(client, actor.id),)
    ctx = deps.ctx
    transports = deps.transports or (lambda: make_transport(ctx.settings))
    sent = await deps.call(send_proof, ctx, actor, transports, ref, email, to)
    return proof_sent_message(sent)


async def proof_clicked(
    ack: AsyncAck,
    action: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
    client: AsyncWebClient,
) -> None:
    """The card's **Send me a proof**: the card's sample profile, to the clicker."""
    await ack()
    try:
        ref = str(ids.parse_button_value(action["value"])["ref"])
    except ValueError:
        await refuse(respond, OUT_OF_DATE)
        return
    try:
        answer = await proof(deps_of(context), actor_of(context), client, ref, None)
    except DomainError as exc:
        await refuse(respond, str(exc))
        return
    await send(respond, answer)
