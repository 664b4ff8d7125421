"""Reading a profiles CSV file: every line checked, every problem listed, no database.

A header row names the columns; `email` is required; `first_name`, `last_name` and
`timezone` (an IANA name) are known columns; every other column becomes an attribute
usable in templates. A line with the wrong number of fields, no address, bytes that
are not UTF-8 or an unknown time zone is a bad line, reported with its number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from bot.services.imports.definitions import zone
from bot.services.imports.problems import InputRejected, Problem

KNOWN = ("email", "first_name", "last_name", "timezone")
MAX_EMAIL = 320  # RFC 3696 limit, and the column's size
MAX_NAME = 200
MAX_WARNINGS = 100  # per kind; a 100,000-line file should not print 100,000 warnings
MAX_COLUMNS = 500  # a profile with more attributes than this is not a profile
MAX_COLUMN_NAME = 100


@dataclass
class ProfileRow:
    """One profile as the file gives it (after the checks of `parse_profiles`)."""

    line: int
    email: str
    values: dict[str, str | None]  # first_name, last_name, timezone: only those in the file
    attributes: dict[str, str | None]  # every attribute column; None for an empty cell


@dataclass
class _Columns:
    email: int
    known: dict[str, int]  # first_name/last_name/timezone -> position
    attributes: dict[str, int]  # attribute name -> position
    count: int


def _decode(name: str, raw: bytes) -> tuple[str, list[Problem], set[int]]:
    """The text of the file; a line that is not UTF-8 is a problem with its number."""
    try:
        return raw.decode("utf-8-sig"), [], set()
    except UnicodeDecodeError:
        pass
    problems = []
    bad: set[int] = set()
    parts = []
    for number, line in enumerate(raw.splitlines(keepends=True), start=1):
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        try:
            parts.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad.add(number)
            problems.append(
                Problem(
                    name,
                    f"line {number}",
                    None,
                    f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                    "save the file as UTF-8",
                )
            )
            parts.append(line.decode("utf-8", errors="replace"))
    return "".join(parts), problems, bad


def _records(text: str) -> Iterator[tuple[int, int, list[str] | str]]:
    """(first line, last line, fields) of each CSV record; a quoted field may span lines.

    A record the csv module cannot read at all comes as its error message instead.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    last = 0
    while True:
        try:
            record: list[str] | str = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            record = f"not readable as CSV: {exc}"
        yield last + 1, reader.line_num, record
        last = reader.line_num


def _header(name: str, fields: list[str]) -> tuple[_Columns | None, list[Problem]]:
    if len(fields) > MAX_COLUMNS:
        reason = f"the header has {len(fields):,} columns; at most {MAX_COLUMNS} are read"
        return None, [Problem(name, "line 1", None, reason)]
    problems = []
    positions: dict[str, int] = {}
    for position, raw in enumerate(fields):
        column = raw.strip()
        if column.lower() in KNOWN:
            column = column.lower()
        if len(column) > MAX_COLUMN_NAME:
            problems.append(
                Problem(
                    name,
                    "line 1",
                    None,
                    f"column {position + 1} has a name of {len(column):,} characters; "
                    f"at most {MAX_COLUMN_NAME}",
                )
            )
        elif not column:
            problems.append(
                Problem(name, "line 1", None, f"column {position + 1} of the header has no name")
            )
        elif column in positions:
            problems.append(
                Problem(name, "line 1", column, "this column appears twice in the header")
            )
        positions.setdefault(column, position)
    if "email" not in positions:
        hint = ""
        if len(fields) == 1 and ";" in fields[0]:
            hint = " (the file seems to use ';' between fields: use commas)"
        problems.append(
            Problem(
                name,
                "line 1",
                "email",
                f"the header row has no email column{hint}; the first line must name the "
                "columns, like email,first_name,last_name,timezone",
            )
        )
    if problems:
        return None, problems
    known = {c: positions[c] for c in KNOWN[1:] if c in positions}
    attributes = {c: p for c, p in positions.items() if c not in KNOWN and c}
    return _Columns(positions["email"], known, attributes, len(fields)), []


