"""`deliveries import FILE.yml`: create or update deliveries by ref, all or nothing.

A file is checked whole before anything is written, and every problem is listed with
the file, the entry (its position, ref and YAML line) and the field, so one run of the
command shows everything to fix. Deliveries that are in the database but not in the
file are left alone: a file need not hold every delivery.

A change to what is sent (see `definitions.definition_hash`) is allowed only while a
delivery is being edited or is ready; a ready delivery goes back to editing and must
be prepared again. Renaming or moving a delivery to another Slack channel is allowed
in any state. Importing the same file twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.context import Context, Session
from bot.domain.errors import DomainError
from bot.domain.lifecycle import Action, can, transition
from bot.domain.roles import Actor, Permission
from bot.domain.schedule import ScheduleMode
from bot.services.imports.definitions import DeliveryDefinition, error_field, error_reason
from bot.services.imports.problems import InputRejected, Problem
from bot.services.imports.profiles import read_input
from bot.store import audit, deliveries, profiles
from bot.store.db import WriteConflict
from bot.store.models import Audience, Delivery

# Changing only these never invalidates a preparation: they change no message
# (approval_expiry only how long an approval request waits).
COSMETIC = ("name", "slack_channel", "approval_expiry_seconds", "guard")


@dataclass
class DeliveriesImportReport:
    """What an import did, by ref; `back_to_editing` must be prepared again."""

    file: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    back_to_editing: list[str] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


@dataclass
class _Entry:
    index: int  # 1-based position in the file
    line: int  # YAML line where the entry starts
    ref: str | None
    data: Any
    definition: DeliveryDefinition | None = None

    def where(self) -> str:
        ref = f"ref {self.ref}, " if self.ref else ""
        return f"entry {self.index} ({ref}line {self.line})"


def import_deliveries(ctx: Context, actor: Actor, path: str | Path) -> DeliveriesImportReport:
    """Create or update every delivery of the YAML file at `path`, or none of them.

    Raises InputRejected listing every problem when any entry is bad, an audience is
    missing, or a delivery that cannot change now would change.
    """
    actor.require(Permission.PREPARE)
    path = Path(path)
    name = str(path)
    entries, problems = _parse(name, read_input(path, MAX_FILE_BYTES))
    report = DeliveriesImportReport(file=name)
    now = ctx.clock.now()
    try:
        with ctx.sessions.begin() as session:
            plans, db_problems = _plan(session, name, entries, now, report)
            problems.extend(db_problems)
            if problems:
                problems.sort(key=_problem_order)
                raise InputRejected(problems)
            for entry, delivery, audience in plans:
                _apply(session, now, entry, delivery, audience, actor.id, report)
    except WriteConflict as exc:
        raise DomainError(
            "another import created one of these deliveries at the same moment; nothing "
            "of this one was applied: run it again"
        ) from exc
    return report


# Reading the file ----------------------------------------------------------------------


MAX_FILE_BYTES = 5 * 1024 * 1024  # a deliveries file is text written by people


class _Unreadable(Exception):
    """The file as a whole cannot be read as a list of deliveries."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _parse(name: str, raw: bytes) -> tuple[list[_Entry], list[Problem]]:
    """Decode and check every entry; problems of shape and content, no database."""
    try:
        root, data = _root(name, raw)
    except _Unreadable as exc:
        return [], [exc.problem]
    entries: list[_Entry] = []
    problems: list[Problem] = []
    for index, (node, item) in enumerate(zip(root.value, data, strict=True), start=1):
        ref = item.get("ref") if isinstance(item, dict) else None
        entry = _Entry(index, node.start_mark.line + 1, ref if isinstance(ref, str) else None, item)
        entries.append(entry)
        problems.extend(_check_entry(name, entry, node))
    problems.extend(_duplicate_refs(name, entries))
    return entries, problems


