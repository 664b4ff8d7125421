"""`profiles import`: all or nothing, idempotent, every bad line named, audiences kept current.

examples/profiles.csv holds 300 data rows (examples/README.md): 293 distinct valid
addresses, 4 case variants of 4 of those (`Paula.michel532@EXAMPLE.COM` next to
`paula.michel532@example.com`), and 3 syntactically invalid addresses. All 300 become
profiles; preparation later excludes 3 as invalid and 4 as duplicates.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenario import CLI, as_user
from sqlalchemy import select, text

from bot.clock import FixedClock
from bot.context import Context
from bot.domain.errors import NotFound
from bot.domain.roles import Role
from bot.services.imports.problems import InputRejected, Problem
from bot.services.imports.profiles import CHUNK, import_profiles, parse_profiles
from bot.services.imports.profiles_csv import BLOCK_BYTES, MAX_WARNINGS
from bot.store.models import Audience, AudienceMember, AuditEntry, Delivery, Profile

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HEADER = "email,first_name,last_name,timezone,plan\n"


def write(tmp_path: Path, content: str | bytes, name: str = "profiles.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def snapshot(ctx: Context) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables an import writes (the audit log aside), in a fixed order."""
    tables = {
        "profiles": "SELECT id, email, email_key, first_name, last_name, timezone, attributes, "
        "email_status, error_count, created_at, updated_at FROM profiles ORDER BY id",
        "audiences": "SELECT id, name, version, created_at, updated_at FROM audiences ORDER BY id",
        "members": "SELECT audience_id, profile_id FROM audience_members "
        "ORDER BY audience_id, profile_id",
        "deliveries": "SELECT id, ref, state, updated_at FROM deliveries ORDER BY id",
    }
    with ctx.sessions() as conn:
        return {
            name: [tuple(str(v) for v in row) for row in conn.execute(text(query))]
            for name, query in tables.items()
        }


def profiles(ctx: Context) -> dict[str, Profile]:
    with ctx.sessions() as s:
        return {p.email: p for p in s.scalars(select(Profile))}


def add_delivery(ctx: Context, audience: str, ref: str, state: str) -> None:
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        audience_id = s.scalar(select(Audience.id).where(Audience.name == audience))
        s.add(
            Delivery(
                ref=ref,
                name=ref,
                audience_id=audience_id,
                sender="news@example.com",
                subject="Hello",
                text="Hello",
                validity_seconds=3600,
                state=state,
                definition_hash="0" * 64,
                created_at=now,
                updated_at=now,
            )
        )


def delivery_state(ctx: Context, ref: str) -> str:
    with ctx.sessions() as s:
        return s.scalars(select(Delivery.state).where(Delivery.ref == ref)).one()


# The example file ---------------------------------------------------------------------


def test_example_file_imports_every_row(ctx: Context) -> None:
    report = import_profiles(ctx, CLI, EXAMPLES / "profiles.csv", "newsletter")

    assert (report.rows, report.created, report.updated, report.unchanged) == (300, 300, 0, 0)
    assert report.members_added == 300
    assert report.audience_created and report.audience_version == 1
    assert report.invalid_addresses == 3
    stored = profiles(ctx)
    assert len(stored) == 300
    assert len({p.email_key for p in stored.values()}) == 296
    assert {"not-an-email", "a@@example.com", "bob smith@example.com"} <= set(stored)
    case_warnings = [w for w in report.warnings if "only in letter case" in w.reason]
    invalid_warnings = [w for w in report.warnings if "not a valid address" in w.reason]
    assert len(case_warnings) == 4 and len(invalid_warnings) == 3
    assert stored["paula.michel532@example.com"].email_key == "paula.michel532@example.com"
    assert stored["Paula.michel532@EXAMPLE.COM"].email_key == "paula.michel532@example.com"


def test_reimport_changes_nothing(ctx: Context, clock: FixedClock) -> None:
    import_profiles(ctx, CLI, EXAMPLES / "profiles.csv", "newsletter")
    before = snapshot(ctx)
    clock.advance(timedelta(hours=1))

    report = import_profiles(ctx, CLI, EXAMPLES / "profiles.csv", "newsletter")

    assert (report.rows, report.created, report.updated, report.unchanged) == (300, 0, 0, 300)
    assert report.members_added == 0 and not report.audience_created
    assert report.audience_version == 1
    assert report.invalid_addresses == 3  # the same three as the first import: they are kept
    assert snapshot(ctx) == before


# All or nothing -----------------------------------------------------------------------


