"""deliveries.deployment_claimed_until: who is posting the first Deployment message

The server's follower and the due work's reconcile step may both find a send with no
Deployment message yet; the one that claims it posts it, the other leaves it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 21:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bot.store.models import UTCDateTime

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("deployment_claimed_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("deployment_claimed_until")
