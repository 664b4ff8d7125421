"""The PostgreSQL mode: the due work and the sending as procrastinate jobs, on any number
of workers over one database.

procrastinate keeps the jobs in PostgreSQL (no broker), hands each to one worker, has
every worker heartbeat, and runs periodic tasks once for the whole fleet. On top of it:

* **due work** (`greenlight:due_work`): every `DUE_WORK_SECONDS` (a periodic task) and
  whenever someone confirms or resumes a send (`JobQueue.kick`). One at a time for the
  fleet (`lock`), at most one waiting (`queueing_lock`). It runs `run_due` with the
  sending step replaced by deferring jobs (`defer_sends`);
* **sending** (`greenlight:send`): one job per execution and *slot*, `SEND_PARALLELISM`
  slots, so that many workers send one execution at once, each its own batches. A job
  runs the sender under a `FencedClaim` named after its attempt (`j{job}.{attempt}`);
* **retries** (`greenlight:retry`): the soft bounces of one execution whose time has come;
* **recovery** (`greenlight:recover`, periodic): jobs whose worker has not heartbeat for
  `STALL_TIMEOUT_SECONDS` are run again (a new attempt, so a new token), and the claims of
  the stalled attempt are released. A live worker's claim is never taken, however long
  its batch takes (a rate-limited relay); a stalled one that wakes up finds its attempt
  superseded at its next fence and stops (`bot.engine.claims`).

Workers get what the tasks need (`WorkerDeps`: the context, a transport factory, the
Slack port) through procrastinate's job context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from procrastinate import App, Blueprint, JobContext, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued, ProcrastinateException
from procrastinate.jobs import Status

from bot.config import Settings
from bot.context import Context
from bot.engine.claims import FencedClaim, fence_window
from bot.engine.sender import Sender
from bot.engine.transports import Transport
from bot.jobs.due_work import run_due
from bot.services.deliveries import guard
from bot.services.deliveries.sending import SendReport, what_to_send
from bot.services.messages.deployment import DeploymentFollower
from bot.services.notifications import Notifications
from bot.store.jobs import attempt_is_live, release_attempt
from bot.store.send_lock import SendLockBusy

log = logging.getLogger(__name__)

DUE_WORK_SECONDS = 15
RECOVER_SECONDS = 10
DUE_WORK = "greenlight:due_work"
SEND = "greenlight:send"
RETRY = "greenlight:retry"
RECOVER = "greenlight:recover"
# Two queues, each with its own worker in every process, so that the due work and the
# recovery always find a free slot however long the sends run (a recovery that waited
# for a send slot would wait for the very sends it is to take over).
SEND_QUEUE = "greenlight-send"
CONTROL_QUEUE = "greenlight-control"


class WorkerDeps(Protocol):
    """What a worker's jobs run with (the composition root builds it)."""

    @property
    def context(self) -> Context: ...

    def transport(self) -> Transport: ...

    def notifications(self) -> Notifications: ...

    def send_lock(self, *, wait: bool) -> AbstractContextManager[None]: ...


@dataclass
class _Running:
    """A worker process's shared state, handed to every job in its context."""

    deps: WorkerDeps
    follower: DeploymentFollower
    stopping: asyncio.Event


def _running(context: JobContext) -> _Running:
    running = context.additional_context["greenlight"]
    assert isinstance(running, _Running)
    return running


def heartbeat_interval(settings: Settings) -> float:
    """A third of the stall timeout: two heartbeats may be lost before a takeover."""
    return settings.stall_timeout_seconds / 3


def token_of(job_id: int, attempts: int) -> str:
    return f"j{job_id}.{attempts}"


jobs = Blueprint()


@jobs.periodic(cron=f"* * * * * */{DUE_WORK_SECONDS}", periodic_id="tick")
@jobs.task(name="due_work_tick", pass_context=True, lock="greenlight:due-work", queue=CONTROL_QUEUE)
async def due_work_tick(context: JobContext, timestamp: int) -> None:
    await _due_work(context)


@jobs.task(
    name="due_work",
    queue=CONTROL_QUEUE,
    pass_context=True,
    lock="greenlight:due-work",
    queueing_lock="greenlight:due-work",
)
async def due_work(context: JobContext) -> None:
    await _due_work(context)


async def _due_work(context: JobContext) -> None:
    running = _running(context)
    ctx = running.deps.context

    async def sending() -> SendReport:
        return await defer_sends(context.app, ctx)

    report = await run_due(
        ctx,
        transports=running.deps.transport,
        notifications=running.deps.notifications(),
        sending=sending,
    )
    if report.failures:
        log.warning("due work: %d steps failed: %s", len(report.failures), report.failures)


