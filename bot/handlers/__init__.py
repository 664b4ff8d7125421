"""Slack listeners, one module per kind, each with `register(app, deps)`.

Handlers are thin: `ack()` first, then a service call in a worker thread (the
services use the database synchronously), then a reply. The role is checked by the
service at the moment of the action, never from the message that showed the button.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.context import Context
from bot.domain.roles import Role

T = TypeVar("T")


@dataclass
class Deps:
    ctx: Context
    kick: Callable[[], None]  # wake the sender
    refresh: Callable[..., Any]  # async: refresh a delivery's Deployment message
    groups: Any = None  # a UsergroupDirectory, for roles granted to user groups

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def roles(self, user_id: str) -> frozenset[Role]:
        from bot.services.roles import granted_groups, roles_of

        groups: list[str] = []
        if self.groups is not None:
            candidates = await self.call(granted_groups, self.ctx)
            groups = await self.groups.groups_of(user_id, candidates) if candidates else []
        return await self.call(roles_of, self.ctx, user_id, groups)


def register_all(app: Any, deps: Deps) -> None:
    from bot.handlers import approval, campaign, confirm, deployment

    approval.register(app, deps)
    confirm.register(app, deps)
    deployment.register(app, deps)
    campaign.register(app, deps)
