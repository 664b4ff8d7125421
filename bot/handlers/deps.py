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
from typing import Any, ParamSpec, TypeVar

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.webhook import WebhookResponse

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.roles import Actor
from bot.engine.transports import Transport
from bot.notify.slack_client import UsergroupDirectory
from bot.services.messages.deployment import DeploymentFollower
from bot.services.messages.home import HomeFollower
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
    home: HomeFollower | None = None  # the App Home tabs, when Slack is connected
    # A new transport to MAIL_URL (`Root.transport`), for a proof; None: the settings'.
    transports: Callable[[], Transport] | None = None

    def changed(self) -> None:
        """Something the Home tabs show changed (a confirm, an approval, a pause)."""
        if self.home is not None:
            self.home.changed()

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


class HomeRespond(AsyncRespond):
    """`respond` for a click on the Home tab, which has no response URL to answer to.

    A listener answers the clicker the same way wherever the button was (`replies`);
    from the Home tab the answer is shown at the top of the clicker's tab, published
    again with it, instead of an ephemeral message under a message that is not there.
    """

    def __init__(self, home: HomeFollower, user: str) -> None:
        super().__init__(response_url=None)
        self.home = home
        self.user = user

    async def __call__(self, text: str | dict[str, Any] = "", *args: Any, **kwargs: Any) -> Any:
        said = text.get("text", "") if isinstance(text, dict) else text
        self.home.notice(self.user, str(said or kwargs.get("text") or ""))
        return WebhookResponse(url="", status_code=200, body="", headers={})


def _from_home(body: dict[str, Any]) -> bool:
    view = body.get("view")
    container = body.get("container")
    return (
        isinstance(view, dict)
        and view.get("type") == "home"
        and isinstance(container, dict)
        and container.get("type") == "view"
    )


class Caller(AsyncMiddleware):
    """Puts the dependencies and the caller (with their roles, read now) into context.

    A click on the Home tab gets a `HomeRespond`, so that listeners answer it as they
    answer a click anywhere else.
    """

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
        if self.deps.home is not None and user and _from_home(req.body):
            req.context["respond"] = HomeRespond(self.deps.home, user)
        return await next()
