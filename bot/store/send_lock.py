"""One sending process per database, in the modes without a job engine.

`serve`'s sender and `jobs run-due` send from the database they are given; two of them
at once would each take the other's unfinished claims for a dead process's. So each
holds the database's send lock while it sends, and releases, as it takes the lock,
every claim left behind: whoever made those claims held the lock, and has let go of it
(ended, or crashed: the operating system or the database server frees the lock of a
process that dies).

* SQLite: an exclusive `flock` on `<database>.send-lock` beside the database file.
* PostgreSQL: a session advisory lock, held by a connection of its own.

Only the claims of such senders are released (tokens `local.…`): the workers of the
PostgreSQL mode (`bot.jobs.queue`) claim under their job's token, fenced, and theirs are
taken over when a worker's heartbeat stops, never here. Their recovery job also takes
this lock, when it is free, to release what a `jobs run-due` that died left behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from bot.store import logs
from bot.store.db import make_session_factory

LOCK_KEY = 0x47_4C_53_4E_44  # "GLSND": the advisory lock's key
LOCAL = "local."  # the prefix of the claims such senders make (`engine.claims.LocalClaim`)
RETRY_SECONDS = 1.0


class SendLockBusy(Exception):
    """Another process sends from this database now."""


@contextmanager
def send_lock(
    engine: Engine,
    *,
    wait: bool,
    waiting: Callable[[], None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[int]:
    """Hold the send lock (waiting for it, or `SendLockBusy`); yield in how many
    executions a previous holder left claims, now released."""
    with _held(engine, wait, waiting, sleep):
        with make_session_factory(engine).begin() as s:
            released = len(logs.release_tokens(s, LOCAL))
        yield released


@contextmanager
def _held(
    engine: Engine, wait: bool, waiting: Callable[[], None], sleep: Callable[[float], None]
) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        with _file_lock(engine, wait, waiting, sleep):
            yield
        return
    with engine.connect() as conn:
        while not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}):
            if not wait:
                raise SendLockBusy("another Greenlight process is sending from this database")
            waiting()
            sleep(RETRY_SECONDS)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            conn.commit()


@contextmanager
def _file_lock(
    engine: Engine, wait: bool, waiting: Callable[[], None], sleep: Callable[[float], None]
) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # a private database: nobody else can send from it
        return
    path = Path(database).with_name(Path(database).name + ".send-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise SendLockBusy(
                        f"another Greenlight process is sending from {database}"
                    ) from None
                waiting()
                sleep(RETRY_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