async def defer_sends(app: App, ctx: Context) -> SendReport:
    """The sending step of the PostgreSQL mode: a job per execution and slot, and one per
    execution with retries due; those already waiting are not deferred twice."""
    work = await asyncio.to_thread(what_to_send, ctx)
    report = SendReport()
    slots = ctx.settings.send_parallelism
    for execution_id, name in work.sending:
        for slot in range(slots):
            lock = f"greenlight:send:{execution_id}:{slot}"
            await _defer(app, SEND, lock, execution_id=execution_id, slot=slot)
        report.deferred.append(name)
    for execution_id in work.retrying:
        lock = f"greenlight:retry:{execution_id}"
        await _defer(app, RETRY, lock, execution_id=execution_id)
    return report


async def _defer(app: App, task: str, lock: str, **kwargs: Any) -> None:
    with contextlib.suppress(AlreadyEnqueued):  # one waits already: it will do this work
        await app.configure_task(task, lock=lock, queueing_lock=lock).defer_async(**kwargs)


def _claim_for(context: JobContext, ctx: Context) -> FencedClaim:
    job = context.job
    assert job.id is not None
    job_id, attempts = job.id, job.attempts
    window = fence_window(ctx.settings.stall_timeout_seconds, heartbeat_interval(ctx.settings))

    def live() -> bool:
        with ctx.sessions() as s:
            return attempt_is_live(s, job_id, attempts)

    return FencedClaim(token_of(job_id, attempts), window, live)


@jobs.task(name="send", pass_context=True, queue=SEND_QUEUE)
async def send(context: JobContext, execution_id: int, slot: int) -> None:
    running = _running(context)
    ctx = running.deps.context
    claim = _claim_for(context, ctx)
    transport = running.deps.transport()
    try:
        sender = Sender(
            ctx,
            transport,
            claim=claim,
            on_batch=lambda eid: _refresh(running, eid),
            should_stop=running.stopping.is_set,
            guard=lambda eid: guard.check(ctx, eid),
        )
        state = await sender.run(execution_id)
        log.info("execution %d, slot %d: %s", execution_id, slot, state.value)
    finally:
        await transport.close()
        await asyncio.to_thread(_release_own, ctx, claim.token)


@jobs.task(name="retry", pass_context=True, queue=SEND_QUEUE)
async def retry(context: JobContext, execution_id: int) -> None:
    running = _running(context)
    ctx = running.deps.context
    claim = _claim_for(context, ctx)
    transport = running.deps.transport()
    try:
        tried = await Sender(ctx, transport, claim=claim).retry(execution_id)
        log.info("execution %d: %d soft bounces sent again", execution_id, tried)
    finally:
        await transport.close()
        await asyncio.to_thread(_release_own, ctx, claim.token)


def _release_own(ctx: Context, token: str) -> int:
    """Whatever the job still claims when it ends (an error, a stop) is sent later."""
    with ctx.sessions.begin() as s:
        return release_attempt(s, token)


def _release_dead_inline_sender(deps: WorkerDeps) -> None:
    """A `jobs run-due` holds the send lock while it sends: free means none runs, and what
    one left claimed is released as the lock is taken (`store.send_lock`)."""
    with contextlib.suppress(SendLockBusy), deps.send_lock(wait=False):
        pass


def _refresh(running: _Running, execution_id: int) -> None:
    asyncio.get_running_loop().create_task(running.follower.refresh_execution(execution_id))


@jobs.periodic(cron=f"* * * * * */{RECOVER_SECONDS}", periodic_id="recover")
@jobs.task(name="recover", pass_context=True, lock="greenlight:recover", queue=CONTROL_QUEUE)
async def recover(context: JobContext, timestamp: int) -> None:
    """End the jobs of workers whose heartbeat stopped, free their claims, and have the
    due work defer fresh ones.

    A stalled job is failed, not retried: its worker may wake up and report it done,
    and that report must not land on another worker's attempt of the same job. A new
    job (a new id, so a new claim token) does the rest of the work.
    """
    ctx = _running(context).deps.context
    manager = context.app.job_manager
    await asyncio.to_thread(_release_dead_inline_sender, _running(context).deps)
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=ctx.settings.stall_timeout_seconds
    )
    ended = 0
    for job in stalled:
        assert job.id is not None
        try:
            # From now on the attempt is not live: its fence says no (engine.claims).
            await manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
        except ProcrastinateException:
            continue  # it ended meanwhile (its worker woke up): nothing to take over
        released = await asyncio.to_thread(_release_own, ctx, token_of(job.id, job.attempts))
        ended += 1
        log.warning(
            "job %d (%s) of a stalled worker ended; %d claims released for other workers",
            job.id,
            job.task_name,
            released,
        )
    if ended:
        with contextlib.suppress(AlreadyEnqueued):
            await context.app.configure_task(
                DUE_WORK, queueing_lock="greenlight:due-work"
            ).defer_async()


# ----------------------------------------------------------------------- the app


