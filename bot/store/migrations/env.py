"""Alembic environment: runs on the engine Greenlight hands it (see store/db.py)."""

from alembic import context

from bot.store.db import ours
from bot.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from bot.config import get_settings
        from bot.store.db import make_engine

        engine = make_engine(get_settings().database_url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_name=ours,
        )
        context.run_migrations()


run_migrations_online()
