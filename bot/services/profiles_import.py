"""`profiles import FILE.csv [--audience NAME]`: create or update profiles, all or nothing.

Profiles are keyed by their exact address. `Alice@Example.com` and `alice@example.com`
are two profiles: the SPEC makes preparation keep one and exclude the other as a
duplicate, which it can only do (and log) if both exist. A syntactically invalid
address is kept for the same reason: preparation excludes it as "invalid address".

The file is the truth for the columns it has, and only those: a column that is not in
the file leaves that field alone, and an empty cell in a column that is there clears
it (an attribute is removed). Quarantine status and error counters are never touched.

A file with any bad line changes nothing; the error lists every bad line. Importing
the same file twice changes nothing the second time (no `updated_at` moves).

Written for volume: existing profiles are read in a few queries, new ones inserted
and changed ones updated with one executemany each, so 100,000 rows take seconds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Text, bindparam, cast, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.lifecycle import Action, DeliveryState, transition
from bot.domain.quarantine import EmailStatus
from bot.services import audit
from bot.services.definitions import zone
from bot.services.errors import InputRejected, NotFound, Problem
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import Audience, AudienceMember, Delivery, Profile

KNOWN = ("email", "first_name", "last_name", "timezone")
MAX_EMAIL = 320  # RFC 3696 limit, and the column's size
MAX_NAME = 200
MAX_AUDIENCE_NAME = 200
MAX_WARNINGS = 100  # per kind; a 100,000-line file should not print 100,000 warnings
CHUNK = 5000  # bound parameters per lookup query (well under SQLite's limit)


class ConcurrentImport(DomainError):
    """Two imports raced on the same new address; the loser changed nothing."""


@dataclass
class ProfilesImportReport:
    """What an import did. `rows` counts data lines; each distinct address is exactly
    one of created, updated or unchanged (an address twice in the file counts once)."""

    file: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    members_added: int = 0
    audience: str | None = None
    audience_created: bool = False
    audience_version: int | None = None
    invalid_addresses: int = 0  # among created profiles; kept, excluded at preparation
    back_to_editing: list[str] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


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


def import_profiles(
    ctx: Context,
    path: str | Path,
    audience: str | None = None,
    actor: str = "cli",
) -> ProfilesImportReport:
    """Create or update the profiles of the CSV at `path`, or none of them.

    With `audience`, the audience is created if missing and the file's profiles are
    added to it. Membership is additive: profiles already in the audience that are not
    in the file stay in it. When membership changes, the audience's version goes up and
    its deliveries that were ready go back to editing (they must be prepared again).

    Raises InputRejected listing every bad line; nothing is written then.
    """
    path = Path(path)
    name = str(path)
    if audience is not None:
        audience = _check_audience_name(name, audience)
    rows, warnings, line_count = parse_profiles(name, read_input(path))
    report = ProfilesImportReport(file=name, rows=line_count, audience=audience)
    report.warnings = warnings
    try:
        with ctx.sessions.begin() as session:
            ids = _upsert_profiles(
                session, ctx.clock.now(), rows, report, want_ids=audience is not None
            )
            if audience is not None:
                _add_members(session, ctx.clock.now(), audience, ids, report)
            audit.record(
                session,
                ctx.clock,
                actor=actor,
                action="profiles.import",
                subject_kind="audience" if audience else "profiles",
                subject_ref=(audience or path.name)[:120],
                detail={
                    "file": name,
                    "rows": report.rows,
                    "created": report.created,
                    "updated": report.updated,
                    "unchanged": report.unchanged,
                    "members_added": report.members_added,
                    "audience_version": report.audience_version,
                    "back_to_editing": report.back_to_editing,
                },
            )
    except IntegrityError as exc:
        raise ConcurrentImport(
            "another import changed some of these profiles or this audience at the same "
            "moment; nothing of this one was applied: run it again"
        ) from exc
    return report


def read_input(path: Path) -> bytes:
    """The bytes of an input file, or NotFound saying which path was looked for."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"no file at {path}; give the path of the file to import") from None


def _check_audience_name(file: str, audience: str) -> str:
    cleaned = audience.strip()
    if not cleaned or len(cleaned) > MAX_AUDIENCE_NAME:
        raise InputRejected(
            [
                Problem(
                    file,
                    "--audience",
                    None,
                    f"an audience name has 1 to {MAX_AUDIENCE_NAME} characters",
                )
            ]
        )
    return cleaned


