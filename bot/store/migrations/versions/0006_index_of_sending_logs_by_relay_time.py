"""index of sending logs by relay time

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 11:41:00.867304
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sending_logs_execution_relayed", ["execution_id", "relayed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sending_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_sending_logs_execution_relayed")
