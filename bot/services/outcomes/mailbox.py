"""Read bounce messages from a mailbox (Maildir or IMAP) and ingest what they report.

Some relays only tell of failures by mail: the bounces land in a mailbox, and this
step of the due work reads it when FEEDBACK_MAILBOX_URL is set. The
order of each round is what keeps every event, once:

1. take up to `BATCH` messages, without changing anything in the mailbox (IMAP:
   ``BODY.PEEK[]``, so not even the \\Seen flag);
2. parse each with `bot.feedback.dsn`; ingest all their events in one transaction;
3. only after that commit, remove the messages taken (Maildir: delete the file;
   IMAP: \\Seen \\Deleted, then UID EXPUNGE of those messages, or EXPUNGE on a
   server without UIDPLUS).

A crash or a database failure between 2 and 3 leaves the messages where they were:
the next round reads them again, and the receipts (source event ids derived from
each bounce) make the second ingestion change nothing. Nothing is removed unless
its events are stored.

A message that cannot be parsed, or that reports nothing this project reads (a
reply, an auto-reply, a bounce format no parser knows), is not deleted: it is set
aside for a person, with a warning in the log. Maildir: moved to the ``.failed``
sub-folder (Maildir++). IMAP: left in the folder, flagged \\Flagged and \\Seen, so
it is not read again (the reader only takes unseen messages).

Processed messages are deleted rather than kept: the database holds what they said
(log status, reason, diagnostic), and a folder that only grows would be listed again
at every tick.
"""

from __future__ import annotations

import imaplib
import logging
import mailbox
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.config import MailboxTarget
from bot.context import Context
from bot.feedback import dsn
from bot.feedback.events import FeedbackEvent
from bot.services.outcomes.ingest import ingest
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 200  # messages per transaction
MAX_ROUNDS = 25  # per tick: a flood of bounces is read over several ticks
FAILED_FOLDER = "failed"
IMAP_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = dsn.MAX_BOUNCE_BYTES  # larger messages are set aside unread


@dataclass
class MailboxReport:
    read: int = 0  # messages taken from the mailbox
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    unmatched: int = 0
    set_aside: int = 0  # messages kept for a person: unreadable, too large or not feedback
    waiting: int = 0  # bounces left for the next tick: their message is not recorded yet
    error: str | None = None  # the mailbox or the database was unavailable


class MailboxSource(Protocol):
    """A mailbox as the reader needs it; keys are opaque to the reader."""

    def fetch(self, limit: int) -> list[tuple[str, bytes | None]]:
        """Up to `limit` messages not yet taken, leaving the mailbox unchanged; None for a
        message larger than `MAX_MESSAGE_BYTES` (never read whole)."""
        ...

    def remove(self, keys: Sequence[str]) -> None: ...
    def set_aside(self, keys: Sequence[str]) -> None: ...
    def close(self) -> None: ...


class MaildirSource:
    """A Maildir on disk (`mailbox.Maildir`): every message in new/ and cur/ is unread work."""

    def __init__(self, target: MailboxTarget) -> None:
        assert target.path is not None
        self.box = mailbox.Maildir(target.path, factory=None, create=False)

    def fetch(self, limit: int) -> list[tuple[str, bytes | None]]:
        found: list[tuple[str, bytes | None]] = []
        for key in sorted(self.box.keys())[:limit]:  # names start with the delivery time
            try:
                with self.box.get_file(key) as f:
                    data = f.read(MAX_MESSAGE_BYTES + 1)
            except (KeyError, FileNotFoundError):
                continue  # removed by someone else since the listing
            found.append((key, data if len(data) <= MAX_MESSAGE_BYTES else None))
        return found

    def remove(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.box.discard(key)

    def set_aside(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        if FAILED_FOLDER in self.box.list_folders():
            failed = self.box.get_folder(FAILED_FOLDER)
        else:
            failed = self.box.add_folder(FAILED_FOLDER)
        for key in keys:
            # The bytes as they came; copied, then removed: a crash in between leaves
            # a second copy, never none.
            failed.add(self.box.get_bytes(key))
            self.box.discard(key)

    def close(self) -> None:
        self.box.close()


_FETCHED_UID = re.compile(rb"\bUID (\d+)\b")
_FETCHED_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)\b")


class ImapSource:
    """An IMAP folder (`imaplib`, blocking: the reader runs in a worker thread).

    Unseen, undeleted messages are the work. A person reading the folder with a mail
    client would mark messages seen; a bounce mailbox is meant for this reader only.
    """

    def __init__(self, target: MailboxTarget, timeout: float = IMAP_TIMEOUT) -> None:
        if target.scheme == "imaps":
            self.imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                target.host, target.port, ssl_context=ssl.create_default_context(), timeout=timeout
            )
        else:
            self.imap = imaplib.IMAP4(target.host, target.port, timeout=timeout)
            if target.starttls:
                self.imap.starttls(ssl.create_default_context())
        try:
            self.imap.login(target.username, target.password)
            folder = '"' + target.folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
            status, detail = self.imap.select(folder)
            if status != "OK":
                raise imaplib.IMAP4.error(f"cannot select {target.folder!r}: {detail!r}")
        except BaseException:
            self.imap.shutdown()
            raise

    def _check(self, status: str, data: object, what: str) -> None:
        if status != "OK":
            raise imaplib.IMAP4.error(f"{what} failed: {data!r}")

    def fetch(self, limit: int) -> list[tuple[str, bytes | None]]:
        status, data = self.imap.uid("SEARCH", "UNSEEN", "UNDELETED")
        self._check(status, data, "SEARCH")
        uids = (data[0] or b"").split()[:limit] if data else []
        if not uids:
            return []
        # Sizes first: a message over the bound is never downloaded.
        status, data = self.imap.uid("FETCH", b",".join(uids).decode(), "(RFC822.SIZE)")
        self._check(status, data, "FETCH")
        sizes: dict[str, int] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid, size = _FETCHED_UID.search(line), _FETCHED_SIZE.search(line)
            if uid and size:
                sizes[uid.group(1).decode()] = int(size.group(1))
        found: list[tuple[str, bytes | None]] = []
        small = [u.decode() for u in uids if sizes.get(u.decode(), 0) <= MAX_MESSAGE_BYTES]
        found += [(u.decode(), None) for u in uids if u.decode() not in small]
        if small:
            status, data = self.imap.uid("FETCH", ",".join(small), "(BODY.PEEK[])")
            self._check(status, data, "FETCH")
            for item in data:
                if isinstance(item, tuple) and (m := _FETCHED_UID.search(item[0])):
                    found.append((m.group(1).decode(), item[1]))
        return found

    def _flag(self, keys: Sequence[str], flags: str) -> None:
        if keys:
            status, data = self.imap.uid("STORE", ",".join(keys), "+FLAGS.SILENT", flags)
            self._check(status, data, "STORE")

    def remove(self, keys: Sequence[str]) -> None:
        """Flag, then expunge: only these messages where the server can (UIDPLUS).

        Without UIDPLUS, EXPUNGE also removes what another client flagged \\Deleted
        in this folder, which is why the folder should be for bounces only.
        """
        self._flag(keys, r"(\Seen \Deleted)")
        if not keys:
            return
        if "UIDPLUS" in self.imap.capabilities:
            status, data = self.imap.uid("EXPUNGE", ",".join(keys))
        else:
            status, data = self.imap.expunge()
        self._check(status, data, "EXPUNGE")

    def set_aside(self, keys: Sequence[str]) -> None:
        self._flag(keys, r"(\Seen \Flagged)")

    def close(self) -> None:
        # LOGOUT without CLOSE: CLOSE would expunge every \Deleted message, ours or not.
        try:
            self.imap.logout()
        except (OSError, imaplib.IMAP4.error):
            self.imap.shutdown()


