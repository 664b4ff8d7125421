"""Runs the due work (start, send, retry, expire) in its own thread, on demand.

Sending touches the database and the relay for seconds at a time; in its own thread
with its own event loop it never delays Slack's 3-second acknowledgements or the
webhooks served by the HTTP loop. A confirm or a resume `kick()`s it so sending starts
at once; the scheduler's tick (`bot.jobs`) kicks it too, to catch up with anything
due meanwhile (an `at` date, an occurrence, a retry). Without a scheduler it can
tick by itself (`tick_seconds`). Kicks while a round runs make one more round, not
one per kick.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from bot.context import Context
from bot.services.due_work import DueReport, run_due

log = logging.getLogger(__name__)


class SendRunner:
    def __init__(
        self,
        ctx: Context,
        on_batch: Callable[[int], None] | None = None,
        tick_seconds: float | None = 15.0,
        slack: Any | None = None,
    ) -> None:
        self.ctx = ctx
        self.slack = slack
        self.on_batch = on_batch
        self.tick_seconds = tick_seconds
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.last_report: DueReport | None = None
        self.rounds = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="greenlight-sender", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Run the due work now rather than at the next tick."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        while not self._stopping:
            try:
                self.last_report = asyncio.run(
                    run_due(
                        self.ctx,
                        on_batch=self.on_batch,
                        slack=self.slack,
                        should_stop=lambda: self._stopping,
                    )
                )
            except Exception:
                log.exception("due work failed; trying again at the next tick")
            self.rounds += 1
            self._wake.wait(self.tick_seconds)
            self._wake.clear()
