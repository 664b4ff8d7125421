"""Profiles and audiences: bulk reads and writes for imports, and address health.

Written for volume: existing profiles are read in a few queries, new ones inserted and
changed ones updated with one executemany each (Core, not the ORM's bulk mode, which
splits rows by which values are None and turns 100,000 rows into thousands of
statements), so a file of 100,000 rows takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, cast, func, insert, select, update
from sqlalchemy.orm import Session

from bot.domain.quarantine import EmailStatus
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import Audience, AudienceMember, Profile, SendingLog, table

CHUNK = 5000  # bound parameters per lookup query (well under SQLite's limit)

_TABLE = table(Profile)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def existing(session: Session, emails: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """(id, first_name, last_name, timezone, attributes) of the known addresses among `emails`.

    When the file is about as large as the table, one scan beats thousands of bound
    parameters; otherwise the addresses are looked up in chunks, so a small file costs
    little however many profiles there are. Attributes come as JSON text and are
    decoded through a memo: most profiles share a few combinations of values.
    """
    columns = (
        _TABLE.c.email,
        _TABLE.c.id,
        _TABLE.c.first_name,
        _TABLE.c.last_name,
        _TABLE.c.timezone,
        cast(_TABLE.c.attributes, Text),
    )
    total = session.scalar(select(func.count()).select_from(_TABLE)) or 0
    if total <= 2 * len(emails):
        queries = [select(*columns)]
    else:
        queries = [select(*columns).where(_TABLE.c.email.in_(c)) for c in _chunks(emails)]
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


def insert_many(session: Session, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """Rows of {email, email_key, first_name, last_name, timezone, attributes}: new, valid."""
    if rows:
        shared = {"email_status": EmailStatus.VALID, "error_count": 0}
        session.execute(insert(_TABLE).values(created_at=now, updated_at=now, **shared), list(rows))


def ids_of(session: Session, emails: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for chunk in _chunks(emails):
        ids.extend(session.scalars(select(_TABLE.c.id).where(_TABLE.c.email.in_(chunk))))
    return ids


def audience(session: Session, name: str) -> Audience | None:
    return session.scalar(select(Audience).where(Audience.name == name))


def create_audience(session: Session, name: str, now: datetime) -> Audience:
    created = Audience(name=name, version=1, created_at=now, updated_at=now)
    session.add(created)
    session.flush()
    return created


def members(session: Session, audience_id: int) -> set[int]:
    return set(
        session.scalars(
            select(AudienceMember.profile_id).where(AudienceMember.audience_id == audience_id)
        )
    )


def add_members(
    session: Session, audience: Audience, profile_ids: Sequence[int], now: datetime, *, new: bool
) -> None:
    """Add members; an audience that already existed gets a new version (preparations of
    its deliveries are out of date from now on)."""
    session.execute(
        insert_ignoring_conflicts(session, table(AudienceMember)),
        [{"audience_id": audience.id, "profile_id": pid} for pid in profile_ids],
    )
    if new:
        return
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