def open_source(target: MailboxTarget) -> MailboxSource:
    if target.scheme == "maildir":
        return MaildirSource(target)
    return ImapSource(target)


def _parse(key: str, raw: bytes | None, where: str) -> list[FeedbackEvent] | None:
    """The message's events; None (and a warning) when it must be set aside."""
    if raw is None:
        log.warning(
            "set aside message %s of %s: larger than %d bytes", key, where, MAX_MESSAGE_BYTES
        )
        return None
    try:
        events = dsn.parse_bounce_message(raw)
    except Exception:  # any message at all can arrive in a bounce mailbox
        log.warning("set aside message %s of %s: it could not be read", key, where, exc_info=True)
        return None
    if not events:
        log.warning("set aside message %s of %s: it reports no delivery outcome", key, where)
        return None
    return events


def read_feedback_mailbox(ctx: Context, batch: int = BATCH) -> MailboxReport:
    """One pass over the configured mailbox; a no-op when FEEDBACK_MAILBOX_URL is empty.

    An unavailable mailbox or database is logged and reported, not raised: the other
    steps of the due work still run, and the messages wait for the next tick.
    """
    report = MailboxReport()
    target = ctx.settings.feedback_mailbox
    if target is None:
        return report
    where = target.describe()
    try:
        source = open_source(target)
    except mailbox.NoSuchMailboxError:
        log.error("the feedback mailbox %s is not a Maildir (new/, cur/, tmp/)", where)
        report.error = f"cannot open the mailbox: {where} is not a Maildir (new/, cur/, tmp/)"
        return report
    except (OSError, imaplib.IMAP4.error, mailbox.Error) as exc:
        log.error("cannot open the feedback mailbox %s: %s", where, exc)
        report.error = f"cannot open the mailbox: {exc}"
        return report
    try:
        for _ in range(MAX_ROUNDS):
            taken = source.fetch(batch)
            events: list[FeedbackEvent] = []
            owner: list[str] = []  # the message each event came from
            done: list[str] = []
            aside: list[str] = []
            for key, raw in taken:
                found = _parse(key, raw, where)
                if found is None:
                    aside.append(key)
                else:
                    events.extend(found)
                    owner.extend(key for _ in found)
                    done.append(key)
            waiting: set[str] = set()
            if events:
                result = ingest(ctx, events)  # commits, or raises and nothing is removed
                report.events += result.received
                report.applied += result.applied
                report.duplicates += result.duplicates
                report.unmatched += result.unmatched
                # A bounce of a message whose relay is not recorded yet stays for later.
                waiting = {owner[i] for i in result.held}
                report.waiting += len(waiting)
            source.remove([key for key in done if key not in waiting])
            source.set_aside(aside)
            report.read += len(taken)
            report.set_aside += len(aside)
            if len(taken) < batch or waiting:
                break  # what waits would be read again at once: the next tick takes it
    except (OSError, imaplib.IMAP4.error, mailbox.Error, StoreUnavailable) as exc:
        log.error("reading the feedback mailbox %s stopped: %s", where, exc, exc_info=True)
        report.error = str(exc)
    finally:
        try:
            source.close()
        except (OSError, imaplib.IMAP4.error):
            log.warning("closing the feedback mailbox %s failed", where, exc_info=True)
    return report
