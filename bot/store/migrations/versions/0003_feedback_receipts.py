"""feedback receipts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:30:58.585846
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.store.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feedback_receipts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_event_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "sending_log_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("received_at", bot.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sending_log_id"],
            ["sending_logs.id"],
            name=op.f("fk_feedback_receipts_sending_log_id_sending_logs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_receipts")),
        sa.UniqueConstraint("source", "source_event_id", name="uq_feedback_receipts_source_event"),
    )
    with op.batch_alter_table("feedback_receipts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_feedback_receipts_sending_log_id"), ["sending_log_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback_receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_receipts_sending_log_id"))

    op.drop_table("feedback_receipts")
