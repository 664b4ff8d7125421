"""Runs the due work (start, send, retry, expire) in its own thread, on demand.

Sending touches the database and the relay for seconds at a time; in its own thread
with its own event loop it never delays Slack's 3-second acknowledgements or the
webhooks served by the HTTP loop. A confirm or a resume `kick()`s it so sending starts
at once; the scheduler's tick (`jobs.scheduler`) kicks it too, to catch up with
anything due meanwhile (an `at` date, an occurrence, a retry). Without a scheduler it
can tick by itself (`tick_seconds`). Kicks while a round runs make one more round,
not one per kick.

Tests use this runner, whose rounds see their injected clock; `serve` and `socket`
use `jobs.process.SendProcess`, the same interface in a child process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from bot.jobs.due_work import DueReport

log = logging.getLogger(__name__)

# One round of the due work; its argument is asked before each batch: "stop now?".
Round = Callable[[Callable[[], bool]], Coroutine[Any, Any, DueReport]]


class SendRunner:
    def __init__(self, work: Round, tick_seconds: float | None = 15.0) -> None:
        self.work = work
        self.tick_seconds = tick_seconds
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.last_report: DueReport | None = None
        self.rounds = 0
        self._round_done = threading.Condition()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="greenlight-sender", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Run the due work now rather than at the next tick."""
        self._wake.set()

    def wait_round(self, after: int, timeout: float) -> bool:
        """Wait until a round ends past round number `after`; False after `timeout` s."""
        with self._round_done:
            return self._round_done.wait_for(lambda: self.rounds > after, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        while not self._stopping:
            try:
                self.last_report = asyncio.run(self.work(lambda: self._stopping))
            except Exception:
                log.exception("due work failed; trying again at the next tick")
            with self._round_done:
                self.rounds += 1
                self._round_done.notify_all()
            self._wake.wait(self.tick_seconds)
            self._wake.clear()
