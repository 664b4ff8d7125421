"""A real SMTP relay for tests: aiosmtpd on loopback, scripted by recipient name.

Recipients whose local part starts with `hard` get 550 at RCPT, `soft` 451,
`softonce` 451 the first time only, `closing` 421, `flaky` a dropped connection the
first time; `datahard`/`datasoft` are refused after DATA. Everything accepted is
recorded.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    session: int
    mail_options: list[str] = field(default_factory=list)


class Recorder:
    """The relay's handler: scripted answers, and a record of what it accepted."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.dropped: set[str] = set()
        self.lock = threading.Lock()
        self.closing_all = False  # answer 421 to every MAIL FROM: the relay is going away
        self.transmissions: dict[str, int] = {}  # `poison…` recipient -> messages received

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("refused"):
            return "553 5.7.1 sender not allowed"
        if self.closing_all:
            return "421 4.3.2 service shutting down"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        local = address.split("@", 1)[0]
        if local.startswith("hard"):
            return "550 5.1.1 no such user"
        if local.startswith("softonce"):
            with self.lock:
                first = address not in self.dropped
                self.dropped.add(address)
            if first:
                return "451 4.2.0 mailbox busy, try later"
        elif local.startswith("soft"):
            return "451 4.2.0 mailbox busy, try later"
        if local.startswith("closing"):
            return "421 4.3.2 service shutting down"
        if local.startswith("flaky"):
            with self.lock:
                first = address not in self.dropped
                self.dropped.add(address)
            if first:
                server.transport.close()
                return "451 never seen by the client"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0]
        if rcpt.startswith("poison"):  # the whole message arrived; the relay drops us
            with self.lock:
                self.transmissions[rcpt] = self.transmissions.get(rcpt, 0) + 1
            server.transport.close()
            return "451 never seen by the client"
        if rcpt.startswith("datahard"):
            return "554 5.7.1 rejected as spam"
        if rcpt.startswith("datasoft"):
            return "452 4.3.1 insufficient storage"
        with self.lock:
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.content,
                    id(session),
                    list(envelope.mail_options),
                )
            )
        return "250 2.0.0 queued"

    def by_rcpt(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for item in self.received:
            out.setdefault(item.rcpt_tos[0], []).append(item)
        return out


class Relay:
    """An aiosmtpd server on 127.0.0.1 that can be stopped and started on its port."""

    def __init__(self, **smtp_options: Any) -> None:
        self.recorder = Recorder()
        self.port = free_port()
        self.options = smtp_options
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(
            self.recorder,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="relay.test",
            **self.options,
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class Holding:
    """Accepts everything; on the `at`-th message, signals `reached` and holds that
    message's answer until `release` is set, so a test acts with a batch in flight."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.reached = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(envelope.rcpt_tos[0])
            count = len(self.received)
        if count == self.at:
            self.reached.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return "250 2.0.0 queued"
