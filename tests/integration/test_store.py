"""The schema: migrations match the models, and datetimes come back aware in UTC."""

from __future__ import annotations

from datetime import timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from bot.bootstrap import Root
from bot.context import Context
from bot.store import replays
from bot.store.db import current_revision, head_revision, ours
from bot.store.models import Base, Profile, SeenRequest


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


def test_the_replay_guard_forgets_old_keys_a_request_in_some_and_never_a_fresh_one(
    ctx: Context,
) -> None:
    """Old keys are pruned by the requests that fall on it (one in PRUNE_EVERY), and a
    key is refused the second time however the pruning falls."""
    now = ctx.clock.now()
    keep = timedelta(minutes=10)
    with ctx.sessions.begin() as s:
        assert replays.first_use(s, "old", now - 2 * keep, keep)
    fresh = [f"sig-{n}" for n in range(4 * replays.PRUNE_EVERY)]
    with ctx.sessions.begin() as s:
        assert all(replays.first_use(s, key, now, keep) for key in fresh)
    with ctx.sessions.begin() as s:
        assert not any(replays.first_use(s, key, now, keep) for key in fresh)
        keys = set(s.scalars(select(SeenRequest.key)))
    assert "old" not in keys and set(fresh) <= keys
