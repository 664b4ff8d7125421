"""A small real IMAP4rev1 server on loopback, for the mailbox reader's tests.

It speaks the commands `imaplib` sends for what the reader does (CAPABILITY, LOGIN,
SELECT, UID SEARCH, UID FETCH of BODY[], BODY.PEEK[] or RFC822.SIZE, UID STORE,
EXPUNGE, CLOSE, LOGOUT, NOOP, and UID EXPUNGE when created with ``uidplus=True``,
RFC 4315) with RFC 3501's semantics for them:
``BODY[]`` sets \\Seen and ``BODY.PEEK[]`` does not, EXPUNGE and CLOSE remove every
\\Deleted message, UID EXPUNGE only those of its set, SEARCH understands ALL, SEEN/UNSEEN,
DELETED/UNDELETED and FLAGGED. Anything else is answered BAD, so a reader that
relied on more would fail here.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field


@dataclass
class StoredMessage:
    uid: int
    data: bytes
    flags: set[str] = field(default_factory=set)


class ImapFolder:
    """One folder, shared by the server's connections and the test (under a lock)."""

    def __init__(
        self, user: str, password: str, name: str = "INBOX", uidplus: bool = False
    ) -> None:
        self.user, self.password, self.name = user, password, name
        self.uidplus = uidplus
        self.messages: list[StoredMessage] = []
        self.lock = threading.Lock()
        self.next_uid = 1
        self.commands: list[str] = []

    def add(self, data: bytes) -> int:
        with self.lock:
            uid = self.next_uid
            self.next_uid += 1
            self.messages.append(StoredMessage(uid, data.replace(b"\n", b"\r\n")))
            return uid

    def flags(self) -> dict[int, set[str]]:
        with self.lock:
            return {m.uid: set(m.flags) for m in self.messages}


_COMMAND = re.compile(r"(\S+) (\S+)(?: (.*))?")
_LOGIN = re.compile(r'("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)')
_TESTS = {
    "SEEN": lambda f: "\\Seen" in f,
    "UNSEEN": lambda f: "\\Seen" not in f,
    "DELETED": lambda f: "\\Deleted" in f,
    "UNDELETED": lambda f: "\\Deleted" not in f,
    "FLAGGED": lambda f: "\\Flagged" in f,
    "ALL": lambda f: True,
}


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _uids(spec: str, present: list[int]) -> list[int]:
    wanted: set[int] = set()
    top = max(present, default=0)
    for part in spec.split(","):
        low, _, high = part.partition(":")
        a = top if low == "*" else int(low)
        b = a if not high else (top if high == "*" else int(high))
        wanted.update(u for u in present if min(a, b) <= u <= max(a, b))
    return sorted(wanted)


class ImapServer:
    """`ImapServer(folder).start()` listens on 127.0.0.1:`port` in its own thread."""

    def __init__(self, folder: ImapFolder) -> None:
        self.folder = folder
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.server = server
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> ImapServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        async def shut() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        box = self.folder
        state = {"auth": False, "selected": False}

        def send(line: str | bytes) -> None:
            writer.write((line.encode() if isinstance(line, str) else line) + b"\r\n")

        send("* OK IMAP4rev1 test server ready")
        while line := await reader.readline():
            match = _COMMAND.fullmatch(line.decode().rstrip("\r\n"))
            if not match:
                send("* BAD unreadable command")
                continue
            tag, name, args = match.group(1), match.group(2).upper(), match.group(3) or ""
            box.commands.append(f"{name} {args}" if name != "LOGIN" else "LOGIN")
            if name == "UID" and state["selected"]:
                sub, _, args = args.partition(" ")
                name = "UID " + sub.upper()
            with box.lock:
                reply = self._answer(tag, name, args, state, send)
            send(reply)
            await writer.drain()
            if name == "LOGOUT":
                break
        writer.close()

    def _answer(self, tag: str, name: str, args: str, state: dict[str, bool], send) -> str:  # type: ignore[no-untyped-def]
        box = self.folder
        messages = box.messages
        if name == "CAPABILITY":
            send("* CAPABILITY IMAP4rev1" + (" UIDPLUS" if box.uidplus else ""))
        elif name in ("NOOP",):
            pass
        elif name == "LOGOUT":
            send("* BYE logging out")
        elif name == "LOGIN":
            creds = _LOGIN.fullmatch(args)
            if not creds or (_unquote(creds.group(1)), _unquote(creds.group(2))) != (
                box.user,
                box.password,
            ):
                return f"{tag} NO [AUTHENTICATIONFAILED] wrong credentials"
            state["auth"] = True
        elif not state["auth"]:
            return f"{tag} BAD log in first"
        elif name == "SELECT":
            if _unquote(args) != box.name:
                return f"{tag} NO no such folder"
            state["selected"] = True
            send("* FLAGS (\\Seen \\Deleted \\Flagged)")
            send(f"* {len(messages)} EXISTS")
            send("* 0 RECENT")
            send("* OK [UIDVALIDITY 1] UIDs valid")
            return f"{tag} OK [READ-WRITE] SELECT completed"
        elif not state["selected"]:
            return f"{tag} BAD select a folder first"
        elif name == "UID SEARCH":
            keys = args.upper().split()
            if not all(k in _TESTS for k in keys):
                return f"{tag} BAD unsupported search"
            found = [m.uid for m in messages if all(_TESTS[k](m.flags) for k in keys)]
            send("* SEARCH" + "".join(f" {u}" for u in found))
        elif name == "UID FETCH":
            spec, _, items = args.partition(" ")
            if items.upper() == "(RFC822.SIZE)":
                for uid in _uids(spec, [m.uid for m in messages]):
                    seq, m = next((i + 1, m) for i, m in enumerate(messages) if m.uid == uid)
                    send(f"* {seq} FETCH (UID {uid} RFC822.SIZE {len(m.data)})")
                return f"{tag} OK FETCH completed"
            peek = items.upper() == "(BODY.PEEK[])"
            if not peek and items.upper() != "(BODY[])":
                return f"{tag} BAD unsupported fetch"
            for uid in _uids(spec, [m.uid for m in messages]):
                seq, m = next((i + 1, m) for i, m in enumerate(messages) if m.uid == uid)
                if not peek:
                    m.flags.add("\\Seen")
                send(
                    f"* {seq} FETCH (UID {uid} BODY[] {{{len(m.data)}}}".encode()
                    + b"\r\n"
                    + m.data
                    + b")"
                )
        elif name == "UID STORE":
            spec, op, flags = args.split(" ", 2)
            if op.upper() not in ("+FLAGS", "+FLAGS.SILENT"):
                return f"{tag} BAD unsupported store"
            for uid in _uids(spec, [m.uid for m in messages]):
                next(m for m in messages if m.uid == uid).flags.update(flags.strip("()").split())
        elif name in ("EXPUNGE", "CLOSE") or (name == "UID EXPUNGE" and box.uidplus):
            chosen = set(_uids(args, [m.uid for m in messages])) if args else None
            for seq in range(len(messages), 0, -1):
                m = messages[seq - 1]
                if "\\Deleted" in m.flags and (chosen is None or m.uid in chosen):
                    del messages[seq - 1]
                    if name != "CLOSE":
                        send(f"* {seq} EXPUNGE")
            if name == "CLOSE":
                state["selected"] = False
        else:
            return f"{tag} BAD unknown command {name}"
        return f"{tag} OK {name} completed"
