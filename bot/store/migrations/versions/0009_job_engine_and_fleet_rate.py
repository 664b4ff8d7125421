"""the job engine's schema (procrastinate, PostgreSQL only) and the fleet's send rate

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:00:00

On PostgreSQL the workers run on procrastinate; its schema (tables, types, functions)
is applied here, once, as its own `procrastinate schema --apply` would. SQLite has no
job engine: one process sends (the embedded mode), and nothing is created for it.
`send_rate` holds the token bucket all the workers share (SEND_RATE_LIMIT).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_rate",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_send_rate")),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        from procrastinate.schema import SchemaManager

        # Through the driver's own cursor, without parameters: the schema holds '%'.
        dbapi = bind.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(SchemaManager.get_schema())
        finally:
            cursor.close()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in (
            "procrastinate_events",
            "procrastinate_periodic_defers",
            "procrastinate_jobs",
            "procrastinate_workers",
        ):
            bind.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.drop_table("send_rate")