# Reading the file ----------------------------------------------------------------------


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
    problems = []
    positions: dict[str, int] = {}
    for position, raw in enumerate(fields):
        column = raw.strip()
        if column.lower() in KNOWN:
            column = column.lower()
        if not column:
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

    warnings = _attribute_name_warnings(name, columns)
    rows: dict[str, ProfileRow] = {}
    count = 0
    repeated = 0
    known_items = list(columns.known.items())
    attribute_items = list(columns.attributes.items())
    tz_position = columns.known.get("timezone")
    for start, end, fields in records:
        if not fields:
            continue  # a blank line
        count += 1
        if bad_lines and any(n in bad_lines for n in range(start, end + 1)):
            continue  # already reported as not UTF-8
        where = f"line {start}"
        if isinstance(fields, str):
            problems.append(Problem(name, where, None, fields))
            continue
        if len(fields) != columns.count:
            problems.append(
                Problem(
                    name,
                    where,
                    None,
                    f"expected {columns.count} fields (as in the header), found {len(fields)}",
                )
            )
            continue
        email = fields[columns.email].strip()
        if not email:
            problems.append(Problem(name, where, "email", "the email is empty"))
            continue
        if len(email) > MAX_EMAIL:
            problems.append(Problem(name, where, "email", f"longer than {MAX_EMAIL} characters"))
            continue
        values: dict[str, str | None] = {}
        row_ok = True
        for column, position in known_items:
            value = fields[position].strip()
            if len(value) > MAX_NAME:
                problems.append(Problem(name, where, column, f"longer than {MAX_NAME} characters"))
                row_ok = False
            values[column] = value or None
        if tz_position is not None and values["timezone"] is not None:
            try:
                zone(values["timezone"])
            except ValueError as exc:
                problems.append(Problem(name, where, "timezone", str(exc)))
                row_ok = False
        if not row_ok:
            continue
        attributes = {c: (fields[p].strip() or None) for c, p in attribute_items}
        previous = rows.pop(email, None)
        if previous is not None:
            repeated += 1
            if repeated <= MAX_WARNINGS:
                warnings.append(
                    Problem(
                        name,
                        where,
                        "email",
                        f"{email} is also on line {previous.line}; line {start} wins",
                    )
                )
        rows[email] = ProfileRow(start, email, values, attributes)
    if problems:
        problems.sort(key=lambda p: int(p.where.removeprefix("line ")))
        raise InputRejected(problems)
    if repeated > MAX_WARNINGS:
        warnings.append(
            Problem(name, "file", "email", f"… and {repeated - MAX_WARNINGS} more repeated")
        )
    warnings.extend(_case_warnings(name, rows))
    return rows, warnings, count


def _attribute_name_warnings(name: str, columns: _Columns) -> list[Problem]:
    return [
        Problem(
            name,
            "line 1",
            column,
            f"{column!r} is not a name a template can use directly; templates reach it "
            f"as profile[{column!r}]",
        )
        for column in columns.attributes
        if not column.isidentifier()
    ]


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


# Writing -------------------------------------------------------------------------------


def _chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _upsert_profiles(
    session: Session,
    now: datetime,
    rows: dict[str, ProfileRow],
    report: ProfilesImportReport,
    *,
    want_ids: bool,
) -> list[int]:
    """Insert new profiles, update changed ones; the ids of the file's profiles if wanted.

    Core statements with executemany, not the ORM's bulk mode: the ORM splits rows by
    which values are None, which turns 100,000 rows into thousands of statements.
    """
    table = Profile.__table__
    existing = _existing_profiles(session, list(rows))
    ids: list[int] = []
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for email, row in rows.items():
        current = existing.get(email)
        if current is None:
            new.append(_new_profile(row))
            continue
        profile_id, first_name, last_name, timezone, attributes = current
        wanted = {
            "first_name": row.values.get("first_name", first_name),
            "last_name": row.values.get("last_name", last_name),
            "timezone": row.values.get("timezone", timezone),
            "attributes": _merge(attributes, row.attributes),
        }
        ids.append(profile_id)
        if (
            wanted["first_name"] == first_name
            and wanted["last_name"] == last_name
            and wanted["timezone"] == timezone
            and wanted["attributes"] == attributes
        ):
            report.unchanged += 1
        else:
            changed.append({"profile_id": profile_id, **wanted, "updated_at": now})
    report.created = len(new)
    report.updated = len(changed)

    if changed:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("profile_id"))
            .values(
                first_name=bindparam("first_name"),
                last_name=bindparam("last_name"),
                timezone=bindparam("timezone"),
                attributes=bindparam("attributes"),
                updated_at=bindparam("updated_at"),
            ),
            changed,
        )
    if new:
        # Values shared by every row go in once, not once per row.
        shared = {"email_status": EmailStatus.VALID.value, "error_count": 0}
        session.execute(insert(table).values(created_at=now, updated_at=now, **shared), new)
        emails = [p["email"] for p in new]
        for chunk in _chunks(emails) if want_ids else ():
            ids.extend(session.scalars(select(table.c.id).where(table.c.email.in_(chunk))))
        lines = {email: rows[email].line for email in emails}
        report.invalid_addresses = _invalid_addresses(report, emails, lines)
    return ids


