"""What listeners need, and the caller of each request, both carried by Bolt's context.

`register` puts a `HandlerDeps` on every request's context (one middleware, `Caller`),
together with the caller as an `Actor` with the roles they hold at that moment: a
listener reads both with `deps_of` and `actor_of`, typed, and never looks roles up
itself. Permissions are checked by the use cases (`bot.services`), the one layer that
checks them, so the command line and Slack refuse the same things the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import ParamSpec, TypeVar

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.roles import Actor
from bot.notify.slack_client import UsergroupDirectory
from bot.services.messages.deployment import DeploymentFollower
from bot.services.notifications import Notifications
from bot.services.roles import direct_roles_and_groups, roles_of

P = ParamSpec("P")
T = TypeVar("T")

DEPS = "greenlight"
ACTOR = "greenlight_actor"


class RenderPool:
    """Where preparations run: their own few threads, never the ones the server answers with.

    A preparation renders every profile's message; even bounded per message
    (`bot.engine.render_limits`), several at once would take every worker thread of
    the default pool, and `/healthz`, webhooks and every other Slack request with
    them. Here at most `workers` run and `waiting` more wait; beyond that the caller
    is told to try again.
    """

    def __init__(self, workers: int = 2, waiting: int = 6) -> None:
        self.workers = workers
        self.capacity = workers + waiting
        self._executor: ThreadPoolExecutor | None = None
        self._taken = 0

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._taken >= self.capacity:
            raise DomainError(
                f"{self._taken} preparations are running or waiting already; try again in a minute"
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.workers, thread_name_prefix="greenlight-prepare"
            )
        self._taken += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))
        finally:
            self._taken -= 1


@dataclass(frozen=True)
class HandlerDeps:
    ctx: Context
    kick: Callable[[], None]  # wake the sender: something is to be sent now
    deployments: DeploymentFollower
    notifications: Notifications
    groups: UsergroupDirectory | None = None  # for roles granted to user groups
    renders: RenderPool = field(default_factory=RenderPool)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a use case in a worker thread: they use the database synchronously."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def render(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a use case that renders every profile's message (`RenderPool`)."""
        return await self.renders.run(fn, *args, **kwargs)

    async def actor(self, user_id: str) -> Actor:
        direct, candidates = await self.call(direct_roles_and_groups, self.ctx, user_id)
        if self.groups is None or not candidates:
            return Actor(user_id, direct)
        groups = await self.groups.groups_of(user_id, candidates)
        if not groups:
            return Actor(user_id, direct)
        return Actor(user_id, await self.call(roles_of, self.ctx, user_id, groups))


def deps_of(context: AsyncBoltContext) -> HandlerDeps:
    deps = context[DEPS]
    assert isinstance(deps, HandlerDeps)
    return deps


def actor_of(context: AsyncBoltContext) -> Actor:
    actor = context[ACTOR]
    assert isinstance(actor, Actor)
    return actor


class Caller(AsyncMiddleware):
    """Puts the dependencies and the caller (with their roles, read now) into context."""

    def __init__(self, deps: HandlerDeps) -> None:
        self.deps = deps

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        req.context[DEPS] = self.deps
        user = req.context.user_id
        req.context[ACTOR] = await self.deps.actor(user) if user else Actor("", frozenset())
        return await next()