def test_a_file_with_bad_lines_changes_nothing_and_lists_every_one(
    ctx: Context, tmp_path: Path
) -> None:
    good = write(tmp_path, HEADER + "ann@example.com,Ann,Lee,Europe/Paris,pro\n", "good.csv")
    import_profiles(ctx, CLI, good, "newsletter")
    before = snapshot(ctx)
    long_email = "x" * 310 + "@example.com"
    bad = write(
        tmp_path,
        (HEADER + "ann@example.com,Annie,Lee,Europe/Paris,team\n").encode()  # line 2: fine
        + b"bob@example.com,Bob,Stone,Europe/Paris\n"  # line 3: 4 fields
        + b"cara@example.com,Cara,Diaz,,free\n"  # line 4: fine
        + b" ,Dan,Eve,,free\n"  # line 5: empty email
        + b"eve@example.com,\xe9ve,Fox,,free\n"  # line 6: Latin-1, not UTF-8
        + b"finn@example.com,Finn,Gray,Europe/Pariss,free\n"  # line 7: unknown zone
        + f"{long_email},Gus,Hill,,free\n".encode(),  # line 8: too long
        "bad.csv",
    )

    with pytest.raises(InputRejected) as caught:
        import_profiles(ctx, CLI, bad, "newsletter")

    name = str(bad)
    assert caught.value.problems == [
        Problem(name, "line 3", None, "expected 5 fields (as in the header), found 4"),
        Problem(name, "line 5", "email", "the email is empty"),
        Problem(
            name,
            "line 6",
            None,
            "not UTF-8 text (byte 0xe9 at column 17); save the file as UTF-8",
        ),
        Problem(
            name,
            "line 7",
            "timezone",
            "'Europe/Pariss' is not a known time zone; use an IANA name like Europe/Paris",
        ),
        Problem(name, "line 8", "email", "longer than 320 characters"),
    ]
    assert "nothing was imported; fix 5 problems" in str(caught.value)
    assert snapshot(ctx) == before


def test_header_must_name_an_email_column(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, "mail;first_name\nann@example.com;Ann\n")
    with pytest.raises(InputRejected) as caught:
        import_profiles(ctx, CLI, path)
    (problem,) = caught.value.problems
    assert (problem.where, problem.field) == ("line 1", "email")
    assert "use commas" in problem.reason

    empty = write(tmp_path, "", "empty.csv")
    with pytest.raises(InputRejected, match="the file is empty"):
        import_profiles(ctx, CLI, empty)
    assert profiles(ctx) == {}


def test_a_missing_file_is_named(ctx: Context, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"no file at .*nowhere\.csv"):
        import_profiles(ctx, CLI, tmp_path / "nowhere.csv")


def test_a_quoted_field_may_span_lines_and_line_numbers_follow(
    ctx: Context, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        'email,note\nann@example.com,"two\nlines"\n\nbob@example.com,a,b\n',
    )
    with pytest.raises(InputRejected) as caught:
        import_profiles(ctx, CLI, path)
    assert [p.where for p in caught.value.problems] == ["line 5"]


# What a row does ----------------------------------------------------------------------


def test_byte_order_mark_and_header_case_are_accepted(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffEmail,First_Name,Plan\nann@example.com,Ann,pro\n".encode())
    report = import_profiles(ctx, CLI, path)
    assert report.created == 1
    ann = profiles(ctx)["ann@example.com"]
    assert (ann.first_name, ann.attributes) == ("Ann", {"Plan": "pro"})


def test_invalid_address_is_kept_for_preparation_to_exclude(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "not-an-email,Nina,Nobody,,free\na@@b,Ada,Twice,,pro\n")
    report = import_profiles(ctx, CLI, path)
    assert report.created == 2 and report.invalid_addresses == 2
    assert set(profiles(ctx)) == {"not-an-email", "a@@b"}
    assert [w.where for w in report.warnings] == ["line 2", "line 3"]


def test_case_variants_are_separate_profiles(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "Ann@Example.com,Ann,,,\nann@example.com,Annie,,,\n")
    report = import_profiles(ctx, CLI, path)
    stored = profiles(ctx)
    assert report.created == 2
    assert {p.email_key for p in stored.values()} == {"ann@example.com"}
    assert stored["Ann@Example.com"].first_name == "Ann"
    assert stored["ann@example.com"].first_name == "Annie"
    (warning,) = report.warnings
    assert warning.where == "line 3" and "line 2" in warning.reason


def test_same_address_twice_the_later_row_wins_with_a_warning(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "ann@example.com,Ann,,,free\nann@example.com,Annie,,,pro\n")
    report = import_profiles(ctx, CLI, path)
    assert (report.rows, report.created) == (2, 1)
    ann = profiles(ctx)["ann@example.com"]
    assert (ann.first_name, ann.attributes) == ("Annie", {"plan": "pro"})
    (warning,) = report.warnings
    assert warning.where == "line 3"
    assert warning.reason == "ann@example.com is also on line 2; line 3 wins"


def test_the_file_decides_only_the_columns_it_has(
    ctx: Context, tmp_path: Path, clock: FixedClock
) -> None:
    first = write(
        tmp_path, "email,first_name,plan,city\nann@example.com,Ann,pro,Lyon\n", "first.csv"
    )
    import_profiles(ctx, CLI, first)
    created_at = profiles(ctx)["ann@example.com"].created_at
    clock.advance(timedelta(minutes=5))

    # No first_name column: the name stays. An empty plan removes the attribute.
    second = write(tmp_path, "email,plan,tier\nann@example.com,,gold\n", "second.csv")
    report = import_profiles(ctx, CLI, second)

    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)
    ann = profiles(ctx)["ann@example.com"]
    assert ann.first_name == "Ann"
    assert ann.attributes == {"city": "Lyon", "tier": "gold"}
    assert ann.created_at == created_at
    assert ann.updated_at == clock.now()


