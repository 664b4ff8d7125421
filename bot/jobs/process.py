"""Runs the due work in a child process: what `serve` and `socket` use.

Rendering and MIME assembly keep a core busy while a delivery is relayed. In a thread
of the server they hold the interpreter lock that the HTTP loop needs to answer Slack
within its 3 seconds, and the two slow each other down (docs/benchmarks.md, Slack
acknowledgements). In their own process the sender has its own interpreter and core,
and the server stays responsive whatever the size of the send.

The child builds its own Context from the same settings (the database is the only
thing the two share): what it runs is `child`, given by the composition root, which
runs the due work on a tick and whenever the server kicks it (`serve_orders`).
It reports each recorded batch back through a pipe, so the server refreshes the
Deployment message as before; the protocol is three small tuples, nothing pickled
from the database.

`SendRunner` (a thread) remains for tests, where the sender must see the test's
injected clock; both have the same interface.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from bot.config import Settings

log = logging.getLogger(__name__)

KICK = ("kick",)
STOP = ("stop",)

# What the child runs: its settings, its end of the pipe, its tick.
Child = Callable[[Settings, Connection, float | None], None]


class Orders:
    """The child's side of the pipe: kicks and the stop, while a round runs.

    A thread listens, so that a stop that arrives mid-round ends the round after its
    batch (`stopping`), and kicks meanwhile make one more round (`wake`).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.wake = threading.Event()
        self.stopping = threading.Event()
        threading.Thread(target=self._listen, name="sender-orders", daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the server is gone: stop as if told to
                message = STOP
            if message == STOP:
                self.stopping.set()
            self.wake.set()
            if self.stopping.is_set():
                return

    def stop(self) -> None:
        """Stop as if the server said so (SIGTERM: after the batch in flight)."""
        self.stopping.set()
        self.wake.set()

    def batch(self, execution_id: int) -> None:
        self.conn.send(("batch", execution_id))

    def round_done(self, summary: dict[str, Any] | None) -> None:
        self.conn.send(("round", summary))


class SendProcess:
    """The due work in a child process, steered like `SendRunner`."""

    def __init__(
        self,
        settings: Settings,
        child: Child,
        on_batch: Callable[[int], None] | None = None,
        tick_seconds: float | None = 15.0,
    ) -> None:
        """`tick_seconds` None: run only when kicked (the scheduler kicks on its tick)."""
        self.settings = settings
        self.child = child
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
            target=self.child,
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


def serve_orders(
    orders: Orders, work: Callable[[Callable[[], bool]], Any], tick_seconds: float | None
) -> None:
    """The child's loop: a round of due work on every kick or tick, until told to stop.

    Each round is reported (its start and send summary) so the server counts rounds.
    """
    import asyncio

    while not orders.stopping.is_set():
        orders.wake.clear()  # kicks from now on mean one more round after this one
        try:
            report = asyncio.run(work(orders.stopping.is_set))
            orders.round_done({"started": report.started, "sent": report.sent})
        except Exception:
            log.exception("due work failed; trying again at the next tick")
            orders.round_done(None)
        orders.wake.wait(tick_seconds)
