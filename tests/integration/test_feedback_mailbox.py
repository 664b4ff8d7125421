"""The bounce mailbox: read at each tick, removed only once stored, never applied twice.

Maildir tests use real folders on disk; IMAP tests a real IMAP server on loopback
(`tests/imap_server.py`) through `imaplib`, as in production.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

import pytest
from imap_server import ImapFolder, ImapServer
from pydantic import SecretStr
from scenario import CLI, as_user, detail_json, due_now, prepare_one
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot.config import Settings
from bot.context import Context
from bot.domain.roles import Role
from bot.engine.transports import MaildirTransport
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.views import compute_stats
from bot.services.outcomes import mailbox as feedback_mailbox
from bot.services.outcomes.mailbox import MaildirSource, read_feedback_mailbox
from bot.store.models import SendingLog

EMAILS = ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
AUTO_REPLY = (
    b"From: a@x.example\nTo: news@shop.example\nSubject: Out of office\n"
    b"Message-ID: <ooo-1@x.example>\nAuto-Submitted: auto-replied\n\nBack on Monday.\n"
)


def dsn(log: SendingLog, action: str, status: str, n: int) -> bytes:
    """An RFC 3464 report as Postfix writes it, returning the headers of our message."""
    return (
        "From: MAILER-DAEMON@mx.example (Mail Delivery System)\n"
        "To: news@shop.example\nSubject: Undelivered Mail Returned to Sender\n"
        f"Message-ID: <bounce-{n}@mx.example>\nDate: Mon, 23 Nov 2026 09:02:40 +0000\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nThe mail system could not deliver.\n\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example\n\n"
        f"Final-Recipient: rfc822; {log.email}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {status.replace('.', '')[:1]}50 {status} said no\n\n"
        "--B\nContent-Type: text/rfc822-headers\n\n"
        f"Message-ID: {log.message_id}\nX-Greenlight-Log: {log.id}\nSubject: Hi\n\n--B--\n"
    ).encode()


@pytest.fixture
def logs(ctx: Context, tmp_path: Path) -> dict[str, SendingLog]:
    prepare_one(ctx, tmp_path, EMAILS, "promo", efs=True)
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    tick(ctx, tmp_path)
    with ctx.sessions() as s:
        return {lg.email: lg for lg in s.scalars(select(SendingLog))}


def tick(ctx: Context, tmp_path: Path):  # type: ignore[no-untyped-def]
    return due_now(ctx, lambda: MaildirTransport(tmp_path / "outbox"))


def statuses(ctx: Context) -> dict[str, tuple[str, str | None]]:
    with ctx.sessions() as s:
        rows = s.execute(select(SendingLog.email, SendingLog.status, SendingLog.failure_type))
        return {email: (status, failure) for email, status, failure in rows}


def bounces(logs: dict[str, SendingLog]) -> list[bytes]:
    return [
        dsn(logs["a@x.example"], "failed", "5.1.1", 1),  # hard
        dsn(logs["b@x.example"], "delayed", "4.4.1", 2),  # soft
        dsn(logs["c@x.example"], "delivered", "2.0.0", 3),
    ]


EXPECTED = {
    "a@x.example": ("failed", "hard"),
    "b@x.example": ("failed", "soft"),
    "c@x.example": ("sent", None),
    "d@x.example": ("pending", None),
}


def assert_counters_equal_recount(ctx: Context) -> None:
    live = detail_json(ctx, "promo")
    assert compute_stats(ctx, CLI, "promo").to_json() == live


# ---------------------------------------------------------------------- Maildir


@pytest.fixture
def maildir(settings: Settings, tmp_path: Path) -> mailbox.Maildir:
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    settings.feedback_mailbox_url = SecretStr(f"maildir://{tmp_path / 'bounces'}")
    return box


def files(path: Path) -> list[str]:
    return sorted(p.name for sub in ("new", "cur") for p in (path / sub).iterdir())


def test_maildir_bounces_are_applied_at_the_tick_then_removed_and_the_rest_set_aside(
    ctx: Context, logs: dict[str, SendingLog], maildir: mailbox.Maildir, tmp_path: Path
) -> None:
    first, second, third = bounces(logs)
    maildir.add(first)
    seen = mailbox.MaildirMessage(second)  # already looked at by a person: in cur/, flagged
    seen.set_subdir("cur")
    seen.add_flag("S")
    maildir.add(seen)
    maildir.add(third)
    maildir.add(AUTO_REPLY)
    maildir.add(b"\xff\xfe not a message at all \x00")

    report = tick(ctx, tmp_path).mailbox
    assert (report.read, report.events, report.applied, report.set_aside) == (5, 3, 3, 2)
    assert report.error is None
    assert statuses(ctx) == EXPECTED
    assert files(tmp_path / "bounces") == [], "what was stored is removed"
    kept = mailbox.Maildir(tmp_path / "bounces").get_folder("failed")
    assert sorted(kept.get_bytes(key) for key in kept.iterkeys()) == sorted(
        [AUTO_REPLY, b"\xff\xfe not a message at all \x00"]
    )
    assert tick(ctx, tmp_path).mailbox.read == 0, "set-aside messages are not read again"
    assert_counters_equal_recount(ctx)


def test_maildir_keeps_everything_when_storing_fails_and_never_applies_twice(
    ctx: Context,
    logs: dict[str, SendingLog],
    maildir: mailbox.Maildir,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for raw in bounces(logs):
        maildir.add(raw)
    before = files(tmp_path / "bounces")

    def database_down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    with monkeypatch.context() as m:
        m.setattr(feedback_mailbox, "ingest", database_down)
        report = read_feedback_mailbox(ctx)
    assert report.error and report.applied == 0
    assert files(tmp_path / "bounces") == before, "nothing removed before it is stored"
    assert statuses(ctx)["a@x.example"] == ("pending", None)

    def disk_error(self, keys):  # type: ignore[no-untyped-def]
        raise OSError("read-only file system")

    with monkeypatch.context() as m:  # stored, then the removal fails (or the process dies)
        m.setattr(MaildirSource, "remove", disk_error)
        report = read_feedback_mailbox(ctx)
    assert (report.applied, report.error) == (3, "read-only file system")
    assert files(tmp_path / "bounces") == before
    counted = detail_json(ctx, "promo")

    report = read_feedback_mailbox(ctx)  # read again: nothing applies twice
    assert (report.read, report.applied, report.duplicates) == (3, 0, 3)
    assert files(tmp_path / "bounces") == []
    assert detail_json(ctx, "promo") == counted
    assert statuses(ctx) == EXPECTED
    assert_counters_equal_recount(ctx)


def test_a_missing_maildir_is_reported_and_the_due_work_goes_on(
    ctx: Context, settings: Settings, logs: dict[str, SendingLog], tmp_path: Path
) -> None:
    settings.feedback_mailbox_url = SecretStr(f"maildir://{tmp_path / 'nowhere'}")
    report = tick(ctx, tmp_path)
    assert report.mailbox.error and "mailbox" in report.mailbox.error
    assert report.indicators_refreshed == 0 and report.expired_logs == 0


# ------------------------------------------------------------------------- IMAP


@pytest.fixture
def imap(settings: Settings) -> Iterator[ImapFolder]:
    folder = ImapFolder("bounces@shop.example", 'p@ss "word"', name="Bounces")
    server = ImapServer(folder).start()
    settings.feedback_mailbox_url = SecretStr(
        f"imap://bounces%40shop.example:p%40ss%20%22word%22@127.0.0.1:{server.port}/Bounces"
    )
    yield folder
    server.stop()


def test_imap_bounces_are_applied_then_expunged_and_the_rest_flagged_for_a_person(
    ctx: Context, logs: dict[str, SendingLog], imap: ImapFolder, tmp_path: Path
) -> None:
    uids = [imap.add(raw) for raw in bounces(logs)]
    auto_reply = imap.add(AUTO_REPLY)

    report = tick(ctx, tmp_path).mailbox
    assert (report.read, report.applied, report.set_aside, report.error) == (4, 3, 1, None)
    assert statuses(ctx) == EXPECTED
    assert imap.flags() == {auto_reply: {"\\Seen", "\\Flagged"}}, "only the auto-reply is left"
    assert not set(uids) & set(imap.flags())
    fetches = [c for c in imap.commands if c.startswith("UID FETCH")]
    # Sizes first, then the bodies, peeked (nothing marked \Seen before it is stored).
    assert [c.rsplit(" ", 1)[1] for c in fetches] == ["(RFC822.SIZE)", "(BODY.PEEK[])"]
    assert tick(ctx, tmp_path).mailbox.read == 0
    assert_counters_equal_recount(ctx)


def test_imap_messages_stay_unseen_until_stored(
    ctx: Context,
    logs: dict[str, SendingLog],
    imap: ImapFolder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for raw in bounces(logs):
        imap.add(raw)

    def database_down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    with monkeypatch.context() as m:
        m.setattr(feedback_mailbox, "ingest", database_down)
        report = read_feedback_mailbox(ctx)
    assert report.error and report.applied == 0
    assert imap.flags() == {1: set(), 2: set(), 3: set()}, "fetched with PEEK, not flagged"

    report = read_feedback_mailbox(ctx)
    assert (report.applied, report.error) == (3, None)
    assert imap.flags() == {}
    assert statuses(ctx) == EXPECTED


@pytest.mark.parametrize("uidplus", [True, False], ids=["uidplus", "plain"])
def test_imap_expunges_only_its_own_messages_where_the_server_allows(
    ctx: Context, settings: Settings, logs: dict[str, SendingLog], uidplus: bool
) -> None:
    folder = ImapFolder("u", "p", uidplus=uidplus)
    server = ImapServer(folder).start()
    try:
        settings.feedback_mailbox_url = SecretStr(f"imap://u:p@127.0.0.1:{server.port}/INBOX")
        for raw in bounces(logs):
            folder.add(raw)
        theirs = folder.add(AUTO_REPLY)
        with folder.lock:  # another client deleted it and has not expunged yet
            folder.messages[-1].flags.update({"\\Seen", "\\Deleted"})
        assert read_feedback_mailbox(ctx).applied == 3
        if uidplus:
            assert folder.flags() == {theirs: {"\\Seen", "\\Deleted"}}, "UID EXPUNGE spares it"
        else:
            assert folder.flags() == {}, "plain EXPUNGE removes every deleted message"
    finally:
        server.stop()


def test_imap_wrong_password_or_no_server_is_reported_not_raised(
    ctx: Context, settings: Settings, imap: ImapFolder
) -> None:
    url = settings.feedback_mailbox_url.get_secret_value()
    settings.feedback_mailbox_url = SecretStr(url.replace("p%40ss", "guess"))
    report = read_feedback_mailbox(ctx)
    assert report.error and "AUTHENTICATIONFAILED" in report.error
    assert "guess" not in report.error
    settings.feedback_mailbox_url = SecretStr("imap://u:p@127.0.0.1:9/INBOX")
    assert read_feedback_mailbox(ctx).error


def test_no_mailbox_configured_reads_nothing(ctx: Context) -> None:
    assert ctx.settings.feedback_mailbox is None
    report = read_feedback_mailbox(ctx)
    assert (report.read, report.error) == (0, None)
