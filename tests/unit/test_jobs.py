"""The scheduler only ticks: one job, fixed id, coalesced, one instance, waking the runner."""

from __future__ import annotations

import threading

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.jobs.scheduler import DUE_WORK_JOB, Jobs, due_work_trigger, tick_due_work


class Runner:
    def __init__(self) -> None:
        self.kicks = 0
        self.kicked = threading.Event()

    def kick(self) -> None:
        self.kicks += 1
        self.kicked.set()


def test_the_due_work_job_is_coalesced_single_and_has_a_fixed_id() -> None:
    jobs = Jobs(Runner(), tick_seconds=15)
    jobs.scheduler.start(paused=True)
    try:
        jobs.add_jobs()  # registering again replaces, never duplicates
        [job] = jobs.scheduler.get_jobs()
    finally:
        jobs.scheduler.shutdown(wait=False)
    assert (job.id, job.coalesce, job.max_instances) == (DUE_WORK_JOB, True, 1)
    assert job.func is tick_due_work and job.args == ("main",)


def test_ticks_fall_on_the_minute_when_they_can() -> None:
    assert isinstance(due_work_trigger(15), CronTrigger)
    assert "second='*/15'" in str(due_work_trigger(15))
    assert isinstance(due_work_trigger(3600), IntervalTrigger)
    assert isinstance(due_work_trigger(7), IntervalTrigger)
    assert isinstance(due_work_trigger(0.5), IntervalTrigger)


def test_a_started_scheduler_wakes_its_runner_and_stops_cleanly() -> None:
    runner = Runner()
    jobs = Jobs(runner, tick_seconds=0.05, name="test-wakes")
    jobs.start()
    try:
        assert runner.kicked.wait(10), "the scheduler never ticked"
    finally:
        jobs.shutdown()
    assert not jobs.scheduler.running
    kicks = runner.kicks
    tick_due_work("test-wakes")  # a late tick after shutdown wakes nobody
    assert runner.kicks == kicks
