"""The send guard: when the relay answered each log, a delivery's guard settings, each
execution's window start, the alerts

A send is paused when too many of its latest relayed messages were refused or
hard-bounced. A delivery may set its own threshold (or turn the guard off); an
execution remembers where the guard's window starts, so that a Resume is not undone
by the answers that caused the pause; each pause keeps its alert until it is posted.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("sending_logs") as batch:
        batch.add_column(sa.Column("answered_at", UTCDateTime(), nullable=True))
    op.create_index(
        op.f("ix_sending_logs_execution_answered"),
        "sending_logs",
        ["execution_id", "answered_at"],
        unique=False,
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("guard", sa.JSON(), nullable=True))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("guard_from", UTCDateTime(), nullable=True))
    op.create_table(
        "guard_alerts",
        sa.Column("id", BigId, nullable=False),
        sa.Column(
            "execution_id",
            BigId,
            sa.ForeignKey(
                "executions.id",
                ondelete="CASCADE",
                name=op.f("fk_guard_alerts_execution_id_executions"),
            ),
            nullable=False,
        ),
        sa.Column("tripped_at", UTCDateTime(), nullable=False),
        sa.Column("counted", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("domains", sa.JSON(), nullable=False),
        sa.Column("channel", sa.String(100), nullable=True),
        sa.Column("ts", sa.String(32), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("posted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_alerts")),
    )
    op.create_index(op.f("ix_guard_alerts_execution_id"), "guard_alerts", ["execution_id"])


def downgrade() -> None:
    op.drop_index("ix_guard_alerts_execution_id", table_name="guard_alerts")
    op.drop_table("guard_alerts")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("guard_from")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("guard")
    op.drop_index(op.f("ix_sending_logs_execution_answered"), table_name="sending_logs")
    with op.batch_alter_table("sending_logs") as batch:
        batch.drop_column("answered_at")
