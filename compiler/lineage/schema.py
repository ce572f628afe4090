"""The lineage tables, as SQLAlchemy Core metadata (no ORM: rows in, plain dicts out).

The Alembic migrations under `migrations/versions/` create exactly these tables; a test compares
a migrated database with this metadata, so the two cannot drift apart.

Runs, digests and cache keys are lowercase hex and are looked up by prefix (like git). On
PostgreSQL those columns use the "C" collation so that a btree index orders them byte-wise and a
prefix becomes an index range scan; SQLite's default BINARY collation already does.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine

from compiler.model.statuses import RunStatus

# Constraint names are fixed so that later migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def hex_id(length: int) -> TypeEngine[str]:
    """A hex identifier column type, byte-ordered on every backend (see the module docstring)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


TS = DateTime(timezone=True)  # always written in UTC

pipelines = Table(
    "pipelines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", hex_id(64), nullable=False),
    # sha256 of the canonical spec JSON: two specs with one version may still differ in the
    # notebook digest they carry (a markdown edit), and the spec is what a rerun compares.
    Column("spec_digest", hex_id(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("notebook_path", String(1024), nullable=False),
    Column("notebook_digest", String(64)),
    Column("created_at", TS, nullable=False),
    # Who answers for this version (notebook metadata `kiln.owner`, compiler/compile/owners.py).
    Column("owner", String(200)),
    Column("team", String(200)),
    UniqueConstraint("spec_digest", "notebook_path"),
    Index(None, "name", "version"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", hex_id(32), primary_key=True),
    Column("pipeline_id", Integer, ForeignKey("pipelines.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("parameters", JSON, nullable=False),
    Column("started_at", TS, nullable=False, index=True),
    Column("ended_at", TS),
    Column("heartbeat_at", TS),
    Column("user", String(200)),
    Column("host", String(255)),
    Column("pid", Integer),
    # The process's start time tells a live run from a reused pid after a crash.
    Column("pid_started_at", Float),
    Column("python_version", String(200)),
    Column("packages", JSON),
    Column("scheduler_address", String(255)),
    Column("dashboard", String(255)),
    Column("notebook_path", String(1024), nullable=False, index=True),
    Column("notebook_digest", String(64)),
    Column("git_commit", String(64)),
    Column("git_dirty", Boolean),
    Column("output_notebook", String(1024)),
    Column("store_url", String(1024)),
    Column("rerun_of", hex_id(32)),
    Column("error", Text),
    Column("owner", String(200)),
    Column("team", String(200)),
    # Totals of the task costs, what cache hits saved, and money where prices are set
    # (compiler/model/costs.py); the budget the run was held to and whether it went over.
    Column("cost", JSON),
    Column("budget", JSON),
)

task_runs = Table(
    "task_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", hex_id(32), ForeignKey("runs.id"), nullable=False),
    Column("task", String(200), nullable=False),
    Column("version", hex_id(64)),
    Column("cache_key", hex_id(64), index=True),
    Column("status", String(20), nullable=False),
    Column("cached", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("attempt_log", JSON),  # [{attempt, status, worker, error, reason, retry}]
    Column("worker", String(255)),
    Column("resources", JSON),
    Column("started_at", TS),
    Column("ended_at", TS),
    Column("duration", Float),
    Column("peak_memory", BigInteger),
    Column("error", JSON),  # the runtime's error record, traceback included
    Column("error_cell_index", Integer),
    Column("error_cell_id", String(100)),
    Column("error_line", Integer),
    Column("error_message", Text),
    # Resources the task's attempts used (cpu_s, mem_gb_s, gpu_s, wall_s, bytes_written, ...);
    # for a cache hit, `cost_saved` is the recorded cost of the computed run it replaced.
    Column("cost", JSON),
    Column("cost_saved", JSON),
    UniqueConstraint("run_id", "task"),  # also the index for `task@run`
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("digest", hex_id(64), primary_key=True),
    Column("type", String(255)),
    Column("size", BigInteger),
    Column("stored_bytes", BigInteger),
    Column("summary", JSON),  # shape / dtype / columns / len, when the runtime gives them
    Column("uri", String(2048)),
    Column("created_at", TS, nullable=False),
)

# What a task run produced: one row per output name. The digest is null when the value could
# not be stored (unpicklable values still flow in memory).
task_outputs = Table(
    "task_outputs",
    metadata,
    Column("task_run_id", Integer, ForeignKey("task_runs.id"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("artifact_digest", hex_id(64), index=True),
)

# What a task run consumed: its spec inputs, resolved to the producer's artifact in that run.
task_inputs = Table(
    "task_inputs",
    metadata,
    Column("task_run_id", Integer, ForeignKey("task_runs.id"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("producer_task", String(200), nullable=False),
    Column("artifact_digest", hex_id(64), index=True),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(2048), nullable=False, unique=True),  # absolute, resolved
)

# A task run read (at task start) or wrote (at task end) an external file; digest of its
# content at that moment ("missing" when the file was not there).
dataset_accesses = Table(
    "dataset_accesses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_run_id", Integer, ForeignKey("task_runs.id"), nullable=False, index=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("direction", String(5), nullable=False),  # "read" | "write"
    Column("digest", String(64)),
    Column("recorded_at", TS, nullable=False),
    Index(None, "dataset_id", "direction", "recorded_at"),
)

# Schedules (compiler/schedule.py): cron jobs that run a notebook, and each due time they fired.
schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("notebook_path", String(1024), nullable=False),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("engine", String(20), nullable=False),  # "kiln" | "papermill"
    Column("missed_policy", String(20), nullable=False),  # "run_once" | "skip"
    Column("paused", Boolean, nullable=False, default=False),
    Column("created_at", TS, nullable=False),
    Column("next_due_at", TS, nullable=False, index=True),
    # "live": runs the notebook as it is now; "promoted": runs the exported bundle below.
    Column("mode", String(20), nullable=False, server_default="live"),
    Column("promoted_version", String(64)),
    Column("promoted_bundle", String(2048)),
    Column("budget", JSON),  # {"limit": ..., "unit": ..., "policy": "flag" | "fail"}
    Column("grace_s", Integer),  # a due time with no run this long after it is late
)

schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("schedule_id", Integer, ForeignKey("schedules.id"), nullable=False),
    Column("due_at", TS, nullable=False),
    Column("status", String(20), nullable=False, index=True),
    Column("reason", Text),  # why it was skipped
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("host", String(255)),
    Column("pid", Integer),
    # The pid's process start time (psutil): a later process given the same pid is not it.
    Column("pid_started_at", Float),
    # Written while the run goes on: another host tells a live run from a crashed scheduler's.
    Column("heartbeat_at", TS),
    Column("error", Text),
    Column("output_notebook", String(1024)),
    Column("kiln_run_id", hex_id(32)),  # the lineage run it made (engine kiln)
    # One row per due time: the insert that claims a due time fails for a second scheduler.
    UniqueConstraint("schedule_id", "due_at"),
)

# Alert routes (compiler/lineage/alerts.py): where to tell whom, for which events. `target`
# may hold ${ENV} placeholders: secrets are expanded at send time and never stored.
alert_routes = Table(
    "alert_routes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notebook_path", String(1024), index=True),  # null for a schedule's route
    Column("schedule_name", String(200), index=True),
    Column("kind", String(20), nullable=False),  # "email" | "webhook" | "apprise"
    Column("target", Text, nullable=False),
    Column("events", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(200)),
)

# Each alert once per (route, event, subject): a retried evaluation never sends twice, and
# the rows are the record that rate limiting reads.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("route_id", Integer, nullable=False),
    Column("event", String(20), nullable=False),
    Column("subject", String(300), nullable=False),  # run id, or schedule@due time
    Column("scope", String(1100), nullable=False),  # notebook path or schedule name
    Column("status", String(20), nullable=False),  # "sent" | "failed" | "suppressed"
    Column("error", Text),
    Column("sent_at", TS, nullable=False),
    UniqueConstraint("route_id", "event", "subject"),
    Index(None, "route_id", "event", "scope", "sent_at"),
)

# Every promotion and rollback of a schedule's production version, with who and when.
promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("schedule_name", String(200), nullable=False, index=True),
    Column("action", String(20), nullable=False),  # "promote" | "rollback"
    Column("version", String(64), nullable=False),
    Column("bundle_path", String(2048), nullable=False),
    Column("previous_version", String(64)),
    Column("user", String(200)),
    Column("at", TS, nullable=False),
)

# Small documented settings (prices per CPU-hour, GB-hour, GPU-hour): key -> JSON value.
settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", JSON, nullable=False),
)

RUN_STATUSES = tuple(
    str(s)
    for s in (RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED)
)

# -- metrics, checks and input drift (migration 0005; compiler/lineage/metrics.py) -------------

# How a run with metrics or verdicts was judged: flagged (succeeded, but a warn failed or an
# input drifted) and the baseline run its relative checks and drift were compared with. A table
# of its own rather than columns of `runs`, so that code reading `runs` works on stores at
# every revision.
run_outcomes = Table(
    "run_outcomes",
    metadata,
    Column("run_id", hex_id(32), ForeignKey("runs.id"), primary_key=True),
    Column("flagged", Boolean, nullable=False),
    Column("baseline_run", hex_id(32)),
)

# One row per metric value of a run (flattened names: scores.logreg.f1). Booleans are stored as
# 0/1 with is_bool set, so that one numeric column serves charts and comparisons.
run_metrics = Table(
    "run_metrics",
    metadata,
    Column("run_id", hex_id(32), ForeignKey("runs.id"), primary_key=True),
    Column("name", String(300), primary_key=True),
    Column("task", String(200)),
    Column("value", Float, nullable=False),
    Column("is_bool", Boolean, nullable=False, default=False),
    # Its place in the run's list: the metrics cell's order, then kiln.log_metric names in
    # first-logged order (migration 0007; null on older rows, which list alphabetically).
    Column("ordinal", Integer),
)

# What the run was judged on: each check:/warn: condition and each profiled input's drift.
run_verdicts = Table(
    "run_verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", hex_id(32), ForeignKey("runs.id"), nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # "check" | "warn" | "drift"
    Column("subject", String(1024), nullable=False),  # the metric, or the input's key
    Column("passed", Boolean, nullable=False),
    Column("value", Float),
    Column("threshold", Float),
    Column("baseline_value", Float),
    Column("baseline_run", hex_id(32)),
    Column("tag", String(300)),  # as written: check:accuracy>=0.8
    Column("message", Text),
    # Drift only: the drifted columns (read by `kiln metrics`), and every column's score and
    # test (read by `kiln drift`; not by the history, whose cost grows with the runs shown).
    Column("drifted_columns", JSON),
    Column("details", JSON),
)

# The small per-column profile of each tabular input (see compiler/runtime/profile.py).
input_profiles = Table(
    "input_profiles",
    metadata,
    Column("run_id", hex_id(32), ForeignKey("runs.id"), primary_key=True),
    Column("input_key", String(1024), primary_key=True),  # TASK.NAME, or a file's path
    Column("task", String(200)),
    Column("source", String(10)),  # "artifact" | "file"
    Column("rows", BigInteger),
    Column("profile", JSON, nullable=False),
)

# `kiln baseline set RUN`: the run a notebook's later runs are compared with, instead of the
# last succeeded one.
baselines = Table(
    "baselines",
    metadata,
    Column("notebook_path", String(1024), primary_key=True),
    Column("run_id", hex_id(32), ForeignKey("runs.id"), nullable=False),
    Column("set_at", TS, nullable=False),
)
