"""guard_alerts.shown_state: the delivery state a posted alert's buttons were drawn for

An alert offers Resume while its delivery is paused and Stop send while it can stop;
once a person acts (here, on the Deployment message, or from the command line) the
alert is drawn again, like the Deployment message, from the state it last showed.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("guard_alerts") as batch:
        batch.add_column(sa.Column("shown_state", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guard_alerts") as batch:
        batch.drop_column("shown_state")
