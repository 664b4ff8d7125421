"""deployment message location

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:10:27.163015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deployment_channel", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("deployment_ts", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("deployment_ts")
        batch_op.drop_column("deployment_channel")
