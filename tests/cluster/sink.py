"""An SMTP sink for the cluster test: accepts every message and logs who sent which log.

One line per accepted message, written before the 250 is answered:

    <monotonic seconds> <peer address> <X-Greenlight-Log> <Message-ID>

Run inside the MTA node's network namespace:

    python tests/cluster/sink.py HOST PORT LOGFILE
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from typing import Any

from aiosmtpd.controller import Controller

_HEADER = re.compile(rb"^(X-Greenlight-Log|Message-ID):[ \t]*(\S+)", re.I | re.M)


class Sink:
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", buffering=1)  # noqa: SIM115  # line-buffered, lives as long as the sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        head = content.split(b"\r\n\r\n", 1)[0]
        found = {name.decode().lower(): value.decode() for name, value in _HEADER.findall(head)}
        log_id = found.get("x-greenlight-log", "-")
        message_id = found.get("message-id", "-")
        self.out.write(f"{time.monotonic():.6f} {session.peer[0]} {log_id} {message_id}\n")
        return "250 2.0.0 queued"


def main() -> None:
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    controller = Controller(Sink(path), hostname=host, port=port)
    controller.start()
    print(f"sink listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