def conninfo(database_url: str) -> str:
    """DATABASE_URL as libpq reads it (SQLAlchemy's driver suffix removed)."""
    scheme, _, rest = database_url.partition("://")
    return f"{scheme.split('+', 1)[0]}://{rest}"


# procrastinate's model: one app per process, its tasks registered once; the app is
# pointed at the process's database when it is first needed (`make_app`).
APP = App(connector=PsycopgConnector())
APP.add_tasks_from(jobs, namespace="greenlight")
_BOUND: dict[str, str] = {}


def make_app(settings: Settings) -> App:
    """The process's app, its connector on DATABASE_URL (one database per process)."""
    if not settings.database_url.startswith("postgresql"):
        raise ValueError("the job engine needs PostgreSQL (DATABASE_URL=postgresql://…)")
    wanted = conninfo(settings.database_url)
    if _BOUND.get("conninfo") != wanted:
        connector = PsycopgConnector(conninfo=wanted)
        APP.connector = connector
        APP.job_manager.connector = connector
        _BOUND["conninfo"] = wanted
    return APP


class ServerQueue:
    """The server's side of the job engine when it runs no worker: it only defers.

    It stands where the server's runner would (`start`, `kick`, `stop`, `rounds`).
    """

    rounds = 0  # the workers run the rounds

    def __init__(self, settings: Settings) -> None:
        self.app = make_app(settings)
        self._opened = False

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 30.0) -> None:
        self.close()

    def kick(self) -> None:
        """Run the due work now rather than at the next tick (deferred, not waited for)."""
        try:
            if not self._opened:
                self.app.open()
                self._opened = True
            with contextlib.suppress(AlreadyEnqueued):
                self.app.configure_task(DUE_WORK, queueing_lock="greenlight:due-work").defer()
        except Exception:
            log.exception("could not ask the workers to run the due work now")

    def close(self) -> None:
        if self._opened:
            self.app.close()
            self._opened = False


async def run_worker(
    deps: WorkerDeps,
    *,
    concurrency: int,
    stopping: asyncio.Event,
    kicks: asyncio.Queue[None] | None = None,
    name: str = "greenlight",
    wait: bool = True,
) -> None:
    """One worker, until `stopping` is set (then each job ends after its batch).

    `kicks`: each item defers a due-work job (the server's confirm or resume).

    When procrastinate's worker stops on an error (the database gone for a while, or
    its row pruned by another worker while this one was stalled, so that every fetch
    fails), it starts again, registered anew, after a back-off: a worker process that
    lives works, and what its jobs held was taken over meanwhile.
    """
    running = _Running(deps, DeploymentFollower(deps.context, deps.notifications()), stopping)
    failures = 0
    while not stopping.is_set():
        try:
            await _run_workers(deps, running, concurrency, stopping, kicks, name, wait)
            return
        except Exception:
            delay = min(RESTART_MAX_SECONDS, 2.0**failures)
            failures += 1
            log.exception("the worker stopped on an error; it starts again in %.0f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)


RESTART_MAX_SECONDS = 30.0


async def _run_workers(
    deps: WorkerDeps,
    running: _Running,
    concurrency: int,
    stopping: asyncio.Event,
    kicks: asyncio.Queue[None] | None,
    name: str,
    wait: bool,
) -> None:
    settings = deps.context.settings
    app = make_app(settings)
    async with app.open_async():

        def worker(queue: str, slots: int) -> asyncio.Future[None]:
            return asyncio.ensure_future(
                app.run_worker_async(
                    queues=[queue],
                    concurrency=slots,
                    name=f"{name}-{queue.removeprefix('greenlight-')}",
                    wait=wait,
                    install_signal_handlers=False,
                    update_heartbeat_interval=heartbeat_interval(settings),
                    stalled_worker_timeout=settings.stall_timeout_seconds,
                    additional_context={"greenlight": running},
                    delete_jobs="successful",
                    listen_notify=True,
                )
            )

        workers = {worker(SEND_QUEUE, concurrency), worker(CONTROL_QUEUE, 1)}
        forwarding = asyncio.ensure_future(_forward(app, kicks)) if kicks else None
        stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        everything: set[asyncio.Future[Any]] = {*workers, stop}
        await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        for task in workers:
            if not task.done():
                task.cancel()  # procrastinate stops fetching and lets running jobs end
        errors: list[BaseException] = []
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception as exc:
                    errors.append(exc)
        stop.cancel()
        if forwarding is not None:
            forwarding.cancel()
        if errors and not stopping.is_set():
            raise errors[0]


async def _forward(app: App, kicks: asyncio.Queue[None]) -> None:
    while True:
        await kicks.get()
        with contextlib.suppress(AlreadyEnqueued):
            await app.configure_task(DUE_WORK, queueing_lock="greenlight:due-work").defer_async()
