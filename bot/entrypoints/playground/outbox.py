"""The outbox: each message that left for the Maildir, with its headers and its parts.

Only a Maildir outbox can be shown (the embedded default, `MAIL_URL=maildir://…`);
with an SMTP relay the messages are the relay's. A message's HTML is never put in the
page: it is served on its own (`routes`), under a Content-Security-Policy that runs
no script, into a sandboxed frame, so a message can link and show images (its
tracking pixel included) and nothing else.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

MAX_LISTED = 200
SHOWN_HEADERS = (
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "X-Greenlight-Delivery",
)
_KEY = re.compile(r"^[A-Za-z0-9._,:=-]{1,200}$")


@dataclass(frozen=True)
class Summary:
    key: str
    received: float
    sender: str
    to: str
    subject: str


@dataclass(frozen=True)
class Letter:
    key: str
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None


class Outbox:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @property
    def readable(self) -> bool:
        return self.folder is not None

    def _files(self) -> list[Path]:
        if self.folder is None:
            return []
        found = [p for sub in ("new", "cur") for p in (self.folder / sub).glob("*") if p.is_file()]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)

    def latest(self) -> tuple[int, list[Summary]]:
        """How many messages the outbox holds, and the newest `MAX_LISTED` of them."""
        files = self._files()
        listed = []
        for path in files[:MAX_LISTED]:
            parsed = _read(path)
            if parsed is None:
                continue
            listed.append(
                Summary(
                    key=path.name,
                    received=path.stat().st_mtime,
                    sender=str(parsed.get("From", "")),
                    to=str(parsed.get("To", "")),
                    subject=str(parsed.get("Subject", "")),
                )
            )
        return len(files), listed

    def letter(self, key: str) -> Letter | None:
        if self.folder is None or not _KEY.match(key):
            return None
        for sub in ("new", "cur"):
            path = self.folder / sub / key
            if path.is_file():
                parsed = _read(path)
                if parsed is None:
                    return None
                headers = [(h, str(parsed[h])) for h in SHOWN_HEADERS if parsed[h] is not None]
                return Letter(key, headers, _part(parsed, "plain"), _part(parsed, "html"))
        return None


def _read(path: Path) -> EmailMessage | None:
    try:
        with path.open("rb") as handle:
            parsed = email.message_from_binary_file(handle, policy=email.policy.default)
    except OSError:
        return None
    return parsed if isinstance(parsed, EmailMessage) else None


def _part(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None
