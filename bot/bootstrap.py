"""The composition root: builds every dependency once and hands it to the entry points.

Nothing here runs at import time; the CLI, the server, the sender process and the
tests each call `bootstrap()` with the settings and clock they want, then ask the
`Root` for what they run: the transports, the Notifications (Slack, or nothing when
Slack is not connected), one round of the due work, or a whole `Server` (the Bolt
app with its listeners, the Deployment follower, the sender, the scheduler). Only
the entry points import this module: everything below them receives what it needs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Engine

from bot.clock import Clock, SystemClock
from bot.config import Settings, get_settings
from bot.context import Context
from bot.domain.roles import Actor
from bot.engine.rate_limit import SharedBucket
from bot.engine.transports import Transport, make_transport
from bot.feedback.certificates import SnsCertificates
from bot.handlers.deps import HandlerDeps
from bot.handlers.registry import register
from bot.jobs.due_work import DueReport, run_due
from bot.jobs.process import KICK, STOP, Orders, SendProcess, serve_orders
from bot.jobs.queue import ServerQueue, run_worker
from bot.jobs.runner import SendRunner
from bot.jobs.scheduler import Jobs
from bot.notify.slack import SlackNotifications
from bot.notify.slack_client import UsergroupDirectory, make_client
from bot.services.messages.deployment import DeploymentFollower
from bot.services.messages.home import HomeFollower
from bot.services.notifications import Counted, Notifications, Unconnected
from bot.store.db import make_engine, make_session_factory, upgrade
from bot.store.send_lock import send_lock as store_send_lock

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


@dataclass
class Root:
    """What one process built: the context its use cases run in, and what it owns."""

    context: Context
    engine: Engine

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @cached_property
    def slack_client(self) -> AsyncWebClient:
        """The Web API client (a token or not: without one it is never called)."""
        return make_client(self.settings)

    @property
    def job_engine(self) -> bool:
        """The PostgreSQL mode: the due work and the sending are jobs (`bot.jobs.queue`)."""
        return self.engine.dialect.name == "postgresql"

    @property
    def slack_connected(self) -> bool:
        return self.settings.slack_bot_token is not None

    def notifications(self) -> Notifications:
        if self.slack_connected:
            return Counted(self.context, SlackNotifications(self.slack_client))
        return Unconnected()

    def transport(self) -> Transport:
        """A new transport to MAIL_URL, for one round of sending (or one job). On
        PostgreSQL, SEND_RATE_LIMIT is the fleet's: every worker draws from one bucket."""
        rate = self.settings.send_rate_limit
        if self.job_engine and rate > 0:
            return make_transport(self.settings, SharedBucket(self.context, rate))
        return make_transport(self.settings)

    def due_work(
        self,
        notifications: Notifications,
        on_batch: Callable[[int], None] | None = None,
        *,
        locked: bool = False,
    ) -> Callable[[Callable[[], bool]], Any]:
        """One round of the due work, as the runners call it (with "stop now?").

        `locked`: each round holds the database's send lock (`send_lock`), as the
        sender process holds it for its life: a sender in a thread of `serve` (the
        playground's) then never sends beside a `jobs run-due` of the same database.
        """

        async def round_(should_stop: Callable[[], bool]) -> DueReport:
            return await run_due(
                self.context,
                transports=self.transport,
                notifications=notifications,
                on_batch=on_batch,
                should_stop=should_stop,
            )

        async def locked_round(should_stop: Callable[[], bool]) -> DueReport:
            with self.send_lock(wait=True):
                return await round_(should_stop)

        return locked_round if locked else round_

    @contextmanager
    def send_lock(self, *, wait: bool) -> Iterator[None]:
        """Be the one process sending from this database (`store.send_lock`); what an
        earlier holder left claimed is released as the lock is taken."""

        def waiting() -> None:
            log.info("another process sends from this database; waiting for it to stop")

        with store_send_lock(self.engine, wait=wait, waiting=waiting) as released:
            if released:
                log.warning("released %d claims left by a sender that stopped", released)
            yield

    def close(self) -> None:
        self.engine.dispose()


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


# --- the server --------------------------------------------------------------------------


class BatchHook:
    """The sender's "a batch was recorded" hook, handed to the HTTP loop (never blocking).

    The sender runs in another thread or process; the Deployment message is updated on
    the server's loop, once `bind` has told which loop that is.
    """

    def __init__(self, follower: DeploymentFollower, home: HomeFollower | None = None) -> None:
        self.follower = follower
        self.home = home
        self.loop: Any = None

    def bind(self, loop: Any) -> None:
        self.loop = loop

    def __call__(self, execution_id: int) -> None:
        import asyncio

        if self.loop is None or not self.loop.is_running():
            return  # the server is stopping: the next start's message shows the figures
        asyncio.run_coroutine_threadsafe(self.follower.refresh_execution(execution_id), self.loop)
        if self.home is not None:
            self.home.changed_threadsafe(self.loop)


@dataclass
class Server:
    """Everything `serve` and `socket` run, built once from the Root."""

    root: Root
    slack: AsyncApp | None
    follower: DeploymentFollower
    batches: BatchHook
    runner: SendRunner | SendProcess | ServerQueue
    jobs: Jobs
    start_sender: bool = True
    metrics: dict[str, int] = field(default_factory=dict)
    certificates: SnsCertificates = field(default_factory=SnsCertificates)
    home: HomeFollower | None = None  # the App Home tabs (Slack connected)

    @property
    def ctx(self) -> Context:
        return self.root.context