def _root(name: str, raw: bytes) -> tuple[yaml.SequenceNode, Any]:
    """The file's top-level list (its node, for line numbers, and its data)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _Unreadable(
            Problem(name, f"line {line}", None, "not UTF-8 text; save it as UTF-8")
        ) from None
    try:
        root, data = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        reason = getattr(exc, "problem", None) or str(exc)
        raise _Unreadable(Problem(name, where, None, f"not valid YAML: {reason}")) from None
    if root is None:
        raise _Unreadable(
            Problem(name, "file", None, "the file is empty; list deliveries as - ref: …")
        )
    if not isinstance(root, yaml.SequenceNode):
        raise _Unreadable(
            Problem(
                name,
                f"line {root.start_mark.line + 1}",
                None,
                "the file must be a list of deliveries, each starting with '- ref: …'",
            )
        )
    return root, data


def _check_entry(name: str, entry: _Entry, node: yaml.Node) -> list[Problem]:
    """The entry's problems; it keeps its definition only when it has none of shape."""
    if not isinstance(node, yaml.MappingNode):
        return [Problem(name, entry.where(), None, "an entry must be a mapping (ref: …, name: …)")]
    duplicates = _duplicate_keys(node)
    problems = [Problem(name, entry.where(), f, r) for f, r in duplicates]
    try:
        entry.definition = DeliveryDefinition.model_validate(entry.data)
    except ValidationError as exc:
        problems.extend(
            Problem(name, entry.where(), error_field(err), error_reason(err))
            for err in exc.errors()
        )
    if duplicates:
        entry.definition = None
    return problems


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases: `*name` repeats a node by reference, and nested
    repeats make a 1 KB file stand for billions of values (each checked, hashed and
    stored). A deliveries file has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not allowed here; write each value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _load(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse once, keeping the node tree (for line numbers) and the plain data."""
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def _duplicate_keys(node: yaml.MappingNode, prefix: str = "") -> list[tuple[str, str]]:
    """YAML keeps the last of two equal keys silently; a person meant one of them."""
    found: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in seen:
            found.append((prefix + key, f"this field appears twice (lines {seen[key]} and {line})"))
        seen.setdefault(key, line)
        if isinstance(value_node, yaml.MappingNode):
            found.extend(_duplicate_keys(value_node, f"{prefix}{key}."))
    return found


def _duplicate_refs(name: str, entries: list[_Entry]) -> list[Problem]:
    first: dict[str, _Entry] = {}
    problems = []
    for entry in entries:
        if entry.ref is None:
            continue
        if entry.ref in first:
            other = first[entry.ref]
            problems.append(
                Problem(
                    name,
                    entry.where(),
                    "ref",
                    f"ref {entry.ref!r} is already used by entry {other.index} "
                    f"(line {other.line}); each ref must be unique in a file",
                )
            )
            entry.definition = None
        else:
            first[entry.ref] = entry
    return problems


def _problem_order(problem: Problem) -> tuple[int, str]:
    where = problem.where
    number = where.split(" ", 2)[1] if where.startswith(("entry ", "line ")) else "0"
    return (int(number) if number.isdigit() else 0, where)


# Checking against the database and applying -----------------------------------------


def _plan(
    session: Session,
    name: str,
    entries: list[_Entry],
    now: Any,
    report: DeliveriesImportReport,
) -> tuple[list[tuple[_Entry, Delivery | None, Audience]], list[Problem]]:
    """Match each valid entry to its audience and existing delivery; refuse what can't be."""
    # Every entry that names an audience is checked, valid or not, to list every problem.
    named = {e.index: e.data["audience"] for e in entries if _names_audience(e)}
    audiences = profiles.audiences_by_name(session, sorted(set(named.values())))
    problems = [
        Problem(
            name,
            entry.where(),
            "audience",
            f"audience {named[entry.index]!r} does not exist; import profiles with "
            f"--audience {named[entry.index]} first",
        )
        for entry in entries
        if entry.index in named and named[entry.index] not in audiences
    ]
    valid = [(e, e.definition) for e in entries if e.definition is not None]
    existing = deliveries.by_refs(session, [d.ref for _, d in valid])
    plans = []
    for entry, definition in valid:
        audience = audiences.get(definition.audience)
        if audience is None:
            continue
        delivery = existing.get(definition.ref)
        refusal = _refusal(name, entry, definition, delivery)
        if refusal is not None:
            problems.append(refusal)
            continue
        warning = _past_contact_date(name, entry, definition, now)
        if warning is not None:
            report.warnings.append(warning)
        plans.append((entry, delivery, audience))
    return plans, problems


def _refusal(
    name: str, entry: _Entry, definition: DeliveryDefinition, delivery: Delivery | None
) -> Problem | None:
    """A delivery past `ready` cannot change what it sends (its name and channel can)."""
    if delivery is None or delivery.definition_hash == definition.hash():
        return None
    if can(Action.EDIT, delivery.state):
        return None
    return Problem(
        name,
        entry.where(),
        None,
        f"delivery {definition.ref!r} is {delivery.state.value} and cannot change now; "
        "only a delivery that is editing or ready can change what it sends "
        "(its name and slack_channel can still change)",
    )


def _past_contact_date(
    name: str, entry: _Entry, definition: DeliveryDefinition, now: Any
) -> Problem | None:
    at = definition.schedule.at_utc() if definition.schedule else None
    if at is None or at > now:
        return None
    assert definition.schedule is not None
    if definition.schedule.mode is ScheduleMode.RECIPIENT_LOCAL:
        return Problem(
            name,
            entry.where(),
            "schedule.date",
            f"{definition.schedule.time} on {definition.schedule.date} has passed in "
            f"{definition.schedule.timezone}: it cannot be confirmed while a wave is past",
        )
    return Problem(
        name,
        entry.where(),
        "schedule.at",
        f"{at.isoformat()} is in the past: once confirmed, it starts at once",
    )


def _names_audience(entry: _Entry) -> bool:
    return isinstance(entry.data, dict) and isinstance(entry.data.get("audience"), str)


def _apply(
    session: Session,
    now: Any,
    entry: _Entry,
    delivery: Delivery | None,
    audience: Audience,
    actor: str,
    report: DeliveriesImportReport,
) -> None:
    definition = entry.definition
    assert definition is not None
    columns = definition.columns()
    new_hash = definition.hash()
    if delivery is None:
        deliveries.create(session, columns, audience.id, new_hash, now)
        report.created.append(definition.ref)
        audit.record(
            session,
            now,
            actor=actor,
            action="delivery.create",
            subject_kind="delivery",
            subject_ref=definition.ref,
            detail={"file": report.file, "definition_hash": new_hash},
        )
        return

    changed = sorted(k for k, v in columns.items() if getattr(delivery, k) != v)
    if delivery.audience_id != audience.id:
        changed.append("audience")
    if not changed and delivery.definition_hash == new_hash:
        report.unchanged.append(definition.ref)
        return
    before = delivery.state
    after = before
    if delivery.definition_hash != new_hash:
        after = transition(before, Action.EDIT)
        if after is not before and not deliveries.move(session, delivery.id, before, after):
            raise DomainError(
                f"delivery {definition.ref!r} changed while this file was imported: "
                "nothing was applied; import it again"
            )
        deliveries.redefine(session, delivery, columns, audience.id, new_hash, now)
        if before is not after:
            report.back_to_editing.append(definition.ref)
    else:
        deliveries.redefine(session, delivery, {k: columns[k] for k in COSMETIC}, None, None, now)
    report.updated.append(definition.ref)
    audit.record(
        session,
        now,
        actor=actor,
        action="delivery.update",
        subject_kind="delivery",
        subject_ref=definition.ref,
        detail={
            "file": report.file,
            "changed": changed,
            "state": {"from": before.value, "to": after.value},
            "definition_hash": new_hash,
        },
    )
