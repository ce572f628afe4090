"""A notebook's metrics across its runs, read as SQL text that two back-ends run unchanged.

    history = metrics_history(store, notebook, limit=10)  # LineageStore or SqliteReader
    with store.reading_sql() as sql:
        run_id, pinned = baseline_run_id(sql, notebook_path)

Every statement here is one string with `:name` parameters: SQLAlchemy's `text()` runs it on
SQLite and PostgreSQL (`LineageStore.reading_sql`), and the standard library's sqlite3 runs it
as it is (`compiler/lineage/sqlite_reader.py`), which spares `kiln metrics` importing
SQLAlchemy. The rows come back as the drivers give them, so the shaping below accepts both
forms of a value: JSON as text (SQLite) or decoded (psycopg), times as text or datetimes,
booleans as 0/1 or bool.

The metric names are listed as the notebook declares them: the metrics cell's order, then the
names `kiln.log_metric` recorded in first-logged order (`run_metrics.ordinal`, see
`metric_ordinals`); runs recorded before that column existed list theirs alphabetically.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from compiler.lineage.sqlite_reader import SqlRows
from compiler.model.clock import iso


class SqlSource(Protocol):
    """A lineage store that answers SQL text: `LineageStore` or `SqliteReader`."""

    def reading_sql(self) -> AbstractContextManager[SqlRows]: ...


# -- the statements ---------------------------------------------------------------------------

# The ids of a notebook's last :limit runs, as a subquery: the metrics and verdicts statements
# select by it rather than by a list of ids, which with -n 1000 was 1,000 bound parameters to
# render and send per statement (~40 % of those statements' time).
LAST_RUNS = (
    "SELECT id FROM runs WHERE notebook_path = :path ORDER BY started_at DESC, id DESC LIMIT :limit"
)

RUNS = """
SELECT runs.id, runs.status, run_outcomes.flagged, runs.started_at, runs.parameters,
       run_outcomes.baseline_run, runs.error, pipelines.version
