"""`app_home_opened`: the viewer opened the app's Home tab; publish it for their roles.

Slack sends the event for the Messages tab too; only the Home tab is published. The
publish itself is the follower's (`services.messages.home`): coalesced per person,
and from then on kept in step as what it shows changes.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext

from bot.handlers.deps import deps_of

HOME_TAB = "home"


async def home_opened(event: dict[str, Any], context: AsyncBoltContext) -> None:
    """Events are acknowledged by Bolt itself; this only asks for a publish."""
    home = deps_of(context).home
    user = event.get("user")
    if home is None or event.get("tab", HOME_TAB) != HOME_TAB or not isinstance(user, str):
        return
    home.opened(user)
