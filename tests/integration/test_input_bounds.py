"""Hostile files and messages cost bounded time and memory, and say what is wrong.

A 1 KB YAML of nested aliases, a CSV of countless odd column names, a bounce nested
thousands of levels deep, a 50 MB message in the bounce mailbox: each is refused or
set aside with its reason, through the real imports, endpoint and mailbox reader.
"""

from __future__ import annotations

import http.client
import json
import mailbox
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import LiveApp
from imap_server import ImapFolder, ImapServer
from pydantic import SecretStr
from scenario import CLI

from bot.context import Context
from bot.feedback import dsn, generic
from bot.services.imports.deliveries import MAX_FILE_BYTES, import_deliveries
from bot.services.imports.problems import MAX_LISTED, InputRejected
from bot.services.imports.profiles import import_profiles
from bot.services.imports.profiles_csv import MAX_COLUMNS, MAX_WARNINGS
from bot.services.outcomes.mailbox import MAX_MESSAGE_BYTES, read_feedback_mailbox

SECRET = "test-feedback-secret"

LAUGHS = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_yaml_aliases_are_refused_before_anything_expands_them(
    ctx: Context, tmp_path: Path
) -> None:
    path = tmp_path / "d.yml"
    path.write_text(LAUGHS + "- ref: x\n  name: *i\n")
    assert len(path.read_bytes()) < 1024
    with pytest.raises(InputRejected) as caught:
        import_deliveries(ctx, CLI, path)
    (problem,) = caught.value.problems
    assert problem.where == "line 2" and "aliases (*name) are not allowed" in problem.reason


def test_a_deliveries_file_is_bounded_in_size(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "d.yml"
    path.write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    with pytest.raises(InputRejected, match="larger than"):
        import_deliveries(ctx, CLI, path)


def test_too_many_columns_are_refused_and_odd_names_warned_about_a_bounded_number_of_times(
    ctx: Context, tmp_path: Path
) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("email," + ",".join(f"c {i}" for i in range(1_000_000)) + "\n")
    with pytest.raises(InputRejected) as caught:
        import_profiles(ctx, CLI, wide, "all")
    assert caught.value.total == 1
    assert f"at most {MAX_COLUMNS} are read" in caught.value.problems[0].reason

    odd = tmp_path / "odd.csv"
    names = [f"c {i}" for i in range(MAX_COLUMNS - 1)]
    odd.write_text("email," + ",".join(names) + "\na@x.example" + "," * len(names) + "\n")
    report = import_profiles(ctx, CLI, odd, "all")
    assert report.created == 1
    assert len(report.warnings) == MAX_WARNINGS + 1
    assert report.warnings[-1].reason == f"… and {len(names) - MAX_WARNINGS} more such column names"


def test_a_file_of_a_million_bad_lines_lists_a_bounded_number_of_problems(
    ctx: Context, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("email\n" + "a@x.example,extra\n" * 200_000)
    with pytest.raises(InputRejected) as caught:
        import_profiles(ctx, CLI, path, "all")
    assert caught.value.total == 200_000 and len(caught.value.problems) == MAX_LISTED
    assert str(caught.value).count("\n") == MAX_LISTED + 1
    assert str(caught.value).endswith(f"… and {200_000 - MAX_LISTED} more; fix these first")


def deep_bounce(levels: int) -> bytes:
    parts = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(levels)
    )
    return ("From: MAILER-DAEMON@mx.example\nSubject: x\nMIME-Version: 1.0\n" + parts).encode()


@pytest.fixture
def app(ctx: Context) -> Iterator[LiveApp]:
    live = LiveApp(ctx, start_sender=False).start()
    yield live
    live.stop()


def test_a_bounce_nested_5000_deep_is_a_400_not_a_500(app: LiveApp) -> None:
    raw = deep_bounce(5000)
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    conn.request(
        "POST",
        "/feedback/dsn",
        body=raw,
        headers={"X-Greenlight-Signature": generic.sign(raw, SECRET)},
    )
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 400 and "nested too deeply" in body["error"]


def test_a_huge_message_in_the_bounce_mailbox_is_set_aside_unread(
    ctx: Context, tmp_path: Path
) -> None:
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    key = box.add(b"Subject: big\n\n" + b"x" * (50 * 1024 * 1024))
    small = box.add(deep_bounce(3))
    reading = ctx.with_settings(feedback_mailbox_url=SecretStr(f"maildir://{tmp_path / 'bounces'}"))
    report = read_feedback_mailbox(reading)
    assert (report.read, report.set_aside, report.error) == (2, 2, None)
    failed = box.get_folder("failed")
    assert sorted(len(m.as_bytes()) > MAX_MESSAGE_BYTES for m in failed) == [False, True]
    assert key not in box and small not in box


def test_the_imap_reader_never_downloads_a_message_over_the_bound(
    ctx: Context, tmp_path: Path
) -> None:
    folder = ImapFolder("bounces@shop.example", "pw", name="Bounces")
    server = ImapServer(folder).start()
    try:
        big = folder.add(b"Subject: big\n\n" + b"x" * (MAX_MESSAGE_BYTES + 1))
        reading = ctx.with_settings(
            feedback_mailbox_url=SecretStr(
                f"imap://bounces%40shop.example:pw@127.0.0.1:{server.port}/Bounces"
            )
        )
        report = read_feedback_mailbox(reading)
    finally:
        server.stop()
    assert (report.read, report.set_aside) == (1, 1)
    assert folder.flags() == {big: {"\\Seen", "\\Flagged"}}
    assert not [c for c in folder.commands if "BODY" in c], "only its size was asked"


def test_parsing_is_bounded_in_depth_and_parts() -> None:
    assert dsn.parse_bounce_message(deep_bounce(dsn.MAX_DEPTH + 5)) == []
