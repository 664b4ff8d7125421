"""failed Slack Web API calls counted by method, for /metrics

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_call_failures",
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("last_failed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("method", name=op.f("pk_slack_call_failures")),
    )


def downgrade() -> None:
    op.drop_table("slack_call_failures")