def _existing_profiles(session: Session, emails: list[str]) -> dict[str, tuple[Any, ...]]:
    """(id, first_name, last_name, timezone, attributes) of the file's known addresses.

    When the file is about as large as the table, one scan beats thousands of bound
    parameters; otherwise look the addresses up in chunks, so that a small file costs
    little however many profiles there are. Attributes come as JSON text and are decoded
    through a memo: most profiles share a few combinations of values.
    """
    table = Profile.__table__
    columns = (
        table.c.email,
        table.c.id,
        table.c.first_name,
        table.c.last_name,
        table.c.timezone,
        cast(table.c.attributes, Text),
    )
    total = session.scalar(select(func.count()).select_from(table)) or 0
    if total <= 2 * len(emails):
        queries = [select(*columns)]
    else:
        queries = [select(*columns).where(table.c.email.in_(c)) for c in _chunks(emails)]
    wanted = set(emails)
    decoded: dict[str | None, dict[str, Any]] = {}
    found: dict[str, tuple[Any, ...]] = {}
    for query in queries:
        for email, profile_id, first, last, tz, text in session.execute(query).all():
            if email not in wanted:
                continue
            attributes = decoded.get(text)
            if attributes is None:
                attributes = decoded[text] = (json.loads(text) if text else None) or {}
            found[email] = (profile_id, first, last, tz, attributes)
    return found


def _new_profile(row: ProfileRow) -> dict[str, Any]:
    return {
        "email": row.email,
        "email_key": row.email.lower(),
        "first_name": row.values.get("first_name"),
        "last_name": row.values.get("last_name"),
        "timezone": row.values.get("timezone"),
        "attributes": {k: v for k, v in row.attributes.items() if v is not None},
    }


def _merge(current: dict[str, Any], incoming: dict[str, str | None]) -> dict[str, Any]:
    """The file decides the attributes it has columns for; others stay as they were."""
    merged = dict(current)
    for key, value in incoming.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# An ASCII dot-atom local part: email_validator accepts it whenever it accepts the domain.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def address_problem(email: str, domains: dict[str, str | None] | None = None) -> str | None:
    """Why email_validator (no DNS) rejects `email`, or None when it accepts it.

    The full check costs ~25 µs; most addresses are plain ASCII over a handful of
    domains, so those check the domain once (cached in `domains`) and the local part
    with one regex. Anything else takes the full check, so the answer is the same.
    """
    local, at, domain = email.rpartition("@")
    if (
        domains is not None
        and at
        and email.isascii()
        and len(local) <= 64
        and len(email) <= 254
        and _PLAIN_LOCAL.fullmatch(local)
    ):
        key = domain.lower()
        if key not in domains:
            domains[key] = address_problem(f"a@{domain}")
        return domains[key]
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def _invalid_addresses(
    report: ProfilesImportReport, emails: list[str], lines: dict[str, int]
) -> int:
    """Count (and warn about) new addresses preparation will exclude as invalid."""
    count = 0
    domains: dict[str, str | None] = {}
    for email in emails:
        problem = address_problem(email, domains)
        if problem is None:
            continue
        count += 1
        if count <= MAX_WARNINGS:
            report.warnings.append(
                Problem(
                    report.file,
                    f"line {lines[email]}",
                    "email",
                    f"{email!r} is not a valid address ({problem}); the profile is kept, "
                    "and preparation excludes it as an invalid address",
                )
            )
    if count > MAX_WARNINGS:
        report.warnings.append(
            Problem(report.file, "file", "email", f"… and {count - MAX_WARNINGS} more")
        )
    return count


def _add_members(
    session: Session,
    now: datetime,
    name: str,
    profile_ids: list[int],
    report: ProfilesImportReport,
) -> None:
    audience = session.scalar(select(Audience).where(Audience.name == name))
    if audience is None:
        audience = Audience(name=name, version=1, created_at=now, updated_at=now)
        session.add(audience)
        session.flush()
        report.audience_created = True
        members: set[int] = set()
    else:
        members = set(
            session.scalars(
                select(AudienceMember.profile_id).where(AudienceMember.audience_id == audience.id)
            )
        )
    to_add = [pid for pid in dict.fromkeys(profile_ids) if pid not in members]
    if to_add:
        session.execute(
            insert_ignoring_conflicts(session, AudienceMember.__table__),
            [{"audience_id": audience.id, "profile_id": pid} for pid in to_add],
        )
    report.members_added = len(to_add)
    if to_add and not report.audience_created:
        session.execute(
            update(Audience)
            .where(Audience.id == audience.id)
            .values(version=Audience.version + 1, updated_at=now)
        )
        session.refresh(audience)
        report.back_to_editing = _back_to_editing(session, now, audience.id)
    report.audience_version = audience.version


def _back_to_editing(session: Session, now: datetime, audience_id: int) -> list[str]:
    """A ready delivery was prepared for the old membership: it must be prepared again."""
    ready = session.scalars(
        select(Delivery)
        .where(Delivery.audience_id == audience_id, Delivery.state == DeliveryState.READY.value)
        .order_by(Delivery.ref)
    ).all()
    for delivery in ready:
        delivery.state = transition(DeliveryState(delivery.state), Action.EDIT).value
        delivery.updated_at = now
    return [d.ref for d in ready]
