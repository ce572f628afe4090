"""Metrics, check verdicts, input profiles and drift per run; pinned baselines; each judged
run's flag (succeeded, but a warn failed or an input drifted) and the baseline it was judged
against. New tables only: `runs` is unchanged.

Revision ID: 0006_run_metrics
Revises: 0005_production
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_run_metrics"
down_revision = "0005_production"
branch_labels = None
depends_on = None


def _hex(length: int) -> sa.types.TypeEngine:
    return sa.String(length=length).with_variant(
        sa.String(length=length, collation="C"), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "run_outcomes",
        sa.Column("run_id", _hex(32), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("baseline_run", _hex(32), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_outcomes_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_outcomes")),
    )
    op.create_table(
        "run_metrics",
        sa.Column("run_id", _hex(32), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("is_bool", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_metrics_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "name", name=op.f("pk_run_metrics")),
    )
    op.create_table(
        "run_verdicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", _hex(32), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("baseline_value", sa.Float(), nullable=True),
        sa.Column("baseline_run", _hex(32), nullable=True),
        sa.Column("tag", sa.String(length=300), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("drifted_columns", sa.JSON(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_verdicts_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_verdicts")),
    )
    op.create_index("ix_run_verdicts_run_id", "run_verdicts", ["run_id"])
    op.create_table(
        "input_profiles",
        sa.Column("run_id", _hex(32), nullable=False),
        sa.Column("input_key", sa.String(length=1024), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_input_profiles_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "input_key", name=op.f("pk_input_profiles")),
    )
    op.create_table(
        "baselines",
        sa.Column("notebook_path", sa.String(length=1024), nullable=False),
        sa.Column("run_id", _hex(32), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_baselines_run_id_runs")),
        sa.PrimaryKeyConstraint("notebook_path", name=op.f("pk_baselines")),
    )


def downgrade() -> None:
    op.drop_table("baselines")
    op.drop_table("input_profiles")
    op.drop_index("ix_run_verdicts_run_id", table_name="run_verdicts")
    op.drop_table("run_verdicts")
    op.drop_table("run_metrics")
    op.drop_table("run_outcomes")
