"""seen requests: the replay guard of signed requests and provider tokens

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seen_requests",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_seen_requests")),
    )
    with op.batch_alter_table("seen_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seen_requests_seen_at"), ["seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("seen_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seen_requests_seen_at"))
    op.drop_table("seen_requests")
