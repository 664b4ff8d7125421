"""`profiles import FILE.csv [--audience NAME]`: create or update profiles, all or nothing.

Profiles are keyed by their exact address. `Alice@Example.com` and `alice@example.com`
are two profiles: the SPEC makes preparation keep one and exclude the other as a
duplicate, which it can only do (and log) if both exist. A syntactically invalid
address is kept for the same reason: preparation excludes it as "invalid address".

The file is the truth for the columns it has, and only those: a column that is not in
the file leaves that field alone, and an empty cell in a column that is there clears
it (an attribute is removed). Quarantine status and error counters are never touched.

A file with any bad line changes nothing (`profiles_csv` lists every bad line).
Importing the same file twice changes nothing the second time (no `updated_at` moves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.context import Context, Session
from bot.domain.addresses import address_problem
from bot.domain.errors import DomainError, NotFound
from bot.domain.lifecycle import Action, transition
from bot.domain.roles import Actor, Permission
from bot.services.imports.problems import InputRejected, Problem
from bot.services.imports.profiles_csv import MAX_WARNINGS, ProfileRow, parse_profiles
from bot.store import audit, deliveries, profiles
from bot.store.db import WriteConflict

MAX_AUDIENCE_NAME = 200


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
    invalid_addresses: int = 0  # in the file; the profiles are kept, excluded at preparation
    back_to_editing: list[str] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def import_profiles(
    ctx: Context, actor: Actor, path: str | Path, audience: str | None = None
) -> ProfilesImportReport:
    """Create or update the profiles of the CSV at `path`, or none of them.

    With `audience`, the audience is created if missing and the file's profiles are
    added to it. Membership is additive: profiles already in the audience that are not
    in the file stay in it. When membership changes, the audience's version goes up and
    its deliveries that were ready go back to editing (they must be prepared again).

    Raises InputRejected listing every bad line; nothing is written then.
    """
    actor.require(Permission.PREPARE)
    path = Path(path)
    name = str(path)
    if audience is not None:
        audience = _check_audience_name(name, audience)
    rows, warnings, line_count = parse_profiles(name, read_input(path))
    report = ProfilesImportReport(file=name, rows=line_count, audience=audience)
    report.warnings = warnings
    now = ctx.clock.now()
    try:
        with ctx.sessions.begin() as session:
            ids = _upsert_profiles(session, now, rows, report, want_ids=audience is not None)
            if audience is not None:
                _add_members(session, now, audience, ids, report)
            audit.record(
                session,
                now,
                actor=actor.id,
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
    except WriteConflict as exc:
        raise ConcurrentImport(
            "another import changed some of these profiles or this audience at the same "
            "moment; nothing of this one was applied: run it again"
        ) from exc
    return report


def read_input(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of an input file, or NotFound saying which path was looked for.

    With `max_bytes`, a larger file is refused before it is read.
    """
    try:
        with path.open("rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"no file at {path}; give the path of the file to import") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise InputRejected(
            [Problem(str(path), "file", None, f"larger than {max_bytes:,} bytes; split it")]
        )
    return data


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


# Writing -------------------------------------------------------------------------------


def _upsert_profiles(
    session: Session,
    now: datetime,
    rows: dict[str, ProfileRow],
    report: ProfilesImportReport,
    *,
    want_ids: bool,
) -> list[int]:
    """Insert new profiles, update changed ones; the ids of the file's profiles if wanted."""
    existing = profiles.existing(session, list(rows))
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
        if wanted == {
            "first_name": first_name,
            "last_name": last_name,
            "timezone": timezone,
            "attributes": attributes,
        }:
            report.unchanged += 1
        else:
            changed.append({"profile_id": profile_id, **wanted, "updated_at": now})
    report.created = len(new)
    report.updated = len(changed)
    profiles.update_many(session, changed)
    if new:
        profiles.insert_many(session, new, now)
        emails = [p["email"] for p in new]
        if want_ids:
            ids.extend(profiles.ids_of(session, emails))
    # Every invalid address of the file, new or already imported: they all stay in the
    # audience and preparation excludes them all, so a second import says the same.
    lines = {email: row.line for email, row in rows.items()}
    report.invalid_addresses += _invalid_addresses(
        report, sorted(lines, key=lines.__getitem__), lines
    )
    return ids


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


def _invalid_addresses(
    report: ProfilesImportReport, emails: list[str], lines: dict[str, int]
) -> int:
    """Count (and warn about) the addresses preparation will exclude as invalid."""
    count = 0
    for email in emails:
        problem = address_problem(email)
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
    audience = profiles.audience(session, name)
    if audience is None:
        audience = profiles.create_audience(session, name, now)
        report.audience_created = True
        members: set[int] = set()
    else:
        members = profiles.members(session, audience.id)
    to_add = [pid for pid in dict.fromkeys(profile_ids) if pid not in members]
    if to_add:
        profiles.add_members(session, audience, to_add, now, new=report.audience_created)
        if not report.audience_created:
            report.back_to_editing = _back_to_editing(session, now, audience.id)
    report.members_added = len(to_add)
    report.audience_version = audience.version


def _back_to_editing(session: Session, now: datetime, audience_id: int) -> list[str]:
    """A ready delivery was prepared for the old membership: it must be prepared again."""
    moved = []
    for delivery in deliveries.ready_of_audience(session, audience_id):
        after = transition(delivery.state, Action.EDIT)
        if deliveries.move(session, delivery.id, delivery.state, after, updated_at=now):
            moved.append(delivery.ref)
    return moved
