"""The playground's workspace: its people, its channels and every message in them.

What the bot posts through the Web API and what it answers through response URLs is
kept here, drawn once as HTML (`blockkit`), and pushed to every open page. It is
kept on disk as well (`data/playground.json`): the Deployment message of a delivery
is updated in place by its timestamp, and must still be there after a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.domain.roles import Role
from bot.entrypoints.playground.blockkit import message_html
from bot.entrypoints.playground.mrkdwn import Names

log = logging.getLogger(__name__)

BOT = "greenlight"
MAX_MESSAGES = 2000  # the oldest go first: a demo never needs more
MAX_FILE_BYTES = 5 * 1024 * 1024
SAVE_DELAY = 1.0  # seconds: changes within it are written to disk once


@dataclass(frozen=True)
class DemoUser:
    id: str
    name: str
    roles: tuple[Role, ...]
    says: str  # what the switcher tells about them


DEMO_USERS = (
    DemoUser(
        "U0PGALICE",
        "Alice (starts deliveries)",
        (Role.START_DELIVERIES, Role.ADMINISTRATION),
        "may confirm, pause, stop and approve; administers roles",
    ),
    DemoUser(
        "U0PGBRUNO",
        "Bruno (starts deliveries)",
        (Role.START_DELIVERIES,),
        "may confirm and approve: the second approval of a quorum of 2",
    ),
    DemoUser("U0PGCHLOE", "Chloé (prepares)", (Role.PREPARE_DELIVERIES,), "may only prepare"),
    DemoUser("U0PGDAVID", "David (no role)", (), "holds no role: Greenlight refuses him"),
)


@dataclass
class Message:
    ts: str
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    author: str = BOT  # BOT, or the id of the person who typed it
    visible_to: str | None = None  # an ephemeral message: only this person sees it
    files: list[str] = field(default_factory=list)  # ids of files shown under it
    edited: bool = False
    html: str = ""

    def view(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "channel": self.channel,
            "author": self.author,
            "visible_to": self.visible_to,
            "files": self.files,
            "edited": self.edited,
            "html": self.html,
        }


@dataclass
class File:
    id: str
    name: str
    title: str
    bytes: bytes = b""
    shared: bool = False


class Workspace:
    """Messages by timestamp, files by id, and the queues of the pages listening."""

    def __init__(self, folder: Path, names: Names) -> None:
        self.folder = folder
        self.names = dict(names)
        self.messages: dict[str, Message] = {}
        self.files: dict[str, File] = {}
        self.channels: list[str] = []
        self.homes: dict[str, str] = {}  # user id -> their Home tab, drawn
        self._saving: asyncio.TimerHandle | None = None
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self._ts = itertools.count(1)
        self._load()

    # --- state ---------------------------------------------------------------------

    def add_channel(self, channel: str) -> None:
        if channel and channel not in self.channels:
            self.channels.append(channel)
            self._publish({"type": "channels", "channels": self.channel_views()})

    def channel_views(self) -> list[dict[str, str]]:
        return [{"id": c, "name": self.names.get(c, c)} for c in self.channels]

    def new_ts(self) -> str:
        """Slack's timestamps: seconds and a sequence, unique and increasing."""
        return f"{int(time.time())}.{next(self._ts):06d}"

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None,
        *,
        author: str = BOT,
        visible_to: str | None = None,
    ) -> Message:
        self.add_channel(channel)
        message = Message(self.new_ts(), channel, text, list(blocks or []), author, visible_to)
        self._draw(message)
        self.messages[message.ts] = message
        while len(self.messages) > MAX_MESSAGES:
            self.messages.pop(next(iter(self.messages)))
        self._changed(message)
        return message

    def update(self, ts: str, text: str, blocks: list[dict[str, Any]] | None) -> Message | None:
        message = self.messages.get(ts)
        if message is None:
            return None
        message.text, message.blocks, message.edited = text, list(blocks or []), True
        self._draw(message)
        self._changed(message)
        return message

    def delete(self, ts: str) -> None:
        if self.messages.pop(ts, None) is not None:
            self._publish({"type": "deleted", "ts": ts})
            self._save_soon()

    def publish_home(self, user: str, blocks: list[dict[str, Any]]) -> None:
        """views.publish: the user's Home tab, replaced whole, as in Slack."""
        try:
            drawn = message_html("", blocks, self.names)
        except Exception:  # a view this renderer cannot read is shown, not lost
            log.exception("playground: could not draw the Home tab of %s", user)
            drawn = '<div class="bk-unsupported">this Home tab could not be drawn</div>'
        self.homes[user] = drawn
        self._publish({"type": "home", "user": user, "html": drawn})

    def new_file(self, name: str, title: str) -> File:
        # Unguessable, as the upload URL made of it is the only key to its bytes.
        file = File(f"F0PG{secrets.token_hex(8).upper()}", name, title)
        self.files[file.id] = file
        return file

    def share(self, file_ids: list[str], channel: str, comment: str) -> Message:
        """files.completeUploadExternal: the files appear in the channel, with the comment."""
        message = self.post(channel, comment, None)
        for file_id in file_ids:
            if file_id in self.files:
                self.files[file_id].shared = True
                message.files.append(file_id)
        self._draw(message)
        self._changed(message)
        return message

    def _draw(self, message: Message) -> None:
        try:
            message.html = message_html(message.text, message.blocks, self.names)
        except Exception:  # a message this renderer cannot read is shown, not lost
            log.exception("playground: could not draw message %s", message.ts)
            message.html = '<div class="bk-unsupported">this message could not be drawn</div>'

    # --- the pages listening --------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "channels": self.channel_views(),
            "messages": [m.view() for m in self.messages.values()],
            "homes": self.homes,
        }

    def listen(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._listeners.discard(queue)

    def notice(self, text: str, **extra: Any) -> None:
        """A line for the page's status bar (the due work ran, the clock moved…)."""
        self._publish({"type": "notice", "text": text, **extra})

    def _publish(self, event: dict[str, Any]) -> None:
        for queue in list(self._listeners):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a page that stopped reading: it reloads
                self._listeners.discard(queue)

    def _changed(self, message: Message) -> None:
        self._publish({"type": "message", "message": message.view()})
        self._save_soon()

    def _save_soon(self) -> None:
        """Save within a second: a send updates its Deployment message at every batch,
        and the whole file is written on the server's loop. Outside a loop, at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save()
            return
        if self._saving is None:
            self._saving = loop.call_later(SAVE_DELAY, self.flush)

    def flush(self) -> None:
        """Save now what is waiting to be saved (at the delay, and when the server stops)."""
        if self._saving is not None:
            self._saving.cancel()
            self._saving = None
            self._save()

    # --- on disk ----------------------------------------------------------------------

    @property
    def _path(self) -> Path:
        return self.folder / "playground.json"

    def _save(self) -> None:
        state = {
            "channels": self.channels,
            "messages": [
                {k: v for k, v in asdict(m).items() if k != "html"} for m in self.messages.values()
            ],
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            part = self._path.with_suffix(".part")
            part.write_text(json.dumps(state))
            os.replace(part, self._path)
            for file in self.files.values():
                target = self.folder / "playground-files" / file.id
                if file.bytes and not target.exists():
                    target.parent.mkdir(exist_ok=True)
                    target.write_bytes(file.bytes)
        except OSError:
            log.warning("playground: could not save its messages", exc_info=True)

    def _load(self) -> None:
        if self._path.exists():
            try:
                state = json.loads(self._path.read_text())
                self.channels = [str(c) for c in state.get("channels", [])]
                for raw in state.get("messages", []):
                    message = Message(**raw)
                    self._draw(message)
                    self.messages[message.ts] = message
            except (OSError, ValueError, TypeError):
                log.warning("playground: its saved messages could not be read; starting empty")
                self.messages.clear()
        files = self.folder / "playground-files"
        if files.is_dir():
            for path in files.iterdir():
                self.files[path.name] = File(
                    path.name, path.name, path.name, path.read_bytes(), True
                )
        sequence = [int(ts.split(".")[1]) for ts in self.messages if "." in ts]
        start = max(sequence, default=0) + 1
        self._ts = itertools.count(start)