def build_slack_app(root: Root, deps: HandlerDeps) -> AsyncApp | None:
    """The Bolt app with every listener, or None when Slack is not connected."""
    settings = root.settings
    if settings.slack_bot_token is None:
        return None
    secret = settings.slack_signing_secret
    # In HTTP mode the route verifies every request first (`entrypoints.slack_http`) and
    # Bolt checks again; in Socket Mode requests come over the app token's socket.
    app = AsyncApp(
        client=root.slack_client,
        signing_secret=secret.get_secret_value() if secret else None,
        request_verification_enabled=secret is not None,
        process_before_response=False,
        name="greenlight",
    )
    register(app, deps)
    return app


def build_server(
    root: Root,
    *,
    start_sender: bool = True,
    tick: float = 15.0,
    sender_process: bool = False,
    sender_locked: bool = False,
) -> Server:
    """`sender_process`: relay from a child process (`serve`, `socket`), not a thread.

    Tests keep the thread, whose sender sees their injected clock; the playground keeps
    it too (its clock moves ahead), with `sender_locked`: each round holds the send lock.
    """
    notifications = root.notifications()
    follower = DeploymentFollower(root.context, notifications)
    deps: HandlerDeps | None = None

    async def actor_of(user: str) -> Actor:
        assert deps is not None
        return await deps.actor(user)

    home = HomeFollower(root.context, notifications, actor_of) if root.slack_connected else None
    batches = BatchHook(follower, home)
    # The scheduler ticks the runner; the runner itself only waits for kicks.
    runner: SendRunner | SendProcess | ServerQueue
    if root.job_engine and sender_process:
        # PostgreSQL: the work is jobs; the server runs a worker in its group, or none
        # (workers of their own), and only asks for the due work when someone acts.
        if root.settings.worker_in_server:
            runner = SendProcess(root.settings, worker_child, tick_seconds=None)
        else:
            runner = ServerQueue(root.settings)
    elif sender_process:
        runner = SendProcess(root.settings, sender_child, on_batch=batches, tick_seconds=None)
    else:
        work = root.due_work(notifications, on_batch=batches, locked=sender_locked)
        runner = SendRunner(work, tick_seconds=None)
    jobs = Jobs(runner, tick_seconds=tick)
    groups = UsergroupDirectory(root.slack_client) if root.slack_connected else None
    deps = HandlerDeps(
        root.context,
        runner.kick,
        follower,
        notifications,
        groups,
        home=home,
        transports=root.transport,
    )
    slack = build_slack_app(root, deps)
    return Server(
        root, slack, follower, batches, runner, jobs, start_sender=start_sender, home=home
    )


def sender_child(settings: Settings, conn: Connection, tick_seconds: float | None) -> None:
    """The sender process: due work on every kick or tick until told to stop.

    Ctrl-C and SIGTERM reach the whole process group (systemd's stop sends SIGTERM to
    every process of the unit). The child ignores Ctrl-C and takes SIGTERM as the
    server's stop: it ends after the batch in flight, recorded, either way; the server,
    shutting down, tells it the same (and ends it past the grace period).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_asked = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop_asked.set())
    logging.basicConfig(
        level=settings.log_level, format="%(levelname)s %(name)s [sender]: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = bootstrap(settings, migrate=False)  # the server migrated before starting us
    if root.slack_connected and settings.kpi_channel:
        from bot.notify.charts import load

        threading.Thread(target=load, name="chart-import", daemon=True).start()
    orders = Orders(conn)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: orders.stop())
    if stop_asked.is_set():
        orders.stop()
    try:
        with root.send_lock(wait=True):
            serve_orders(orders, root.due_work(root.notifications(), orders.batch), tick_seconds)
    finally:
        root.close()


# --- the PostgreSQL mode's worker in serve's process group --------------------------

NICENESS = 5  # workers below `serve`, which answers people


def lower_priority() -> None:
    try:
        os.nice(NICENESS)
    except OSError:
        log.debug("could not lower this worker's priority", exc_info=True)


def worker_child(settings: Settings, conn: Connection, tick_seconds: float | None) -> None:
    """The worker `serve` runs in its process group when WORKER_IN_SERVER (PostgreSQL).

    The server's pipe carries kicks (confirm, resume: run the due work now) and the
    stop; procrastinate's periodic due work replaces the server's tick.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=settings.log_level, format="%(levelname)s %(name)s [worker]: %(message)s"
    )
    lower_priority()
    root = bootstrap(settings, migrate=False)

    async def run() -> None:
        stopping = asyncio.Event()
        kicks: asyncio.Queue[None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        threading.Thread(
            target=_listen, args=(conn, loop, stopping, kicks), name="worker-orders", daemon=True
        ).start()
        await run_worker(
            root,
            concurrency=settings.worker_concurrency,
            stopping=stopping,
            kicks=kicks,
            name=f"serve-{os.getpid()}",
        )

    try:
        asyncio.run(run())
    finally:
        root.close()


def _listen(
    conn: Connection,
    loop: asyncio.AbstractEventLoop,
    stopping: asyncio.Event,
    kicks: asyncio.Queue[None],
) -> None:
    """The pipe from the server, read in a thread; the server gone means stop."""
    call: Callable[..., object] = loop.call_soon_threadsafe
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = STOP
        if message == STOP:
            call(stopping.set)
            return
        if message == KICK:
            call(kicks.put_nowait, None)
