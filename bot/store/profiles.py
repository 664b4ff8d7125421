"""Profiles and audiences: bulk reads and writes for imports, and address health.

Written for volume: an import works a chunk of rows at a time; the chunk's existing
profiles are read in one query, new ones inserted and changed ones updated with one
executemany each (Core, not the ORM's bulk mode, which splits rows by which values are
None and turns 100,000 rows into thousands of statements).

What needs the whole file (an address twice, addresses that differ in letter case) is
found in a temporary table of the file's lines (`stage`): the database holds the
million addresses of a large file, not the importing process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable, DropTable

from bot.domain.quarantine import EmailStatus
from bot.store.db import BulkInsert, affected, insert_ignoring_conflicts
from bot.store.models import Audience, AudienceMember, Profile, SendingLog, table

_TABLE = table(Profile)


def staged_existing(session: Session, first: int, last: int) -> dict[str, tuple[Any, ...]]:
    """(id, first_name, last_name, timezone, attributes) of the known addresses on the
    staged lines `first` to `last` (not superseded): a join, no address sent as a
    parameter. Attributes come as JSON text and are decoded through a memo: most
    profiles share a few combinations of values."""
    query = (
        select(
            _TABLE.c.email,
            _TABLE.c.id,
            _TABLE.c.first_name,
            _TABLE.c.last_name,
            _TABLE.c.timezone,
            cast(_TABLE.c.attributes, Text),
        )
        .join(_STAGED, _STAGED.c.email == _TABLE.c.email)
        .where(_lines(first, last))
    )
    decoded: dict[str | None, dict[str, Any]] = {}
    found: dict[str, tuple[Any, ...]] = {}
    for email, profile_id, first_name, last_name, tz, stored in session.execute(query):
        attributes = decoded.get(stored)
        if attributes is None:
            attributes = decoded[stored] = (json.loads(stored) if stored else None) or {}
        found[email] = (profile_id, first_name, last_name, tz, attributes)
    return found


def update_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of {profile_id, first_name, last_name, timezone, attributes, updated_at}."""
    if rows:
        session.execute(
            update(_TABLE)
            .where(_TABLE.c.id == bindparam("profile_id"))
            .values(
                first_name=bindparam("first_name"),
                last_name=bindparam("last_name"),
                timezone=bindparam("timezone"),
                attributes=bindparam("attributes"),
                updated_at=bindparam("updated_at"),
            ),
            list(rows),
        )


_NEW_COLUMNS = (
    "email",
    "email_key",
    "first_name",
    "last_name",
    "timezone",
    "attributes",
    "email_status",
    "error_count",
    "created_at",
    "updated_at",
)