def test_import_never_touches_email_status_or_error_counters(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "ann@example.com,Ann,,,free\n")
    import_profiles(ctx, CLI, path)
    last_error = ctx.clock.now() - timedelta(days=1)
    with ctx.sessions.begin() as s:
        ann = s.scalars(select(Profile)).one()
        ann.email_status, ann.error_count, ann.last_counted_error_at = "quarantine", 5, last_error

    import_profiles(ctx, CLI, write(tmp_path, HEADER + "ann@example.com,Annie,,,pro\n"))

    ann = profiles(ctx)["ann@example.com"]
    assert ann.first_name == "Annie"
    assert (ann.email_status, ann.error_count) == ("quarantine", 5)
    assert ann.last_counted_error_at == last_error


# Audiences ----------------------------------------------------------------------------


def test_audience_membership_is_additive_and_a_change_sends_ready_deliveries_back(
    ctx: Context, tmp_path: Path
) -> None:
    first = write(tmp_path, HEADER + "ann@example.com,Ann,,,\nbob@example.com,Bob,,,\n", "1.csv")
    import_profiles(ctx, CLI, first, "newsletter")
    import_profiles(ctx, CLI, first, "vip")
    add_delivery(ctx, "newsletter", "spring-sale", "ready")
    add_delivery(ctx, "newsletter", "draft", "editing")
    add_delivery(ctx, "newsletter", "sent-one", "finished")
    add_delivery(ctx, "vip", "vip-sale", "ready")

    # Same members: nothing moves.
    report = import_profiles(ctx, CLI, first, "newsletter")
    assert (report.members_added, report.audience_version, report.back_to_editing) == (0, 1, [])
    assert delivery_state(ctx, "spring-sale") == "ready"

    # One new member (bob is already in): version 2, the ready delivery must be prepared again.
    second = write(tmp_path, HEADER + "bob@example.com,Bob,,,\ncara@example.com,Cara,,,\n", "2.csv")
    report = import_profiles(ctx, CLI, second, "newsletter")

    assert report.members_added == 1
    assert report.audience_version == 2
    assert report.back_to_editing == ["spring-sale"]
    assert delivery_state(ctx, "spring-sale") == "editing"
    assert delivery_state(ctx, "draft") == "editing"
    assert delivery_state(ctx, "sent-one") == "finished"
    assert delivery_state(ctx, "vip-sale") == "ready"  # another audience
    with ctx.sessions() as s:
        members = s.scalars(
            select(Profile.email)
            .join(AudienceMember, AudienceMember.profile_id == Profile.id)
            .join(Audience, Audience.id == AudienceMember.audience_id)
            .where(Audience.name == "newsletter")
        ).all()
    assert sorted(members) == ["ann@example.com", "bob@example.com", "cara@example.com"]


def test_one_audit_entry_per_import(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "ann@example.com,Ann,,,\n")
    import_profiles(ctx, as_user("U012AB3CD", list(Role)), path, "newsletter")
    import_profiles(ctx, CLI, path)
    with ctx.sessions() as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.actor, e.action, e.subject_kind, e.subject_ref) for e in entries] == [
        ("U012AB3CD", "profiles.import", "audience", "newsletter"),
        ("cli", "profiles.import", "profiles", "profiles.csv"),
    ]
    assert entries[0].detail["created"] == 1 and entries[0].detail["members_added"] == 1
    assert entries[1].detail["unchanged"] == 1