def parse_profiles(name: str, raw: bytes) -> tuple[dict[str, ProfileRow], list[Problem], int]:
    """The rows by exact address (the last of two wins), warnings, and the row count.

    No database: this is the whole of the file's checking. Raises InputRejected
    listing every bad line.
    """
    text, problems, bad_lines = _decode(name, raw)
    records = _records(text)
    columns = _read_header(name, records, problems, bad_lines)
    warnings = _attribute_name_warnings(name, columns)
    rows: dict[str, ProfileRow] = {}
    count = repeated = 0
    for start, end, fields in records:
        if not fields:
            continue  # a blank line
        count += 1
        if bad_lines and any(n in bad_lines for n in range(start, end + 1)):
            continue  # already reported as not UTF-8
        row = _row(name, columns, start, fields, problems)
        if row is None:
            continue
        previous = rows.pop(row.email, None)
        if previous is not None:
            repeated += 1
            if repeated <= MAX_WARNINGS:
                warnings.append(
                    Problem(
                        name,
                        f"line {start}",
                        "email",
                        f"{row.email} is also on line {previous.line}; line {start} wins",
                    )
                )
        rows[row.email] = row
    if problems:
        problems.sort(key=lambda p: int(p.where.removeprefix("line ")))
        raise InputRejected(problems)
    if repeated > MAX_WARNINGS:
        warnings.append(
            Problem(name, "file", "email", f"… and {repeated - MAX_WARNINGS} more repeated")
        )
    warnings.extend(_case_warnings(name, rows))
    return rows, warnings, count


def _read_header(
    name: str,
    records: Iterator[tuple[int, int, list[str] | str]],
    problems: list[Problem],
    bad_lines: set[int],
) -> _Columns:
    """The columns named by the first record, or InputRejected with every problem so far."""
    try:
        first, _, header_fields = next(records)
    except StopIteration:
        problems.append(
            Problem(name, "line 1", None, "the file is empty; it needs a header row with email")
        )
        raise InputRejected(problems) from None
    if first in bad_lines:
        raise InputRejected(problems)
    if isinstance(header_fields, str):
        raise InputRejected([*problems, Problem(name, "line 1", None, header_fields)])
    columns, header_problems = _header(name, header_fields)
    if columns is None:
        raise InputRejected(problems + header_problems)
    return columns


def _row(
    name: str, columns: _Columns, start: int, fields: list[str] | str, problems: list[Problem]
) -> ProfileRow | None:
    """One data record as a profile, or None with its problems added to `problems`."""
    where = f"line {start}"
    if isinstance(fields, str):
        problems.append(Problem(name, where, None, fields))
        return None
    if len(fields) != columns.count:
        problems.append(
            Problem(
                name,
                where,
                None,
                f"expected {columns.count} fields (as in the header), found {len(fields)}",
            )
        )
        return None
    email = fields[columns.email].strip()
    found = _email_problem(email)
    if found:
        problems.append(Problem(name, where, "email", found))
        return None
    values = _known_values(name, where, columns, fields, problems)
    if values is None:
        return None
    attributes = {c: (fields[p].strip() or None) for c, p in columns.attributes.items()}
    return ProfileRow(start, email, values, attributes)


def _email_problem(email: str) -> str | None:
    if not email:
        return "the email is empty"
    if len(email) > MAX_EMAIL:
        return f"longer than {MAX_EMAIL} characters"
    return None


def _known_values(
    name: str, where: str, columns: _Columns, fields: list[str], problems: list[Problem]
) -> dict[str, str | None] | None:
    """first_name, last_name and timezone as the record has them; None if one is bad."""
    values: dict[str, str | None] = {}
    ok = True
    for column, position in columns.known.items():
        value = fields[position].strip()
        if len(value) > MAX_NAME:
            problems.append(Problem(name, where, column, f"longer than {MAX_NAME} characters"))
            ok = False
        values[column] = value or None
    tz = values.get("timezone")
    if tz is not None:
        try:
            zone(tz)
        except ValueError as exc:
            problems.append(Problem(name, where, "timezone", str(exc)))
            ok = False
    return values if ok else None


def _attribute_name_warnings(name: str, columns: _Columns) -> list[Problem]:
    odd = [column for column in columns.attributes if not column.isidentifier()]
    warnings = [
        Problem(
            name,
            "line 1",
            column,
            f"{column!r} is not a name a template can use directly; templates reach it "
            f"as profile[{column!r}]",
        )
        for column in odd[:MAX_WARNINGS]
    ]
    if len(odd) > MAX_WARNINGS:
        more = f"… and {len(odd) - MAX_WARNINGS} more such column names"
        warnings.append(Problem(name, "line 1", None, more))
    return warnings


def _case_warnings(name: str, rows: dict[str, ProfileRow]) -> list[Problem]:
    """Addresses that differ only in letter case: both kept, one sent to at preparation."""
    first: dict[str, ProfileRow] = {}
    warnings: list[Problem] = []
    extra = 0
    for row in rows.values():
        key = row.email.lower()
        other = first.setdefault(key, row)
        if other is row:
            continue
        if len(warnings) < MAX_WARNINGS:
            warnings.append(
                Problem(
                    name,
                    f"line {row.line}",
                    "email",
                    f"{row.email} differs from {other.email} (line {other.line}) only in "
                    "letter case; both are kept, and preparation sends to one of them",
                )
            )
        else:
            extra += 1
    if extra:
        warnings.append(Problem(name, "file", "email", f"… and {extra} more such addresses"))
    return warnings