def insert_many(session: Session, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """Rows of {email, email_key, first_name, last_name, timezone, attributes}: new, valid.

    Through the driver (`BulkInsert`); the attributes converted once per distinct set of
    values, of which a file has few.
    """
    if not rows:
        return
    bulk = BulkInsert(session, insert(_TABLE), _NEW_COLUMNS)
    shared = (
        bulk.value("email_status", EmailStatus.VALID),
        0,
        bulk.value("created_at", now),
        bulk.value("updated_at", now),
    )
    converted: dict[tuple[tuple[str, Any], ...], Any] = {}
    values = []
    for row in rows:
        attributes = row["attributes"]
        key = tuple(attributes.items())
        stored = converted.get(key)
        if stored is None:
            stored = converted[key] = bulk.value("attributes", attributes)
        values.append(
            (
                row["email"],
                row["email_key"],
                row["first_name"],
                row["last_name"],
                row["timezone"],
                stored,
                *shared,
            )
        )
    bulk.run(values)


def refresh_statistics(session: Session) -> None:
    """PostgreSQL: statistics of the profiles, the rows this transaction wrote counted.

    A large import doubles the table inside one transaction, where autovacuum cannot
    see it; planned with the statistics of before, a chunk's join scans every profile
    (60 ms a chunk at 500,000 profiles) instead of looking 5,000 up (6 ms). SQLite's
    planner takes the index without statistics.
    """
    if session.connection().dialect.name == "postgresql":
        session.execute(text(f"ANALYZE {_TABLE.name}"))


def audience(session: Session, name: str) -> Audience | None:
    return session.scalar(select(Audience).where(Audience.name == name))


def create_audience(session: Session, name: str, now: datetime) -> Audience:
    created = Audience(name=name, version=1, created_at=now, updated_at=now)
    session.add(created)
    session.flush()
    return created


def add_staged_members(session: Session, audience_id: int, first: int, last: int) -> int:
    """Make the profiles of the staged lines `first` to `last` members of the audience;
    how many were not members yet (one made a member by a concurrent import stays)."""
    chosen = (
        select(literal(audience_id).label("audience_id"), _TABLE.c.id)
        .join(_STAGED, _STAGED.c.email == _TABLE.c.email)
        .where(_lines(first, last))
    )
    statement = insert_ignoring_conflicts(session, table(AudienceMember)).from_select(
        ["audience_id", "profile_id"], chosen
    )
    return affected(session.execute(statement.execution_options(preserve_rowcount=True)))


def new_version(session: Session, audience: Audience, now: datetime) -> None:
    """The membership changed: preparations of the audience's deliveries are out of date."""
    session.execute(
        update(Audience)
        .where(Audience.id == audience.id)
        .values(version=Audience.version + 1, updated_at=now)
    )
    session.refresh(audience)


def audiences_by_name(session: Session, names: Sequence[str]) -> dict[str, Audience]:
    return {a.name: a for a in session.scalars(select(Audience).where(Audience.name.in_(names)))}


def of_sending_log(session: Session, sending_log_id: int) -> Profile | None:
    return session.scalar(
        select(Profile)
        .join(SendingLog, SendingLog.profile_id == Profile.id)
        .where(SendingLog.id == sending_log_id)
    )


def ids_by_address(session: Session, email: str) -> list[int]:
    """Profiles with this address in any letter case (duplicates share a key)."""
    return list(
        session.scalars(select(Profile.id).where(Profile.email_key == email.strip().lower()))
    )


def denylist(session: Session, profile_id: int, now: datetime) -> None:
    """The address is never sent to again (until a person lifts it)."""
    session.execute(
        update(Profile)
        .where(Profile.id == profile_id)
        .values(email_status=EmailStatus.DENYLISTED, updated_at=now)
        .execution_options(synchronize_session=False)
    )


# The lines of a file being imported ---------------------------------------------------

_STAGED = Table(
    "profile_import_lines",
    MetaData(),
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False),
    Column("superseded", Boolean, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
_STAGED_KEY = Index("profile_import_lines_key", _STAGED.c.email_key)


@dataclass(frozen=True)
class Repeat:
    """An address on `line` that was on `previous` too: the later line wins."""

    line: int
    email: str
    previous: int


@dataclass(frozen=True)
class CaseVariant:
    """An address on `line` that differs from `first` (on `first_line`) only in case."""

    line: int
    email: str
    first: str
    first_line: int


@dataclass(frozen=True)
class StagedDuplicates:
    """The file's repeated addresses and case variants: the first `limit` of each, in line
    order, and how many there are in all."""

    repeats: list[Repeat]
    repeat_total: int
    variants: list[CaseVariant]
    variant_total: int


def stage_begin(session: Session) -> None:
    """An empty table of the file's lines, private to this transaction's connection.

    On PostgreSQL it goes at commit or rollback. SQLite's driver runs the CREATE outside
    the transaction, so a table an import left on a pooled connection (a rollback keeps
    it, emptied) is dropped first.
    """
    session.execute(DropTable(_STAGED, if_exists=True))
    session.execute(CreateTable(_STAGED))  # the key's index comes once the lines are in
    if session.connection().dialect.name == "postgresql":
        # Each chunk joins 5,000 staged lines with the profiles. At the default cost of
        # a random read (4, for disks) the planner scans the whole table for that, 145 ms
        # a chunk at a million profiles; the import reads what the chunk just wrote or
        # looked up, in memory, and by the index it takes 8 ms. For this transaction only.
        session.execute(text("SET LOCAL random_page_cost = 1.1"))


def stage(session: Session, rows: Sequence[tuple[int, str, str]]) -> None:
    """Rows of (line, email, email_key) of the file, in any order."""
    if rows:
        bulk = BulkInsert(session, insert(_STAGED), ("line", "email", "email_key", "superseded"))
        no = bulk.value("superseded", False)
        bulk.run([(line, email, key, no) for line, email, key in rows])


def staged_duplicates(session: Session, limit: int) -> StagedDuplicates:
    """Find the repeated addresses and case variants among the staged lines, and mark
    every line that a later line of the same address supersedes.

    Only the lines of keys seen twice are sorted: a file without duplicates costs one
    pass over the key index.
    """
    conn = session.connection()
    _STAGED_KEY.create(conn)
    if conn.dialect.name == "postgresql":
        # Autovacuum never analyzes a temporary table: without statistics the planner
        # takes a million staged lines for a few and joins them row by row.
        session.execute(text(f"ANALYZE {_STAGED.name}"))
    s = _STAGED.c
    twice = select(s.email_key).group_by(s.email_key).having(func.count() > 1)
    if session.execute(twice.limit(1)).first() is None:
        return StagedDuplicates([], 0, [], 0)
    suspects = (
        select(
            s.line,
            s.email,
            func.lag(s.line).over(partition_by=s.email, order_by=s.line).label("previous"),
            func.lead(s.line).over(partition_by=s.email, order_by=s.line).label("next"),
        )
        .where(s.email_key.in_(twice))
        .subquery()
    )
    session.execute(
        update(_STAGED)
        .where(s.line.in_(select(suspects.c.line).where(suspects.c.next.is_not(None))))
        .values(superseded=True)
    )
    repeated = suspects.c.previous.is_not(None)
    repeats = [
        Repeat(line, email, previous)
        for line, email, previous in session.execute(
            select(suspects.c.line, suspects.c.email, suspects.c.previous)
            .where(repeated)
            .order_by(suspects.c.line)
            .limit(limit)
        )
    ]
    repeat_total = session.scalar(select(func.count()).where(repeated)) or 0
    winners = (
        select(
            s.line,
            s.email,
            func.first_value(s.email)
            .over(partition_by=s.email_key, order_by=s.line)
            .label("first"),
            func.first_value(s.line)
            .over(partition_by=s.email_key, order_by=s.line)
            .label("first_line"),
            func.row_number().over(partition_by=s.email_key, order_by=s.line).label("rank"),
        )
        .where(s.email_key.in_(twice), s.superseded.is_(False))
        .subquery()
    )
    variant = winners.c.rank > 1
    variants = [
        CaseVariant(*row)
        for row in session.execute(
            select(winners.c.line, winners.c.email, winners.c.first, winners.c.first_line)
            .where(variant)
            .order_by(winners.c.line)
            .limit(limit)
        )
    ]
    variant_total = session.scalar(select(func.count()).where(variant)) or 0
    return StagedDuplicates(repeats, repeat_total, variants, variant_total)


def _lines(first: int, last: int) -> ColumnElement[bool]:
    return and_(_STAGED.c.line.between(first, last), _STAGED.c.superseded.is_(False))


def superseded(session: Session, first: int, last: int) -> set[int]:
    """The lines between `first` and `last` whose address a later line has again."""
    s = _STAGED.c
    return set(
        session.scalars(select(s.line).where(s.line.between(first, last), s.superseded.is_(True)))
    )


def stage_end(session: Session) -> None:
    session.execute(DropTable(_STAGED))