def test_a_bad_audience_name_is_refused(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "ann@example.com,Ann,,,\n")
    with pytest.raises(InputRejected, match="audience name"):
        import_profiles(ctx, CLI, path, "   ")
    assert profiles(ctx) == {}


# The CSV round trip, without a database -------------------------------------------------

cell = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.tuples(cell, cell), min_size=1, max_size=8))
def test_attribute_values_survive_the_csv_round_trip(values: list[tuple[str, str]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["email", "plan", "note"])
    for i, (plan, note) in enumerate(values):
        writer.writerow([f"user{i}@example.com", plan, note])

    rows, _, count = parse_profiles("t.csv", buffer.getvalue().encode("utf-8"))

    assert count == len(values)
    for i, (plan, note) in enumerate(values):
        row = rows[f"user{i}@example.com"]
        assert row.attributes == {"plan": plan.strip() or None, "note": note.strip() or None}


# Files larger than a chunk --------------------------------------------------------------
#
# An import reads its file as a stream and writes it CHUNK rows at a time; what needs the
# whole file (an address twice, case variants, a bad line anywhere) is found across chunks.


def rows_csv(count: int, start: int = 0, plan: str = "free") -> str:
    return "".join(f"u{i:06d}@example.com,F{i},L{i},,{plan}\n" for i in range(start, count))


def test_an_address_again_in_a_later_chunk_is_one_profile_and_the_later_line_wins(
    ctx: Context, tmp_path: Path
) -> None:
    total = 2 * CHUNK + 50
    body = rows_csv(total).splitlines(keepends=True)
    body[CHUNK + 10] = "u000000@example.com,Again,L0,,pro\n"  # line CHUNK + 12, chunk 2
    body[2 * CHUNK + 3] = "u000000@example.com,Third,L0,,team\n"  # line 2 CHUNK + 5, chunk 3
    body[7] = "U000001@EXAMPLE.com,Case,L1,,free\n"  # line 9: a case variant in chunk 1
    body[CHUNK + 30] = "u000001@example.com,F1,L1,,free\n"  # line CHUNK + 32: again, later
    path = write(tmp_path, HEADER + "".join(body))

    report = import_profiles(ctx, CLI, path, "all")

    distinct = total - 4 + 1  # four lines replaced; the case variant is an address of its own
    assert (report.rows, report.created, report.updated, report.unchanged) == (
        total,
        distinct,
        0,
        0,
    )
    assert report.members_added == distinct
    stored = profiles(ctx)
    assert len(stored) == distinct
    assert (stored["u000000@example.com"].first_name, stored["u000000@example.com"].attributes) == (
        "Third",
        {"plan": "team"},
    )
    assert [(w.where, w.reason) for w in report.warnings] == [
        (
            f"line {CHUNK + 12}",
            f"u000000@example.com is also on line 2; line {CHUNK + 12} wins",
        ),
        (
            f"line {CHUNK + 32}",
            f"u000001@example.com is also on line 3; line {CHUNK + 32} wins",
        ),
        (
            f"line {2 * CHUNK + 5}",
            f"u000000@example.com is also on line {CHUNK + 12}; line {2 * CHUNK + 5} wins",
        ),
        (
            f"line {CHUNK + 32}",
            "u000001@example.com differs from U000001@EXAMPLE.com (line 9) only in letter "
            "case; both are kept, and preparation sends to one of them",
        ),
    ]


def test_a_repeated_address_that_ends_as_it_was_is_unchanged_and_keeps_its_dates(
    ctx: Context, tmp_path: Path, clock: FixedClock
) -> None:
    first = write(tmp_path, HEADER + rows_csv(CHUNK + 10), "first.csv")
    import_profiles(ctx, CLI, first, "all")
    before = snapshot(ctx)
    clock.advance(timedelta(hours=1))
    # The same file, but line 2's address first gets other values, then (in the second
    # chunk) the values it already has: it ends unchanged, and so does everything.
    body = HEADER + "u000000@example.com,Other,Name,,pro\n" + rows_csv(CHUNK + 10)
    again = write(tmp_path, body, "again.csv")

    report = import_profiles(ctx, CLI, again, "all")

    assert (report.rows, report.created, report.updated, report.unchanged) == (
        CHUNK + 11,
        0,
        0,
        CHUNK + 10,
    )
    assert report.members_added == 0 and report.audience_version == 1
    assert snapshot(ctx) == before


def test_a_reimport_of_a_file_of_several_chunks_changes_nothing(
    ctx: Context, tmp_path: Path, clock: FixedClock
) -> None:
    path = write(tmp_path, HEADER + rows_csv(2 * CHUNK + 1))
    created = import_profiles(ctx, CLI, path, "all")
    assert (created.created, created.members_added) == (2 * CHUNK + 1, 2 * CHUNK + 1)
    before = snapshot(ctx)
    clock.advance(timedelta(hours=1))

    report = import_profiles(ctx, CLI, path, "all")

    assert (report.created, report.updated, report.unchanged) == (0, 0, 2 * CHUNK + 1)
    assert (report.members_added, report.audience_version) == (0, 1)
    assert snapshot(ctx) == before

    # One new row and one changed row, each in a different chunk: counted once each.
    grown = write(
        tmp_path,
        HEADER
        + rows_csv(CHUNK + 3)
        + "u005003@example.com,Changed,L5003,,free\n"
        + rows_csv(2 * CHUNK + 2, CHUNK + 4),
        "grown.csv",
    )
    report = import_profiles(ctx, CLI, grown, "all")
    assert (report.created, report.updated, report.unchanged) == (1, 1, 2 * CHUNK)
    assert (report.members_added, report.audience_version) == (1, 2)


@pytest.mark.parametrize("bad_line", [CHUNK + 1, CHUNK + 2, 2 * CHUNK + 1])
def test_a_bad_line_on_a_chunk_boundary_changes_nothing(
    ctx: Context, tmp_path: Path, bad_line: int
) -> None:
    """Line CHUNK + 1 is the last row of the first chunk, CHUNK + 2 the first of the
    second, 2 CHUNK + 1 the file's last line: chunks already staged are not kept."""
    import_profiles(ctx, CLI, write(tmp_path, HEADER + rows_csv(3), "small.csv"), "all")
    before = snapshot(ctx)
    body = rows_csv(2 * CHUNK).splitlines(keepends=True)
    body[bad_line - 2] = "nobody@example.com,too,few\n"
    path = write(tmp_path, HEADER + "".join(body))

    with pytest.raises(InputRejected) as caught:
        import_profiles(ctx, CLI, path, "all")

    assert [p.where for p in caught.value.problems] == [f"line {bad_line}"]
    assert snapshot(ctx) == before
    # The connection's staged lines went with the transaction: the next import is whole.
    report = import_profiles(ctx, CLI, write(tmp_path, HEADER + rows_csv(5), "next.csv"), "all")
    assert (report.created, report.unchanged, report.members_added) == (2, 3, 2)


def test_invalid_addresses_are_counted_over_every_chunk_and_listed_up_to_the_bound(
    ctx: Context, tmp_path: Path
) -> None:
    invalid = "".join(f"bad{i}@@example.com,B,,,free\n" for i in range(MAX_WARNINGS + 20))
    path = write(tmp_path, HEADER + rows_csv(CHUNK - 10) + invalid + rows_csv(CHUNK, CHUNK))

    report = import_profiles(ctx, CLI, path)

    assert report.invalid_addresses == MAX_WARNINGS + 20
    listed = [w for w in report.warnings if "not a valid address" in w.reason]
    assert len(listed) == MAX_WARNINGS and listed[0].where == f"line {CHUNK - 8}"
    assert report.warnings[-1].reason == "… and 20 more"


def test_lines_are_numbered_across_the_blocks_of_a_large_file() -> None:
    """The reader takes the file BLOCK_BYTES at a time: a \\r\\n cut by a block's end is
    one line end, and a bad line in a later block keeps its number."""
    header = b"email,note\r\n"
    filler = b"a@example.com,x\r\n"
    count = (BLOCK_BYTES - len(header) - 16) // len(filler)
    pad = BLOCK_BYTES - len(header) - count * len(filler) - 15
    # The block ends between the \r and the \n of the line after the filler.
    content = header + filler * count + b"b@example.com," + b"y" * pad + b"\r"
    assert len(content) == BLOCK_BYTES
    content += b"\n" + "c@example.com,é\r\n".encode() + b"d@example.com,\xe9\r\n"
    content += b"e@example.com,one,two\r\n"
    line_b = count + 2

    with pytest.raises(InputRejected) as caught:
        parse_profiles("t.csv", content)

    assert [(p.where, p.reason[:12]) for p in caught.value.problems] == [
        (f"line {line_b + 2}", "not UTF-8 te"),
        (f"line {line_b + 3}", "expected 2 f"),
    ]
    rows, _, count_rows = parse_profiles("t.csv", content.rsplit(b"d@", 1)[0])
    assert count_rows == count + 2 and rows["c@example.com"].line == line_b + 1
    assert rows["b@example.com"].attributes == {"note": "y" * pad}
