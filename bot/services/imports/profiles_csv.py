"""Reading a profiles CSV file: every line checked, every problem listed, no database.

A header row names the columns; `email` is required; `first_name`, `last_name` and
`timezone` (an IANA name) are known columns; every other column becomes an attribute
usable in templates. A line with the wrong number of fields, no address, bytes that
are not UTF-8 or an unknown time zone is a bad line, reported with its number.

The file is read as a stream, a block of `BLOCK_BYTES` at a time, one row after the
other: the memory it takes does not grow with the file. So the problems are kept up to
`MAX_LISTED` (the rest counted), and whatever needs the whole file (an address twice,
two addresses that differ in letter case) is the caller's to find, in the database.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bot.services.imports.definitions import zone
from bot.services.imports.problems import MAX_LISTED, InputRejected, Problem

KNOWN = ("email", "first_name", "last_name", "timezone")
MAX_EMAIL = 320  # RFC 3696 limit, and the column's size
MAX_NAME = 200
MAX_WARNINGS = 100  # per kind; a 100,000-line file should not print 100,000 warnings
MAX_COLUMNS = 500  # a profile with more attributes than this is not a profile
MAX_COLUMN_NAME = 100
BLOCK_BYTES = 1 << 20  # read at a time: large enough to decode fast, small beside the budget
BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class ProfileRow:
    """One profile as the file gives it (after the checks of `ProfilesCsv`)."""

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


class ProfilesCsv:
    """One reading of a profiles file, row by row, in file order.

    The header is read (and checked) when the reader is made: InputRejected then, with
    the header's problems. Iterating gives the good rows; the bad ones are counted in
    `problem_total` and the first `MAX_LISTED` kept in `problems`, in line order, for
    `reject_bad_lines()` to raise once the whole file was read. `on_read(bytes)` is told
    how far into the file the reading is, a block at a time.
    """

    def __init__(
        self, name: str, source: BinaryIO, on_read: Callable[[int], None] | None = None
    ) -> None:
        self.name = name
        self.rows = 0  # data records, good or bad (blank lines are not records)
        self.problems: list[Problem] = []
        self.problem_total = 0
        self._source = source
        self._on_read = on_read
        self._bad_lines: set[int] = set()  # not UTF-8, and not yet passed by the reader
        self._records = _records(self._lines())
        self.columns = self._read_header()
        self.warnings = _attribute_name_warnings(name, self.columns)

    def __iter__(self) -> Iterator[ProfileRow]:
        columns = self.columns
        for start, end, fields in self._records:
            if not fields:
                continue  # a blank line
            self.rows += 1
            if self._bad_lines:
                bad = any(n in self._bad_lines for n in range(start, end + 1))
                self._bad_lines.difference_update(range(start, end + 1))
                if bad:
                    continue  # already reported as not UTF-8
            row = _row(self, columns, start, fields)
            if row is not None:
                yield row

    def problem(self, problem: Problem) -> None:
        self.problem_total += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)

    def reject_bad_lines(self) -> None:
        """InputRejected with the problems found, if any (call after reading every row)."""
        if self.problem_total:
            raise InputRejected(self.problems, total=self.problem_total)

    def _lines(self) -> Iterator[str]:
        """The file's lines as text, split as the csv module splits them (\\n, \\r, \\r\\n).

        A block is cut after its last complete line, so no character is cut in two; a
        line that is not UTF-8 becomes a problem with its number and is read replaced.
        """
        number = 0
        pending = b""
        read = 0
        first = True
        while True:
            block = self._source.read(BLOCK_BYTES)
            read += len(block)
            if first and block.startswith(BOM):
                block = block[len(BOM) :]
            first = False
            data = pending + block
            if block:
                end = len(data) - 1 if data.endswith(b"\r") else len(data)  # \r\n may follow
                cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end)) + 1
                data, pending = data[:cut], data[cut:]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:  # line by line, as the reader reaches each one
                for raw in data.splitlines(keepends=True):
                    number += 1
                    yield self._decoded(number, raw)
            else:
                lines = io.StringIO(text, newline="").readlines()
                number += len(lines)
                yield from lines
            if self._on_read is not None:
                self._on_read(read)
            if not block:
                return

    def _decoded(self, number: int, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._bad_lines.add(number)
            self.problem(
                Problem(
                    self.name,
                    f"line {number}",
                    None,
                    f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "save the file as UTF-8",
                )
            )
            return raw.decode("utf-8", errors="replace")

    def _read_header(self) -> _Columns:
        """The columns named by the first record, or InputRejected with every problem so far."""
        name = self.name
        try:
            first, _, header_fields = next(self._records)
        except StopIteration:
            self.problem(
                Problem(name, "line 1", None, "the file is empty; it needs a header row with email")
            )
            raise InputRejected(self.problems) from None
        if first in self._bad_lines:
            raise InputRejected(self.problems)
        if isinstance(header_fields, str):
            raise InputRejected([*self.problems, Problem(name, "line 1", None, header_fields)])
        columns, header_problems = _header(name, header_fields)
        if columns is None:
            raise InputRejected(self.problems + header_problems)
        return columns


def _records(lines: Iterable[str]) -> Iterator[tuple[int, int, list[str] | str]]:
    """(first line, last line, fields) of each CSV record; a quoted field may span lines.

    A record the csv module cannot read at all comes as its error message instead.
    """
    reader = csv.reader(lines, strict=False)
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


def _row(
    reader: ProfilesCsv, columns: _Columns, start: int, fields: list[str] | str
) -> ProfileRow | None:
    """One data record as a profile, or None with its problems told to the reader."""
    name = reader.name
    where = f"line {start}"
    if isinstance(fields, str):
        reader.problem(Problem(name, where, None, fields))
        return None
    if len(fields) != columns.count:
        reader.problem(
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
        reader.problem(Problem(name, where, "email", found))
        return None
    values = _known_values(reader, where, columns, fields)
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
    reader: ProfilesCsv, where: str, columns: _Columns, fields: list[str]
) -> dict[str, str | None] | None:
    """first_name, last_name and timezone as the record has them; None if one is bad."""
    values: dict[str, str | None] = {}
    ok = True
    for column, position in columns.known.items():
        value = fields[position].strip()
        if len(value) > MAX_NAME:
            reader.problem(
                Problem(reader.name, where, column, f"longer than {MAX_NAME} characters")
            )
            ok = False
        values[column] = value or None
    tz = values.get("timezone")
    if tz is not None:
        try:
            zone(tz)
        except ValueError as exc:
            reader.problem(Problem(reader.name, where, "timezone", str(exc)))
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


def parse_profiles(name: str, raw: bytes) -> tuple[dict[str, ProfileRow], list[Problem], int]:
    """The rows of a file held in memory, by exact address (the last of two wins), the
    header's warnings and the row count. Raises InputRejected listing the bad lines."""
    reader = ProfilesCsv(name, io.BytesIO(raw))
    rows = {row.email: row for row in reader}
    reader.reject_bad_lines()
    return rows, reader.warnings, reader.rows