FROM runs
JOIN pipelines ON pipelines.id = runs.pipeline_id
LEFT OUTER JOIN run_outcomes ON run_outcomes.run_id = runs.id
WHERE runs.notebook_path = :path
ORDER BY runs.started_at DESC, runs.id DESC
LIMIT :limit
"""

# Each run's metrics in their recorded order (ordinal), alphabetical where it is not recorded.
METRICS = """
SELECT run_id, name, value, is_bool, ordinal FROM run_metrics
WHERE run_id IN ({runs})
ORDER BY run_id, COALESCE(ordinal, 0), name
"""

VERDICT_FIELDS = (
    "kind",
    "subject",
    "passed",
    "value",
    "threshold",
    "baseline_value",
    "baseline_run",
    "message",
    "tag",
    "drifted_columns",
)
VERDICTS = f"""
SELECT run_id, {", ".join(VERDICT_FIELDS)} FROM run_verdicts
WHERE run_id IN ({{runs}})
ORDER BY id
"""

PINNED_BASELINE = "SELECT run_id FROM baselines WHERE notebook_path = :path"
LAST_SUCCEEDED = """
SELECT id FROM runs
WHERE notebook_path = :path AND status = :succeeded {exclude}
ORDER BY started_at DESC, id DESC
LIMIT 1
"""


def listed_runs(run_ids: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """`:run_0, :run_1, ...` and their values, for `IN (...)` over a few known runs."""
    parameters = {f"run_{i}": run_id for i, run_id in enumerate(run_ids)}
    return ", ".join(f":{name}" for name in parameters), parameters


# -- shaping the rows (either driver's values) ------------------------------------------------


def from_json(value: Any) -> Any:
    """A JSON column: text on SQLite (SQLAlchemy's JSON type is not applied to text()),
    already decoded by psycopg on PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def as_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def moment(value: Any) -> dt.datetime | None:
    """A time column: SQLite holds SQLAlchemy's text form ('2026-12-01 22:10:05.123456')."""
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def _shape_metrics(rows: list[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """({run: {name: value}} in each run's order, {(run, name): ordinal})."""
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    ordinals: dict[Any, Any] = {}
    for run_id, name, value, is_bool, ordinal in rows:
        values[run_id][name] = bool(value) if is_bool else value
        ordinals[run_id, name] = ordinal
    return values, ordinals


def metrics_of(sql: SqlRows, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{run: {name: value}} for a few known runs, each run's metrics in its recorded order."""
    if not run_ids:
        return {}
    runs, parameters = listed_runs(run_ids)
    return _shape_metrics(sql(METRICS.format(runs=runs), parameters))[0]


def _verdicts(rows: list[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    # The drifted columns' JSON texts repeat from run to run ('null', '["x3"]'): each is decoded
    # once (decoding all 3,000 was a third of this function's time with -n 1000).
    decoded: dict[Any, list[str]] = {}
    # Plain tuples zipped with the names: attribute access per field was two thirds of this
    # function's time with -n 1000 (3,000 verdicts).
    for run_id, *values in rows:
        verdict = dict(zip(VERDICT_FIELDS, values, strict=True))
        verdict["passed"] = bool(verdict["passed"])
        drifted = verdict["drifted_columns"]
        if isinstance(drifted, str):
            if drifted not in decoded:
                decoded[drifted] = from_json(drifted) or []
            drifted = decoded[drifted]
        verdict["drifted_columns"] = list(drifted or ())  # a list of each verdict's own
        out[run_id].append(verdict)
    return out


def baseline_run_id(
    sql: SqlRows, notebook_path: str, exclude: str | None = None
) -> tuple[str | None, bool]:
    """(run id, pinned?) of the notebook's baseline: the run pinned with `kiln baseline set`,
    else its last succeeded run (flagged or not); (None, False) when it has none."""
    pinned = sql(PINNED_BASELINE, {"path": notebook_path})
    if pinned and pinned[0][0] != exclude:
        return str(pinned[0][0]), True
    parameters: dict[str, Any] = {"path": notebook_path, "succeeded": "succeeded"}
    if exclude is not None:
        parameters["exclude"] = exclude
    statement = LAST_SUCCEEDED.format(exclude="AND id != :exclude" if exclude else "")
    last = sql(statement, parameters)
    return (str(last[0][0]), False) if last else (None, False)


# -- the order of the metric names ------------------------------------------------------------

# run_metrics.ordinal: DECLARED_STEP * (the declaring name's place in the metrics cell) + the
# flattened key's place under it (scores -> scores.a, scores.b), then LOGGED + the first-logged
# place of a name the cell does not declare. Spaced, not dense, so that one name has the same
# ordinal in a run that recorded only part of the metrics (a failed task) as in a full one.
DECLARED_STEP = 1_000
LOGGED = 1_000_000


def metric_ordinals(names: Sequence[str], declared: Sequence[str]) -> dict[str, int]:
    """Each recorded name's ordinal (see above); `names` in the order the run produced them,
    `declared` the metrics cell's names (the spec's `metrics`) in the cell's order."""
    place = {name: i for i, name in enumerate(declared)}
    under: dict[str, int] = defaultdict(int)
    out: dict[str, int] = {}
    logged = 0
    for name in names:
        head = next(
            (name[:i] for i in [len(name), *_dots(name)] if name[:i] in place),
            None,
        )
        if head is None:
            out[name] = LOGGED + logged
            logged += 1
            continue
        out[name] = DECLARED_STEP * min(place[head], LOGGED // DECLARED_STEP - 1) + min(
            under[head], DECLARED_STEP - 1
        )
        under[head] += 1
    return out


def _dots(name: str) -> Iterator[int]:
    """The prefixes of a flattened name, longest first: scores.logreg.f1 -> scores.logreg,
    scores."""
    i = len(name)
    while (i := name.rfind(".", 0, i)) > 0:
        yield i


def _names_in_order(
    run_ids_newest_first: Sequence[str],
    metrics: Mapping[str, Mapping[str, Any]],
    ordinals: Mapping[Any, Any],
) -> list[str]:
    """Every name, by its ordinal in the newest run that has it (the notebook as it is now);
    names recorded without one after those, in the order they were met."""
    key: dict[str, tuple[float, int]] = {}
    for run_id in run_ids_newest_first:
        for name in metrics.get(run_id, {}):
            if name not in key:
                ordinal = ordinals.get((run_id, name))
                key[name] = (float("inf") if ordinal is None else ordinal, len(key))
    return sorted(key, key=key.__getitem__)


# -- `kiln metrics` ---------------------------------------------------------------------------


def metrics_history(store: SqlSource, notebook: str | Path, limit: int = 10) -> dict[str, Any]:
    """The notebook's last `limit` runs, oldest first, with their metrics and verdicts; the
    metric names in the notebook's order; the baseline. Four statements whatever the run
    count, each on an index (runs.notebook_path, run_metrics' key, run_verdicts.run_id)."""
    path = str(Path(notebook).resolve())
    last = {"path": path, "limit": limit}
    with store.reading_sql() as sql:
        rows = sql(RUNS, last)
        metrics, ordinals = _shape_metrics(sql(METRICS.format(runs=LAST_RUNS), last))
        verdicts = _verdicts(sql(VERDICTS.format(runs=LAST_RUNS), last))
        baseline, pinned = baseline_run_id(sql, path)
    names = _names_in_order([r[0] for r in rows], metrics, ordinals)
    listed = []
    for run_id, status, flagged, started_at, parameters, baseline_run, error, version in reversed(
        rows
    ):
        listed.append(
            {
                "run_id": run_id,
                "status": status,
                "flagged": bool(flagged),
                "started_at": iso(moment(started_at)),
                "version": version,
                "parameters": from_json(parameters) or {},
                "baseline_run": baseline_run,
                "error": error,
                "metrics": metrics.get(run_id, {}),
                "verdicts": verdicts.get(run_id, []),
            }
        )
    return {
        "notebook_path": path,
        "metrics": names,
        "runs": listed,
        "baseline": {"run_id": baseline, "pinned": pinned} if baseline else None,
    }
