"""Schedule runs carry their scheduler's process start time, so a `running` row whose pid now
belongs to another process (pid reuse after a reboot or a crash) is recognised as stale, as run
lineage already does with runs.pid_started_at.

Revision ID: 0004_schedule_pid_started_at
Revises: 0003_schedule_heartbeats
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_schedule_pid_started_at"
down_revision = "0003_schedule_heartbeats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("schedule_runs", sa.Column("pid_started_at", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("schedule_runs") as batch:
        batch.drop_column("pid_started_at")
