"""The composition root: builds every dependency once and hands it to the entry points.

Nothing here runs at import time; the CLI, the server, the sender process and the
tests each call `bootstrap()` with the settings and clock they want. Only the entry
points import this module: everything below them receives what it needs.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine

from bot.clock import Clock, SystemClock
from bot.config import Settings, get_settings
from bot.context import Context
from bot.store.db import make_engine, make_session_factory, upgrade


@dataclass
class Root:
    """What one process built: the context its use cases run in, and the engine it owns."""

    context: Context
    engine: Engine

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def close(self) -> None:
        self.engine.dispose()


log = logging.getLogger(__name__)

SECRET_FILE = Path("data") / "tracking_secret"


def with_tracking_secret(settings: Settings, path: Path = SECRET_FILE) -> Settings:
    """A first run needs no setup: without TRACKING_SECRET, one is made once and kept.

    Every process started in the same folder reads the same file, so links signed by
    the sender still verify in the HTTP server. Set TRACKING_SECRET in production.
    """
    if settings.tracking_secret is not None:
        return settings
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        log.warning("TRACKING_SECRET is not set: generated one in %s", path)
    secret = path.read_text().strip()
    return settings.model_copy(update={"tracking_secret": SecretStr(secret)})


def bootstrap(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    migrate: bool = True,
    engine: Engine | None = None,
) -> Root:
    settings = with_tracking_secret(settings or get_settings())
    engine = engine or make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    context = Context(
        settings=settings, sessions=make_session_factory(engine), clock=clock or SystemClock()
    )
    return Root(context=context, engine=engine)
