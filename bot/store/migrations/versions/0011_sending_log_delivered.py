"""sending_logs.delivered: a delivery reported since the last relay (without EFS too)

Without EFS a relayed message is Sent at once, so the status cannot say whether the
MTA has also reported it delivered; a soft bounce arriving after that report must not
send the message again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_logs") as batch:
        batch.add_column(
            sa.Column("delivered", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sending_logs") as batch:
        batch.drop_column("delivered")
