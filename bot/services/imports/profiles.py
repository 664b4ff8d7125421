"""`profiles import FILE.csv [--audience NAME]`: create or update profiles, all or nothing.

Profiles are keyed by their exact address. `Alice@Example.com` and `alice@example.com`
are two profiles: the SPEC makes preparation keep one and exclude the other as a
duplicate, which it can only do (and log) if both exist. A syntactically invalid
address is kept for the same reason: preparation excludes it as "invalid address".

The file is the truth for the columns it has, and only those: a column that is not in
the file leaves that field alone, and an empty cell in a column that is there clears
it (an attribute is removed). Quarantine status and error counters are never touched.

A file with any bad line changes nothing (`profiles_csv` lists the bad lines).
Importing the same file twice changes nothing the second time (no `updated_at` moves).

A file of a million rows is read as a stream and written a chunk at a time, in one
transaction (still all or nothing); the addresses it has twice are found in the
database (`store.profiles.stage`), so the memory an import takes does not grow with
its file. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
from bot.services.imports.profiles_csv import (
    MAX_WARNINGS,
    ProfileRow,
    ProfilesCsv,
    parse_profiles,
)
from bot.services.progress import Progress
from bot.store import audit, deliveries, profiles
from bot.store.db import WriteConflict
from bot.store.models import Audience

MAX_AUDIENCE_NAME = 200
CHUNK = 5000  # rows written at a time: what an import holds in memory

__all__ = ["ConcurrentImport", "FileChanged", "import_profiles", "parse_profiles", "read_input"]


class ConcurrentImport(DomainError):
    """Two imports raced on the same new address; the loser changed nothing."""


class FileChanged(DomainError):
    """The file was rewritten between the two readings of an import: nothing applied."""


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
    ctx: Context,
    actor: Actor,
    path: str | Path,
    audience: str | None = None,
    progress: Progress | None = None,
) -> ProfilesImportReport:
    """Create or update the profiles of the CSV at `path`, or none of them.

    With `audience`, the audience is created if missing and the file's profiles are
    added to it. Membership is additive: profiles already in the audience that are not
    in the file stay in it. When membership changes, the audience's version goes up and
    its deliveries that were ready go back to editing (they must be prepared again).

    The file is read twice, as a stream, in one transaction: first every line is
    checked and its address staged in the database (which finds the addresses the file
    has twice), then the rows are written `CHUNK` at a time. The memory taken is that of
    a chunk, whatever the file's size. `progress(done, total, step)` is told the bytes
    checked, then the rows written, a block or a chunk at a time.

    Raises InputRejected listing the bad lines; nothing is written then.
    """
    actor.require(Permission.PREPARE)
    path = Path(path)
    name = str(path)
    if audience is not None:
        audience = _check_audience_name(name, audience)
    size = _size(path)
    report = ProfilesImportReport(file=name, audience=audience)
    now = ctx.clock.now()
    try:
        with ctx.sessions.begin() as session:
            profiles.stage_begin(session)
            _check_and_stage(session, path, size, report, progress)
            superseded = _duplicates(session, report)
            writing = _Writing(session, now, report, superseded, progress)
            if audience is not None:
                writing.audience_named(audience)
            with path.open("rb") as source:
                reader = ProfilesCsv(name, source)
                for chunk in _chunks(reader):
                    writing.chunk(chunk)
                if reader.problem_total or reader.rows != report.rows:
                    raise FileChanged(
                        f"{name} changed while it was imported; nothing was applied: "
                        "run it again once it is written"
                    )
            writing.finish()
            profiles.stage_end(session)
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


def _size(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
    except OSError:
        pass
    raise NotFound(f"no file at {path}; give the path of the file to import")


def _chunks(rows: Iterable[ProfileRow]) -> Iterator[list[ProfileRow]]:
    chunk: list[ProfileRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_and_stage(
    session: Session,
    path: Path,
    size: int,
    report: ProfilesImportReport,
    progress: Progress | None,
) -> None:
    """The first reading: every line checked, every address staged. InputRejected if any
    line is bad (the transaction, staged lines and all, is rolled back)."""
    checking = f"checking {path.name}"

    def on_read(done: int) -> None:
        if progress is not None:
            progress(done, size, checking)

    with path.open("rb") as source:
        reader = ProfilesCsv(report.file, source, on_read)
        report.warnings.extend(reader.warnings)
        for chunk in _chunks(reader):
            if not reader.problem_total:  # a bad file is only read to its end, for its lines
                profiles.stage(session, [(r.line, r.email, r.email.lower()) for r in chunk])
        reader.reject_bad_lines()
    report.rows = reader.rows


def _duplicates(session: Session, report: ProfilesImportReport) -> bool:
    """Warn about the addresses the file has twice and those that differ only in letter
    case; whether any line is superseded by a later one (the later row wins)."""
    found = profiles.staged_duplicates(session, MAX_WARNINGS)
    file = report.file
    for repeat in found.repeats:
        report.warnings.append(
            Problem(
                file,
                f"line {repeat.line}",
                "email",
                f"{repeat.email} is also on line {repeat.previous}; line {repeat.line} wins",
            )
        )
    if found.repeat_total > MAX_WARNINGS:
        more = f"… and {found.repeat_total - MAX_WARNINGS} more repeated"
        report.warnings.append(Problem(file, "file", "email", more))
    for variant in found.variants:
        report.warnings.append(
            Problem(
                file,
                f"line {variant.line}",
                "email",
                f"{variant.email} differs from {variant.first} (line {variant.first_line}) "
                "only in letter case; both are kept, and preparation sends to one of them",
            )
        )
    if found.variant_total > MAX_WARNINGS:
        more = f"… and {found.variant_total - MAX_WARNINGS} more such addresses"
        report.warnings.append(Problem(file, "file", "email", more))
    return found.repeat_total > 0


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


class _Writing:
    """The second reading: each chunk's profiles written, and added to the audience."""

    def __init__(
        self,
        session: Session,
        now: datetime,
        report: ProfilesImportReport,
        superseded: bool,
        progress: Progress | None,
    ) -> None:
        self.session = session
        self.now = now
        self.report = report
        self.superseded = superseded
        self.progress = progress
        self.audience: Audience | None = None
        self.read = 0
        self.chunks = 0
        self.last_line = 0
        self.step = f"importing {Path(report.file).name}"

    def audience_named(self, name: str) -> None:
        audience = profiles.audience(self.session, name)
        if audience is None:
            audience = profiles.create_audience(self.session, name, self.now)
            self.report.audience_created = True
        self.audience = audience

    def chunk(self, rows: list[ProfileRow]) -> None:
        self.read += len(rows)
        if self.superseded:  # the earlier lines of an address the file has again
            later = profiles.superseded(self.session, rows[0].line, rows[-1].line)
            rows = [row for row in rows if row.line not in later]
        first, last = rows[0].line, rows[-1].line
        _upsert_profiles(self.session, self.now, rows, first, last, self.report)
        self.chunks += 1
        if self.report.created and self.chunks & (self.chunks - 1) == 0:
            # The table grows in this transaction, out of sight of any statistics: at
            # 1, 2, 4, 8 … chunks they are taken again, so the joins of the next chunks
            # stay index lookups (`store.profiles.refresh_statistics`).
            profiles.refresh_statistics(self.session)
        for row in rows:  # kept, all of them: preparation excludes them, a re-import says so
            self._check_address(row)
        self.last_line = last
        if self.progress is not None:
            self.progress(self.read, self.report.rows, self.step)

    def _check_address(self, row: ProfileRow) -> None:
        """Count (and warn about) an address preparation will exclude as invalid."""
        problem = address_problem(row.email)
        if problem is None:
            return
        report = self.report
        report.invalid_addresses += 1
        if report.invalid_addresses <= MAX_WARNINGS:
            report.warnings.append(
                Problem(
                    report.file,
                    f"line {row.line}",
                    "email",
                    f"{row.email!r} is not a valid address ({problem}); the profile is kept, "
                    "and preparation excludes it as an invalid address",
                )
            )

    def finish(self) -> None:
        report = self.report
        if self.audience is not None and self.last_line:
            # Every profile of the file made a member at once: one join of the staged
            # lines with the profiles, instead of one per chunk.
            added = profiles.add_staged_members(self.session, self.audience.id, 1, self.last_line)
            report.members_added += added
        if report.invalid_addresses > MAX_WARNINGS:
            more = f"… and {report.invalid_addresses - MAX_WARNINGS} more"
            report.warnings.append(Problem(report.file, "file", "email", more))
        if self.audience is None:
            return
        if report.members_added and not report.audience_created:
            profiles.new_version(self.session, self.audience, self.now)
            report.back_to_editing = _back_to_editing(self.session, self.now, self.audience.id)
        report.audience_version = self.audience.version


def _upsert_profiles(
    session: Session,
    now: datetime,
    rows: list[ProfileRow],
    first: int,
    last: int,
    report: ProfilesImportReport,
) -> None:
    """Insert the new profiles of a chunk (lines `first` to `last`), update its changed
    ones (an address is on one line of a chunk, and in one chunk of the file)."""
    existing = profiles.staged_existing(session, first, last)
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for row in rows:
        current = existing.get(row.email)
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
        if wanted == {
            "first_name": first_name,
            "last_name": last_name,
            "timezone": timezone,
            "attributes": attributes,
        }:
            report.unchanged += 1
        else:
            changed.append({"profile_id": profile_id, **wanted, "updated_at": now})
    report.created += len(new)
    report.updated += len(changed)
    profiles.update_many(session, changed)
    profiles.insert_many(session, new, now)


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


def _back_to_editing(session: Session, now: datetime, audience_id: int) -> list[str]:
    """A ready delivery was prepared for the old membership: it must be prepared again."""
    moved = []
    for delivery in deliveries.ready_of_audience(session, audience_id):
        after = transition(delivery.state, Action.EDIT)
        if deliveries.move(session, delivery.id, delivery.state, after, updated_at=now):
            moved.append(delivery.ref)
    return moved
