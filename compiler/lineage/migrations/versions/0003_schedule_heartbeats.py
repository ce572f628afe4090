"""Schedule runs carry a heartbeat, so a run left `running` by a scheduler that crashed on
another host is recognised (its pid cannot be checked from here) instead of blocking its
schedule forever.

Revision ID: 0003_schedule_heartbeats
Revises: 0002_schedules
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_schedule_heartbeats"
down_revision = "0002_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("schedule_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("schedule_runs") as batch:
        batch.drop_column("heartbeat_at")
