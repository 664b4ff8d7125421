"""Runs the due work in a child process: what `serve` and `socket` use.

Rendering and MIME assembly keep a core busy while a delivery is relayed. In a thread
of the server they hold the interpreter lock that the HTTP loop needs to answer Slack
within its 3 seconds, and the two slow each other down (docs/benchmarks.md, Slack
acknowledgements). In their own process the sender has its own interpreter and core,
and the server stays responsive whatever the size of the send.

The child builds its own Context from the same settings (the database is the only
thing the two share) and runs `run_due` on a tick and whenever the server kicks it.
It reports each recorded batch back through a pipe, so the server refreshes the
Deployment message as before; the protocol is three small tuples, nothing pickled
from the database.

`SendRunner` (a thread) remains for tests, where the sender must see the test's
injected clock; both have the same interface.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from bot.config import Settings

log = logging.getLogger(__name__)

KICK = ("kick",)
STOP = ("stop",)


def _child_main(settings: Settings, conn: Connection, tick_seconds: float | None) -> None:
    """The sender process: due work on every kick or tick until told to stop.

    Ctrl-C reaches the whole process group; the child ignores it and stops when the
    server, shutting down, tells it to (or ends it past the grace period).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=settings.log_level, format="%(levelname)s %(name)s [sender]: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from bot.bootstrap import bootstrap
    from bot.services.due_work import run_due
    from bot.slack_api import make_client

    root = bootstrap(settings, migrate=False)  # the server migrated before starting us
    ctx = root.context
    slack = make_client(settings) if settings.slack_bot_token is not None else None
    if slack is not None and settings.kpi_channel:
        from bot.charts import load

        threading.Thread(target=load, name="chart-import", daemon=True).start()

    def on_batch(execution_id: int) -> None:
        conn.send(("batch", execution_id))

    wake, stopping = threading.Event(), threading.Event()

    def listen() -> None:
        """Kicks and the stop arrive while a round runs: a stop ends it after its batch."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the server is gone: stop as if told to
                message = STOP
            if message == STOP:
                stopping.set()
            wake.set()
            if stopping.is_set():
                return

    threading.Thread(target=listen, name="sender-orders", daemon=True).start()
    while not stopping.is_set():
        wake.clear()  # kicks from now on mean one more round after this one
        try:
            report = asyncio.run(
                run_due(ctx, on_batch=on_batch, slack=slack, should_stop=stopping.is_set)
            )
            conn.send(("round", {"started": report.started, "sent": report.sent}))
        except Exception:
            log.exception("due work failed; trying again at the next tick")
            conn.send(("round", None))
        wake.wait(tick_seconds)
    root.close()


class SendProcess:
    """The due work in a child process, steered like `SendRunner`."""

    def __init__(
        self,
        settings: Settings,
        on_batch: Callable[[int], None] | None = None,
        tick_seconds: float | None = 15.0,
    ) -> None:
        """`tick_seconds` None: run only when kicked (the scheduler kicks on its tick)."""
        self.settings = settings
        self.on_batch = on_batch
        self.tick_seconds = tick_seconds
        self.rounds = 0
        self.last_report: Any = None
        self.on_round: Callable[[], None] = lambda: None  # after each round is reported
        self._send_lock = threading.Lock()  # kicks come from several threads
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        # spawn, not fork: the server has threads and open database connections.
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self._conn = ours
        self._process = context.Process(
            target=_child_main,
            args=(self.settings, theirs, self.tick_seconds),
            name="greenlight-sender",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        self._reader = threading.Thread(target=self._read, name="sender-reports", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._conn is not None
        while True:
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                return  # the child is gone
            if kind == "batch" and self.on_batch is not None:
                try:
                    self.on_batch(value)
                except Exception:
                    log.exception("refreshing the Deployment message failed")
            elif kind == "round":
                self.rounds += 1
                self.last_report = value
                self.on_round()

    def _send(self, message: tuple[str, ...]) -> None:
        if self._conn is None:
            return
        with self._send_lock:
            try:
                self._conn.send(message)
            except (BrokenPipeError, OSError):
                log.error("the sender process is gone; restart the server to resume sending")

    def kick(self) -> None:
        """Run the due work now rather than at the next tick."""
        self._send(KICK)

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the child to stop after the batch in flight; past `timeout`, end it.

        Ending it mid-round is what a crash is, and a crash is safe: the next start
        releases its claims and resumes, sending again at most the messages that were
        in flight (README, "Crash safety").
        """
        if self._process is None:
            return
        self._send(STOP)
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("the sender did not stop within %.0f s; ending it", timeout)
            self._process.terminate()
            self._process.join(10)
        if self._reader is not None:
            self._reader.join(5)  # it ends at the pipe's end, after the last report
        if self._conn is not None:
            self._conn.close()
