"""Maildir transport: the embedded default, each message a file a person can open.

It follows the Maildir delivery protocol (what `mailbox.Maildir` writes and reads):
write the file under `tmp/`, flush it to disk, then rename it into `new/`, so a reader
never sees half a message. The file name holds the sending log id
(`{seconds}.M{µs}P{pid}Q{n}.gl-{log_id}.{host}`), so `ls new/*gl-1234.*` finds a
recipient's message; files have LF line ends like any local mailbox. Every message is
"accepted"; a write that fails (disk full, permissions) is a `RelayUnavailable`
with the messages written so far, so nothing is marked failed for a local problem.

Writing blocks, so a batch runs in one worker thread; `fsync=False` trades the
durability of "accepted" across a power cut for speed (benchmarks, tests).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from bot.engine.transports.base import (
    Envelope,
    Fence,
    FenceLost,
    OnResult,
    RelayResult,
    RelayUnavailable,
)

FENCE_EVERY = 64  # files written between two questions to the fence


class MaildirTransport:
    def __init__(self, path: Path | str, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._ready = False
        self._counter = itertools.count(1)
        host = socket.gethostname() or "localhost"
        self._host = host.replace("/", r"\057").replace(":", r"\072")

    def _prepare(self) -> None:
        """Create the folder and its tmp/new/cur on first use (mode 0700 like mailbox)."""
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._ready = True

    def file_name(self, log_id: int) -> str:
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        seq = next(self._counter)
        return f"{seconds}.M{micros}P{os.getpid()}Q{seq}.gl-{log_id}.{self._host}"

    def _write(self, envelope: Envelope) -> None:
        name = self.file_name(envelope.log_id)
        tmp = self.path / "tmp" / name
        try:
            with open(tmp, "xb") as handle:
                handle.write(envelope.data.replace(b"\r\n", b"\n"))
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.rename(tmp, self.path / "new" / name)
        except OSError:
            tmp.unlink(missing_ok=True)  # no half-written leftovers in tmp/
            raise

    def _write_all(self, batch: Sequence[Envelope]) -> list[RelayResult]:
        results: list[RelayResult] = []
        try:
            if not self._ready:
                self._prepare()
            for envelope in batch:
                self._write(envelope)
                results.append(RelayResult(envelope.log_id, "accepted"))
            if self.fsync and batch:
                directory = os.open(self.path / "new", os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except OSError as exc:
            raise RelayUnavailable(f"cannot write to maildir {self.path}: {exc}", results) from exc
        return results

    async def send(
        self,
        batch: Sequence[Envelope],
        fence: Fence | None = None,
        on_result: OnResult | None = None,
    ) -> list[RelayResult]:
        if not batch:
            return []
        results: list[RelayResult] = []
        for start in range(0, len(batch), FENCE_EVERY):  # each chunk behind the fence
            if fence is not None and not await fence():
                raise FenceLost("the claim was taken over", results)
            chunk = batch[start : start + FENCE_EVERY]
            try:
                written = await asyncio.to_thread(self._write_all, chunk)
            except RelayUnavailable as exc:
                for result in exc.partial:
                    if on_result is not None:
                        on_result(result)
                raise RelayUnavailable(exc.reason, results + exc.partial) from exc
            results += written
            if on_result is not None:
                for result in written:
                    on_result(result)
        return results

    async def close(self) -> None:
        return None
