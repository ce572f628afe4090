"""Metrics, verdicts, input profiles and baselines in the lineage store (migration 0005).

    load_baseline(connection, notebook_path)   what a new run is judged against
    record_monitoring(connection, run_id, d)   a finished run's metrics, verdicts, profiles
    metrics_history(store, notebook, limit)    `kiln metrics`: the last runs, one row each
                                               (compiler/lineage/history.py, SQL text)
    set_baseline(store, run)                   `kiln baseline set RUN`
    run_drift(store, run, against)             `kiln drift RUN [--against RUN]`

The baseline of a notebook is the run pinned with `kiln baseline set`, else its last succeeded
run (flagged or not). "Which code and data gave this accuracy" is one join: run_metrics ->
runs (parameters, git commit, notebook digest) -> pipelines (version, spec).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from compiler.lineage.history import baseline_run_id, metric_ordinals, metrics_of
from compiler.lineage.history import metrics_history as metrics_history
from compiler.lineage.queries import LineageNotFound, resolve_run_id
from compiler.lineage.schema import (
    baselines,
    input_profiles,
    pipelines,
    run_metrics,
    run_outcomes,
    run_verdicts,
    runs,
)
from compiler.lineage.store import LineageStore, sql_rows
from compiler.model.checks import DEFAULT_DRIFT_THRESHOLD
from compiler.model.clock import utcnow
from compiler.model.drift import profile_drift


def _profiles_of(connection: Connection, run_id: str) -> dict[str, Any]:
    rows = connection.execute(
        select(input_profiles.c.input_key, input_profiles.c.profile).where(
            input_profiles.c.run_id == run_id
        )
    )
    return {key: profile for key, profile in rows}


def load_baseline(
    connection: Connection, notebook_path: str, exclude: str | None = None
) -> dict[str, Any] | None:
    sql = sql_rows(connection)
    run_id, pinned = baseline_run_id(sql, notebook_path, exclude)
    if run_id is None:
        return None
    return {
        "run_id": run_id,
        "pinned": pinned,
        "metrics": dict(metrics_of(sql, [run_id]).get(run_id, {})),
        "profiles": _profiles_of(connection, run_id),
    }


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def record_monitoring(
    connection: Connection,
    run_id: str,
    data: Mapping[str, Any],
    declared: Sequence[str] = (),
) -> None:
    """Write a finished run's metrics, verdicts and profiles (`data`: RunResult.to_dict();
    `declared`: the names the metrics cell reads, in its order, which orders the metrics).
    Idempotent: a retried transaction or a second finish replaces the rows. A run with none
    of them writes nothing (and so also records into a store not yet at revision 0004)."""
    metric_rows, profile_rows = [], []
    # Metrics of the run itself (parameters the metrics cell reads): no task reported them.
    from_tasks = {name for task in data.get("tasks") or [] for name in task.get("metrics") or {}}
    for name, value in (data.get("metrics") or {}).items():
        if name not in from_tasks and isinstance(value, bool | int | float):
            metric_rows.append(
                {
                    "run_id": run_id,
                    "name": name,
                    "task": None,
                    "value": float(value),
                    "is_bool": isinstance(value, bool),
                }
            )
    for task in data.get("tasks") or []:
        for name, value in (task.get("metrics") or {}).items():
            metric_rows.append(
                {
                    "run_id": run_id,
                    "name": name,
                    "task": task.get("name"),
                    "value": float(value),
                    "is_bool": isinstance(value, bool),
                }
            )
        for key, profile in (task.get("profiles") or {}).items():
            profile_rows.append(
                {
                    "run_id": run_id,
                    "input_key": key,
                    "task": task.get("name"),
                    "source": profile.get("source"),
                    "rows": profile.get("rows"),
                    "profile": profile,
                }
            )
    # Produced order: the tasks' (each as its names were logged, then the metrics cell's), then
    # the parameters the cell reads; ranked as the cell declares them (history.metric_ordinals).
    produced = [*(r for r in metric_rows if r["task"] is not None), *metric_rows]
    ordinals = metric_ordinals(list(dict.fromkeys(r["name"] for r in produced)), declared)
    for row in metric_rows:
        row["ordinal"] = ordinals[row["name"]]
    verdict_rows = [
        {
            "run_id": run_id,
            "kind": v["kind"],
            "subject": v.get("metric") or v.get("input") or "",
            "passed": bool(v["passed"]),
            "value": _float(v.get("value")),
            "threshold": _float(v.get("threshold")),
            "baseline_value": _float(v.get("baseline_value")),
            "baseline_run": v.get("baseline_run"),
            "tag": v.get("tag"),
            "message": v.get("message"),
            "drifted_columns": (v.get("drift") or {}).get("drifted"),
            "details": {"op": v.get("op"), "drift": v.get("drift")} if v.get("drift") else None,
        }
        for v in data.get("verdicts") or []
    ]
    if not (metric_rows or profile_rows or verdict_rows):
        return
    for table in (run_metrics, run_verdicts, input_profiles, run_outcomes):
        connection.execute(delete(table).where(table.c.run_id == run_id))
    for table, rows in (
        (run_metrics, metric_rows),
        (input_profiles, profile_rows),
        (run_verdicts, verdict_rows),
    ):
        if rows:
            connection.execute(insert(table), rows)
    connection.execute(
        insert(run_outcomes).values(
            run_id=run_id,
            flagged=bool(data.get("flagged")),
            baseline_run=data.get("baseline_run"),
        )
    )


def flagged_runs(connection: Connection, run_ids: list[str]) -> set[str]:
    """Which of these runs are flagged (for `kiln runs`, `kiln show`, the server)."""
    if not run_ids:
        return set()
    rows = connection.execute(
        select(run_outcomes.c.run_id).where(
            run_outcomes.c.run_id.in_(run_ids), run_outcomes.c.flagged.is_(True)
        )
    )
    return {r for (r,) in rows}


def set_baseline(store: LineageStore, run: str) -> dict[str, Any]:
    """Pin `run` as its notebook's baseline; returns {run_id, notebook_path, replaced}."""

    def write(connection: Connection) -> dict[str, Any]:
        run_id = resolve_run_id(connection, run)
        row = connection.execute(
            select(runs.c.notebook_path, runs.c.status).where(runs.c.id == run_id)
        ).one()
        if row.status != "succeeded":
            raise LineageNotFound(
                f"run {run_id} {row.status}: only a succeeded run can be a baseline"
            )
        before = connection.execute(
            select(baselines.c.run_id).where(baselines.c.notebook_path == row.notebook_path)
        ).scalar()
        connection.execute(delete(baselines).where(baselines.c.notebook_path == row.notebook_path))
        connection.execute(
            insert(baselines).values(
                notebook_path=row.notebook_path, run_id=run_id, set_at=utcnow()
            )
        )
        return {"run_id": run_id, "notebook_path": row.notebook_path, "replaced": before}

    return store.write(write)


