"""The composition root: builds every dependency once and hands them on as `Services`.

Nothing here runs at import time; the CLI, the server and the tests each call
`bootstrap()` with the settings and clock they want.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def bootstrap(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    migrate: bool = True,
    engine: Engine | None = None,
) -> Services:
    settings = settings or get_settings()
    engine = engine or make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        clock=clock or SystemClock(),
    )
