"""The schema: migrations match the models, and datetimes come back aware in UTC."""

from __future__ import annotations

from datetime import timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from bot.bootstrap import Root
from bot.context import Context
from bot.store.db import current_revision, head_revision, ours
from bot.store.models import Base, Profile


def test_migrations_reach_head_and_match_models(root: Root) -> None:
    assert current_revision(root.engine) == head_revision()
    with root.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": ours})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_datetimes_round_trip_as_aware_utc(ctx: Context) -> None:
    paris = timezone(timedelta(hours=1))
    at = ctx.clock.now().astimezone(paris)
    with ctx.sessions.begin() as s:
        s.add(
            Profile(
                email="a@example.com",
                email_key="a@example.com",
                attributes={"plan": "pro"},
                last_counted_error_at=at,
                created_at=at,
                updated_at=at,
            )
        )
    with ctx.sessions() as s:
        p = s.scalars(select(Profile)).one()
    assert p.last_counted_error_at == at
    assert p.last_counted_error_at.utcoffset() == timedelta(0)
    assert p.attributes == {"plan": "pro"}
    assert p.email_status == "valid"
