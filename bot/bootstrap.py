"""The composition root: builds every dependency once and hands them on as `Services`.

Nothing here runs at import time; the CLI, the server and the tests each call
`bootstrap()` with the settings and clock they want.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock, SystemClock
from bot.config import Settings, get_settings
from bot.store.db import make_engine, make_session_factory, upgrade


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock

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
) -> Services:
    settings = with_tracking_secret(settings or get_settings())
    engine = engine or make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        clock=clock or SystemClock(),
    )
