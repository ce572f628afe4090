"""run_metrics.ordinal: where each metric comes in its run's list (the metrics cell's order,
then kiln.log_metric names in first-logged order), so that `kiln metrics`, its --json and the
server's metrics API list them as the notebook declares them instead of alphabetically. Null on
rows recorded before: those runs keep the alphabetical order.

Revision ID: 0007_metric_order
Revises: 0006_run_metrics
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_metric_order"
down_revision = "0006_run_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite has it): a batch operation would copy the table.
    op.add_column("run_metrics", sa.Column("ordinal", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_metrics") as batch:
        batch.drop_column("ordinal")
