"""The scheduler: one APScheduler instance per `serve`/`socket` process, that only ticks.

What is due lives in the database (`bot.jobs.due_work.run_due` decides); a job
here just wakes the process's sender, which runs `run_due` on its own: a child
process under `serve` and `socket` (`SendProcess`), a thread in tests (`SendRunner`).
So `python -m bot jobs run-due --at ISO` runs exactly what a tick at that instant
runs, any number of processes can tick over one database (every step claims its
work atomically), and a tick missed while the process was busy or down is nothing
to replay: the next one finds the same work due.

A BackgroundScheduler (its own thread) rather than an AsyncIOScheduler: the jobs are
a few microseconds of `kick()`, but a scheduler on the HTTP loop would share it with
Slack's 3-second acknowledgements for no gain, and the sending itself already has
its own process (or thread) and loop.

Jobs are module-level functions taking only a name, so they would survive a
persistent job store unchanged; every job has a fixed id, `coalesce=True` (a backlog
of missed ticks runs once), `max_instances=1` and `replace_existing=True`.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

DUE_WORK_JOB = "greenlight.due-work"


class Kickable(Protocol):
    def kick(self) -> None: ...


# Name -> the runner a job wakes. Registered by `Jobs.start`, so job arguments stay
# plain strings.
_RUNNERS: dict[str, Kickable] = {}


def tick_due_work(name: str) -> None:
    """The due-work job: wake the runner, which runs `run_due` at the current instant."""
    runner = _RUNNERS.get(name)
    if runner is None:
        log.warning("due-work tick for %r, which is not running", name)
        return
    runner.kick()


def due_work_trigger(seconds: float) -> BaseTrigger:
    """Every `seconds`, aligned on the minute when it divides one.

    Cron occurrences fall on whole minutes: an aligned tick runs them at :00, not up
    to a tick later.
    """
    whole = int(seconds)
    if whole == seconds and 0 < whole <= 60 and 60 % whole == 0:
        return CronTrigger(second=f"*/{whole}", timezone=UTC)
    return IntervalTrigger(seconds=seconds, timezone=UTC)


class Jobs:
    """The process's scheduler and its jobs."""

    def __init__(self, runner: Kickable, tick_seconds: float = 15.0, name: str = "main") -> None:
        self.runner = runner
        self.tick_seconds = tick_seconds
        self.name = name
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )
        self.add_jobs()

    def add_jobs(self) -> None:
        self.scheduler.add_job(
            tick_due_work,
            trigger=due_work_trigger(self.tick_seconds),
            args=[self.name],
            id=DUE_WORK_JOB,
            name="run the due work (sends, occurrences, approvals, retries, expiry)",
            coalesce=True,
            max_instances=1,
            replace_existing=True,
        )

    def start(self) -> None:
        _RUNNERS[self.name] = self.runner
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if _RUNNERS.get(self.name) is self.runner:
            del _RUNNERS[self.name]
