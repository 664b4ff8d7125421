"""When the playground runs, and the server it runs in.

It runs when Slack is not connected at all (no bot token, app token or signing
secret) and PLAYGROUND is not turned off. Then the server is built as for HTTP mode,
with three settings of its own, made at start and never written anywhere:

- a bot token, which the playground's Web API takes and nothing else has;
- a signing secret, with which the page's requests are signed: `/slack/events`
  verifies them as it verifies Slack's, and nothing without the secret can act;
- `SLACK_API_URL` pointing at the playground's Web API on the server's own port;

and KPI_CHANNEL set to the playground's `#kpi` when it is not set, so that the hourly
digest has somewhere to go. The sender runs in a thread of the server (not a child
process), so that it reads the playground's clock, which a person can move ahead; each
of its rounds holds the database's send lock, as the sender process does.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bot.bootstrap import Root, Server, bootstrap, build_server
from bot.clock import ShiftedClock
from bot.config import Settings
from bot.domain.roles import Actor, Role
from bot.entrypoints.playground.acting import Actor as Poster
from bot.entrypoints.playground.outbox import Outbox
from bot.entrypoints.playground.routes import Playground
from bot.entrypoints.playground.slack_api import WebApi
from bot.entrypoints.playground.workspace import BOT, DEMO_USERS, Workspace
from bot.jobs.runner import SendRunner
from bot.services.roles import grant

log = logging.getLogger(__name__)

KPI_CHANNEL = "C0PGKPI"
BOT_USER = "U0PGBOT"
SEEDER = Actor("playground", frozenset(Role))


def wanted(settings: Settings) -> bool:
    return settings.playground and not (
        settings.slack_bot_token or settings.slack_app_token or settings.slack_signing_secret
    )


@dataclass(frozen=True)
class Keys:
    token: str
    secret: str
    base: str  # the server's own address, for the bot's client and the response URLs


def playground_settings(settings: Settings) -> tuple[Settings, Keys]:
    host = "[::1]" if settings.host == "::1" else "127.0.0.1"
    keys = Keys(
        token="xoxb-playground-" + secrets.token_urlsafe(24),
        secret=secrets.token_urlsafe(32),
        base=f"http://{host}:{settings.port}",
    )
    changed = settings.model_copy(
        update={
            "slack_bot_token": SecretStr(keys.token),
            "slack_signing_secret": SecretStr(keys.secret),
            "slack_api_url": f"{keys.base}/playground/api/",
            "kpi_channel": settings.kpi_channel or KPI_CHANNEL,
        }
    )
    return changed, keys


def seed_demo_roles(root: Root) -> None:
    """The playground's people get their roles once (granting again changes nothing)."""
    for user in DEMO_USERS:
        for role in user.roles:
            grant(root.context, SEEDER, user.id, role.value)


def playground_server(root: Root, tick: float = 15.0) -> tuple[Server, Playground]:
    """The server of `serve` with the playground in it (see the module's docstring)."""
    settings, keys = playground_settings(root.settings)
    clock = ShiftedClock()
    played = bootstrap(settings, clock, migrate=False, engine=root.engine)
    seed_demo_roles(played)
    server = build_server(played, tick=tick, sender_process=False, sender_locked=True)
    runner = server.runner
    assert isinstance(runner, SendRunner)
    names = {u.id: u.name for u in DEMO_USERS}
    names.update({BOT_USER: BOT, str(settings.kpi_channel): "kpi"})
    workspace = Workspace(Path("data"), names)
    api = WebApi(workspace, keys.token, keys.base, BOT_USER)
    target = settings.mail_target
    playground = Playground(
        ctx=played.context,
        clock=clock,
        workspace=workspace,
        api=api,
        actor=Poster(f"{keys.base}/slack/events", keys.secret, api.responses),
        outbox=Outbox(target.path if target.scheme == "maildir" else None),
        kick=runner.kick,
        wait_round=runner.wait_round,
        rounds=lambda: runner.rounds,
        kpi_channel=str(settings.kpi_channel),
    )
    return server, playground
