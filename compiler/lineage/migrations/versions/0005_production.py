"""Production: owners on pipelines and runs, costs and budgets, alert routes and deliveries,
promotions, settings (prices); schedules get a mode ("live" for every existing one), a promoted
bundle, a budget and a grace period.

Numbered 0005 because issue 14's metrics migration takes 0004; whichever lands second revises
the other (down_revision below).

Revision ID: 0005_production
Revises: 0004_schedule_pid_started_at
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_production"
down_revision = "0004_schedule_pid_started_at"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200)))
        batch.add_column(sa.Column("team", sa.String(length=200)))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200)))
        batch.add_column(sa.Column("team", sa.String(length=200)))
        batch.add_column(sa.Column("cost", sa.JSON()))
        batch.add_column(sa.Column("budget", sa.JSON()))
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(sa.Column("cost", sa.JSON()))
        batch.add_column(sa.Column("cost_saved", sa.JSON()))
    with op.batch_alter_table("schedules") as batch:
        # Existing schedules keep running the live notebook until someone promotes a version.
        batch.add_column(
            sa.Column("mode", sa.String(length=20), nullable=False, server_default="live")
        )
        batch.add_column(sa.Column("promoted_version", sa.String(length=64)))
        batch.add_column(sa.Column("promoted_bundle", sa.String(length=2048)))
        batch.add_column(sa.Column("budget", sa.JSON()))
        batch.add_column(sa.Column("grace_s", sa.Integer()))
    op.create_table(
        "alert_routes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notebook_path", sa.String(length=1024)),
        sa.Column("schedule_name", sa.String(length=200)),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(length=200)),
        sa.PrimaryKeyConstraint("id", name="pk_alert_routes"),
    )
    op.create_index("ix_alert_routes_notebook_path", "alert_routes", ["notebook_path"])
    op.create_index("ix_alert_routes_schedule_name", "alert_routes", ["schedule_name"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("route_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("scope", sa.String(length=1100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("sent_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.UniqueConstraint(
            "route_id", "event", "subject", name="uq_alert_deliveries_route_id_event_subject"
        ),
    )
    op.create_index(
        "ix_alert_deliveries_route_id_event_scope_sent_at",
        "alert_deliveries",
        ["route_id", "event", "scope", "sent_at"],
    )
    op.create_table(
        "promotions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("schedule_name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("bundle_path", sa.String(length=2048), nullable=False),
        sa.Column("previous_version", sa.String(length=64)),
        sa.Column("user", sa.String(length=200)),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_promotions"),
    )
    op.create_index("ix_promotions_schedule_name", "promotions", ["schedule_name"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )


def downgrade() -> None:
    for table in ("settings", "promotions", "alert_deliveries", "alert_routes"):
        op.drop_table(table)
    with op.batch_alter_table("schedules") as batch:
        for column in ("grace_s", "budget", "promoted_bundle", "promoted_version", "mode"):
            batch.drop_column(column)
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_column("cost_saved")
        batch.drop_column("cost")
    with op.batch_alter_table("runs") as batch:
        for column in ("budget", "cost", "team", "owner"):
            batch.drop_column(column)
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("team")
        batch.drop_column("owner")