def run_drift(store: LineageStore, run: str, against: str | None = None) -> dict[str, Any]:
    """Each profiled input of `run` scored against `against` (default: the baseline the run
    was judged against, else its notebook's baseline now), with the run's drift limits."""
    with store.reading() as connection:
        run_id = resolve_run_id(connection, run)
        row = connection.execute(
            select(runs.c.notebook_path, run_outcomes.c.baseline_run, pipelines.c.spec)
            .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
            .outerjoin(run_outcomes, run_outcomes.c.run_id == runs.c.id)
            .where(runs.c.id == run_id)
        ).one()
        other: str | None
        if against is not None:
            other = resolve_run_id(connection, against)
        else:
            other = (
                row.baseline_run
                or baseline_run_id(sql_rows(connection), row.notebook_path, run_id)[0]
            )
        if other is None:
            raise LineageNotFound(
                f"run {run_id} has no baseline to compare with; pass --against RUN"
            )
        current = _profiles_of(connection, run_id)
        then = _profiles_of(connection, other)
    limits = {d["key"]: float(d["threshold"]) for d in (row.spec or {}).get("drift") or []}
    inputs = []
    for key, profile in current.items():
        limit = limits.get(key, DEFAULT_DRIFT_THRESHOLD)
        if key not in then:
            inputs.append({"input": key, "threshold": limit, "compared": False})
            continue
        drift = profile_drift(profile, then[key], limit)
        inputs.append({"input": key, "compared": True, **drift})
    return {"run_id": run_id, "against": other, "inputs": inputs}


def monitoring_summary(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's metrics and verdicts as OpenLineage's `kilnMetrics` run facet carries them
    (no profiles: a facet is per event, and the store keeps those)."""
    if not event.get("metrics") and not event.get("verdicts"):
        return None
    return {
        "metrics": dict(event.get("metrics") or {}),
        "flagged": bool(event.get("flagged")),
        "baselineRun": event.get("baseline_run"),
        "verdicts": [
            {
                "kind": v.get("kind"),
                "subject": v.get("metric") or v.get("input"),
                "passed": v.get("passed"),
                "value": v.get("value"),
                "threshold": v.get("threshold"),
                "baselineValue": v.get("baseline_value"),
                "message": v.get("message"),
            }
            for v in event.get("verdicts") or []
        ],
    }


def metrics_diff(store: LineageStore, run_a: str, run_b: str) -> dict[str, Any]:
    """For `kiln diff`: each metric in A or B, and B's inputs scored against A's profiles."""
    with store.reading() as connection:
        a, b = resolve_run_id(connection, run_a), resolve_run_id(connection, run_b)
        values = metrics_of(sql_rows(connection), [a, b])
        spec = connection.execute(
            select(pipelines.c.spec)
            .join(runs, runs.c.pipeline_id == pipelines.c.id)
            .where(runs.c.id == b)
        ).scalar()
        then, now = _profiles_of(connection, a), _profiles_of(connection, b)
    ma, mb = values.get(a, {}), values.get(b, {})
    names = [*ma, *(n for n in mb if n not in ma)]
    limits = {d["key"]: float(d["threshold"]) for d in (spec or {}).get("drift") or []}
    drift = []
    for key, profile in now.items():
        if key in then:
            found = profile_drift(profile, then[key], limits.get(key, DEFAULT_DRIFT_THRESHOLD))
            scores = {c: s["score"] for c, s in found["columns"].items() if s["score"] is not None}
            drift.append(
                {
                    "input": key,
                    "drifted": found["drifted"],
                    "max_score": found["max_score"],
                    "scores": scores,
                }
            )
    return {
        "metrics": [{"name": n, "a": ma.get(n), "b": mb.get(n)} for n in names],
        "drift": drift,
    }
