"""Initial lineage schema: everything the first Kiln release records.

Written out in full (not derived from compiler.lineage.schema) so that later schema changes
are new revisions and this one keeps creating exactly what it always did.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _hex(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    """Create every table: pipelines, runs, task runs, artifacts, datasets."""
    op.create_table(
        "artifacts",
        sa.Column("digest", _hex(64), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("uri", sa.String(length=2048), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_artifacts")),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("path", sa.String(length=2048), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("path", name=op.f("uq_datasets_path")),
    )
    op.create_table(
        "pipelines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", _hex(64), nullable=False),
        sa.Column("spec_digest", _hex(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("notebook_path", sa.String(length=1024), nullable=False),
        sa.Column("notebook_digest", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint(
            "spec_digest", "notebook_path", name=op.f("uq_pipelines_spec_digest_notebook_path")
        ),
    )
    op.create_index("ix_pipelines_name_version", "pipelines", ["name", "version"])

    op.create_table(
        "runs",
        sa.Column("id", _hex(32), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user", sa.String(length=200), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_started_at", sa.Float(), nullable=True),
        sa.Column("python_version", sa.String(length=200), nullable=True),
        sa.Column("packages", sa.JSON(), nullable=True),
        sa.Column("scheduler_address", sa.String(length=255), nullable=True),
        sa.Column("dashboard", sa.String(length=255), nullable=True),
        sa.Column("notebook_path", sa.String(length=1024), nullable=False),
        sa.Column("notebook_digest", sa.String(length=64), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("output_notebook", sa.String(length=1024), nullable=True),
        sa.Column("store_url", sa.String(length=1024), nullable=True),
        sa.Column("rerun_of", _hex(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name=op.f("fk_runs_pipeline_id_pipelines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_notebook_path", "runs", ["notebook_path"])
    op.create_index("ix_runs_pipeline_id", "runs", ["pipeline_id"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "task_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", _hex(32), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("version", _hex(64), nullable=True),
        sa.Column("cache_key", _hex(64), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_log", sa.JSON(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("resources", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("peak_memory", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("error_cell_index", sa.Integer(), nullable=True),
        sa.Column("error_cell_id", sa.String(length=100), nullable=True),
        sa.Column("error_line", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_task_runs_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_runs")),
        sa.UniqueConstraint("run_id", "task", name=op.f("uq_task_runs_run_id_task")),
    )
    op.create_index("ix_task_runs_cache_key", "task_runs", ["cache_key"])

    op.create_table(
        "dataset_accesses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_run_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=5), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_accesses_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["task_run_id"],
            ["task_runs.id"],
            name=op.f("fk_dataset_accesses_task_run_id_task_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_accesses")),
    )
    op.create_index(
        "ix_dataset_accesses_dataset_id_direction_recorded_at",
        "dataset_accesses",
        ["dataset_id", "direction", "recorded_at"],
    )
    op.create_index("ix_dataset_accesses_task_run_id", "dataset_accesses", ["task_run_id"])

    op.create_table(
        "task_inputs",
        sa.Column("task_run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("producer_task", sa.String(length=200), nullable=False),
        sa.Column("artifact_digest", _hex(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_run_id"], ["task_runs.id"], name=op.f("fk_task_inputs_task_run_id_task_runs")
        ),
        sa.PrimaryKeyConstraint("task_run_id", "name", name=op.f("pk_task_inputs")),
    )
    op.create_index("ix_task_inputs_artifact_digest", "task_inputs", ["artifact_digest"])

    op.create_table(
        "task_outputs",
        sa.Column("task_run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("artifact_digest", _hex(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_run_id"], ["task_runs.id"], name=op.f("fk_task_outputs_task_run_id_task_runs")
        ),
        sa.PrimaryKeyConstraint("task_run_id", "name", name=op.f("pk_task_outputs")),
    )
    op.create_index("ix_task_outputs_artifact_digest", "task_outputs", ["artifact_digest"])


def downgrade() -> None:
    for table in (
        "task_outputs",
        "task_inputs",
        "dataset_accesses",
        "task_runs",
        "runs",
        "pipelines",
        "datasets",
        "artifacts",
    ):
        op.drop_table(table)
