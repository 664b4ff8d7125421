"""`python -m bot worker`: a job worker of the PostgreSQL mode, on this machine.

Any number of them, on any number of machines, share one database: procrastinate
hands each job to one worker (`bot.jobs.queue`). `--concurrency` is how many jobs one
worker process runs at once (they share one core: rendering is Python), `--processes`
how many worker processes to start (one per core sends fastest).

A worker lowers its CPU priority (`nice`) so that a `serve` on the same machine answers
Slack first. SIGTERM or Ctrl-C stop it after each job's batch in flight, recorded.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal

from bot.bootstrap import bootstrap, lower_priority
from bot.config import Settings, SettingsError
from bot.jobs.queue import run_worker

log = logging.getLogger(__name__)


def require_postgres(settings: Settings) -> None:
    if not settings.database_url.startswith("postgresql"):
        raise SettingsError(
            "workers need PostgreSQL (DATABASE_URL=postgresql://…); with SQLite, "
            "`make run` sends by itself, in one process"
        )


def worker_main(settings: Settings, concurrency: int, name: str) -> None:
    """One worker process, until SIGTERM or SIGINT."""
    lower_priority()
    root = bootstrap(settings, migrate=False)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await run_worker(root, concurrency=concurrency, stopping=stopping, name=name)

    try:
        asyncio.run(run())
    finally:
        root.close()


def run_workers(settings: Settings, concurrency: int, processes: int) -> None:
    """`worker`: this process is the first worker; `processes - 1` more are spawned."""
    require_postgres(settings)
    bootstrap(settings).close()  # migrated once, before any worker starts
    context = multiprocessing.get_context("spawn")
    others = [
        context.Process(
            target=worker_main,
            args=(settings, concurrency, f"worker-{os.getpid()}-{n}"),
            name=f"greenlight-worker-{n}",
        )
        for n in range(1, processes)
    ]
    for process in others:
        process.start()
    try:
        worker_main(settings, concurrency, f"worker-{os.getpid()}-0")
    finally:
        for process in others:
            if process.is_alive():
                process.terminate()  # SIGTERM: each stops after its batch
        for process in others:
            process.join(60)
