"""Shared fixtures: a fresh, migrated database per test on SQLite and on PostgreSQL.

PostgreSQL runs when GREENLIGHT_TEST_POSTGRES_URL points at a database the tests may
empty (`.ci/run` starts one and sets it). Without it the PostgreSQL half is skipped
with that reason, except under CI, where a missing database is an error.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mock_slack import MockSlack
from scenario import settings_for
from smtp_relay import Relay
from sqlalchemy import Engine, text

from bot.bootstrap import Root, bootstrap
from bot.clock import FixedClock
from bot.config import Settings
from bot.context import Context
from bot.store.db import make_engine, upgrade
from bot.store.models import Base

PG_ENV = "GREENLIGHT_TEST_POSTGRES_URL"
SHARED = Path(__file__).resolve().parents[2] / "shared"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once; each test copies the file instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "greenlight.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: CI must run the store tests on PostgreSQL")
        pytest.skip(f"{PG_ENV} is not set; PostgreSQL tests need a database to empty")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(engine)
    yield engine
    engine.dispose()


def _truncate(engine: Engine) -> None:
    jobs = ["procrastinate_jobs", "procrastinate_periodic_defers", "procrastinate_workers"]
    names = ", ".join([t.name for t in Base.metadata.sorted_tables] + jobs)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a test: never the developer's real environment or `.env`."""
    return settings_for(tmp_path)


@pytest.fixture
def root(
    backend: str,
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path: Path,
    clock: FixedClock,
    sqlite_template: Path,
) -> Iterator[Root]:
    """The composition root over an empty, migrated database of the test's backend."""
    if backend == "postgresql":
        engine = request.getfixturevalue("postgres_engine")
        _truncate(engine)
        yield bootstrap(settings, clock, migrate=False, engine=engine)
        return
    shutil.copy(sqlite_template, tmp_path / "greenlight.db")
    built = bootstrap(settings, clock, migrate=False)
    yield built
    built.close()


@pytest.fixture
def ctx(root: Root) -> Context:
    """What use cases run in: the settings, sessions and (fixed) clock of `root`."""
    return root.context


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A real SMTP server (aiosmtpd) on loopback, answering as `tests/smtp_relay.py` says."""
    server = Relay()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mock_slack() -> Iterator[MockSlack]:
    """A local stand-in for Slack's Web API and response URLs (`tests/mock_slack.py`)."""
    server = MockSlack()
    server.start()
    yield server
    server.stop()
