"""Recipient-local sends: the wall clock and waves of a delivery, each log's instant

`deliveries.schedule_local` is the time of day and date every recipient gets the
message at in their own zone; `deliveries.waves` and `first_wave_at` are what the
preparation found; `sending_logs.send_at` is when a log's wave comes (None: at once).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("schedule_local", sa.String(16), nullable=True))
        batch.add_column(sa.Column("waves", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("first_wave_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("sending_logs") as batch:
        batch.add_column(sa.Column("send_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sending_logs") as batch:
        batch.drop_column("send_at")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("first_wave_at")
        batch.drop_column("waves")
        batch.drop_column("schedule_local")
