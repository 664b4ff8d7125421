"""How listeners answer: privately, with a message a builder of `bot.blocks` made.

Listeners compose no text of their own: every answer is built (and its data escaped)
by the builders, and sent here.
"""

from __future__ import annotations

from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.blocks.campaign import error_message
from bot.blocks.kit import Message


async def send(respond: AsyncRespond, message: Message, *, replace: bool = False) -> None:
    """To the person who clicked or typed only; `replace`: instead of the clicked message."""
    if replace:
        await respond(replace_original=True, **message)
    else:
        await respond(response_type="ephemeral", replace_original=False, **message)


async def refuse(respond: AsyncRespond, reason: str) -> None:
    """What went wrong and what to do, privately; the message that showed it stays."""
    await send(respond, error_message(reason))
