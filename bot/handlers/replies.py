"""The private answers every listener gives: a refusal, or a message, to the clicker alone."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks.campaign import error_blocks

OUT_OF_DATE = "This button is out of date: run the command that showed it again."


async def refuse(respond: AsyncRespond, message: str) -> None:
    """What went wrong and what to do, privately; the message that showed it stays."""
    await respond(
        response_type="ephemeral",
        replace_original=False,
        text=message,
        blocks=error_blocks(message),
    )


async def tell(
    respond: AsyncRespond, text: str, blocks: list[dict[str, Any]] | None = None
) -> None:
    """A private answer beside the message that was clicked (or the command typed)."""
    if blocks is None:
        await respond(response_type="ephemeral", replace_original=False, text=text)
    else:
        await respond(response_type="ephemeral", replace_original=False, text=text, blocks=blocks)
