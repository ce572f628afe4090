"""The pipeline's metrics, checks and drift thresholds, read from the notebook's tags.

A cell tagged `metrics` (Kale: `pipeline-metrics`) is not a task: it names the metrics, by the
names it reads (`accuracy`, `f1`, or a dict `scores` whose keys become `scores.logreg.f1`), and
carries the `check:`/`warn:` tags. Each name's value comes from the task that binds it last
before the metrics cell, which reports it when it finishes; a name no task binds but the
parameters cell does is a metric too, its value the run's parameter (Kale's own examples print
pipeline parameters in their `pipeline-metrics` cell). Literal `kiln.log_metric("name",
...)` calls inside tasks name metrics too. `drift:INPUT<LIMIT` tags sit on the task that
produces (or reads) the input.

Runs after `dag.build_pipeline` has folded and ordered the tasks: this module only reads the
frozen analyses and the tasks' `binds`, and returns plain data for the spec.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.compile.analysis import BUILTIN_NAMES, analyse_cell
from compiler.compile.notebook import Cell, Notebook
from compiler.compile.tags import METRICS, SKIP, parse_cell_tags
from compiler.model.checks import CHECK, DRIFT, WARN, Condition, parse_condition, parse_drift
from compiler.model.diagnostics import Diagnostic

_MONITOR_PREFIXES = {"check:": CHECK, "warn:": WARN, "drift:": DRIFT}
_TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".csv.gz")


@dataclass
class Monitoring:
    """What `pipeline.json` says about metrics (see the schema's `metrics`/`checks`/`drift`)."""

    metrics: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    metrics_cell: dict[str, Any] | None = None
    task_metrics: dict[str, list[str]] = field(default_factory=dict)  # task -> names to report

    def to_spec(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "checks": self.checks,
            "drift": self.drift,
            "metrics_cell": self.metrics_cell,
        }


def _normal(path: str) -> str:
    """A file path as runtime/monitor.py keys its profile (`./data/x.csv` -> `data/x.csv`)."""
    return os.path.normpath(path)


def is_monitor_tag(tag: str) -> bool:
    return tag.lower().startswith(tuple(_MONITOR_PREFIXES))


def _diag(
    severity: str, code: str, message: str, cell: Cell, line: int | None = None
) -> Diagnostic:
    return Diagnostic(severity, code, message, cell.index, cell.id, line, None)  # type: ignore[arg-type]


def _cell_conditions(
    cell: Cell,
) -> tuple[list[Condition], list[tuple[str, float]], list[Diagnostic]]:
    conditions: list[Condition] = []
    drifts: list[tuple[str, float]] = []
    diagnostics: list[Diagnostic] = []
    for tag in cell.tags:
        prefix = next((p for p in _MONITOR_PREFIXES if tag.lower().startswith(p)), None)
        if prefix is None:
            continue
        kind, body = _MONITOR_PREFIXES[prefix], tag[len(prefix) :]
        try:
            if kind == DRIFT:
                drifts.append(parse_drift(body))
            else:
                conditions.append(parse_condition(kind, body, tag))
        except ValueError as exc:
            diagnostics.append(_diag("error", "bad-tag", f"bad tag {tag!r}: {exc}", cell))
    return conditions, drifts, diagnostics


def logged_metric_names(python: str) -> list[str]:
    """Names in literal `kiln.log_metric("name", v)` / `log_metric({"a": v})` calls."""
    if "log_metric" not in python:
        return []
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called != "log_metric":
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.append(first.value)
        elif isinstance(first, ast.Dict):
            names += [
                k.value
                for k in first.keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
    return names


def pipeline_monitoring(
    notebook: Notebook, tasks: list[Any], parameters: Mapping[str, Any] | None = None
) -> tuple[Monitoring, list[Diagnostic]]:
    """Metrics (name, producing task), checks and drift thresholds, with diagnostics naming
    the cell of each misplaced or unreadable tag. `tasks` are dag.Task records; `parameters`
    the notebook's parameters and their defaults."""
    monitoring = Monitoring()
    diagnostics: list[Diagnostic] = []
    task_of_cell = {a.cell.id: t for t in tasks for a in t.cells}
    metrics_cells: list[Cell] = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = parse_cell_tags(cell)
        if tags.role == SKIP:
            continue
        conditions, drifts, problems = _cell_conditions(cell)
        diagnostics += problems
        if tags.role == METRICS:
            metrics_cells.append(cell)
            monitoring.checks += [c.to_spec() for c in conditions]
        elif conditions:
            diagnostics.append(
                _diag(
                    "error",
                    "misplaced-check",
                    f"{conditions[0].tag!r}: check: and warn: tags belong on the cell tagged "
                    "`metrics` (or Kale's `pipeline-metrics`)",
                    cell,
                )
            )
        if drifts:
            task = task_of_cell.get(cell.id)
            if task is None:
                diagnostics.append(
                    _diag("error", "misplaced-drift", "drift: tags belong on a task's cell", cell)
                )
            else:
                diagnostics += _drift_entries(monitoring, task, drifts, cell)
    if len(metrics_cells) > 1:
        diagnostics.append(
            _diag(
                "error",
                "duplicate-metrics",
                f"only one cell may be tagged metrics (cell {metrics_cells[0].index} is already)",
                metrics_cells[1],
            )
        )
    seen: set[str] = set()
    if metrics_cells:
        cell = metrics_cells[0]
        monitoring.metrics_cell = {"cell_id": cell.id, "cell_index": cell.index}
        diagnostics += _metrics_cell_names(monitoring, cell, tasks, seen, parameters or {})
    for task in tasks:
        for analysis in task.cells:
            for name in logged_metric_names(analysis.python):
                if name not in seen:
                    seen.add(name)
                    monitoring.metrics.append(
                        {"name": name, "task": task.name, "source": "log_metric"}
                    )
    declared = {m["name"] for m in monitoring.metrics}
    for check in monitoring.checks:
        name = check["metric"]
        if not any(name == d or name.startswith(d + ".") for d in declared):
            assert metrics_cells
            diagnostics.append(
                _diag(
                    "warning",
                    "unknown-metric",
                    f"{check['tag']!r} checks {name!r}, which the metrics cell does not read "
                    "and no literal kiln.log_metric call names: the check fails unless a task "
                    "logs it",
                    metrics_cells[0],
                )
            )
    return monitoring, diagnostics


def _metrics_cell_names(
    monitoring: Monitoring,
    cell: Cell,
    tasks: list[Any],
    seen: set[str],
    parameters: Mapping[str, Any],
) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    analysis = analyse_cell(cell)
    before = [t for t in tasks if t.cells[0].cell.index < cell.index]
    before.sort(key=lambda t: t.cells[0].cell.index)
    for ev in analysis.events:
        if ev.kind not in ("read", "deferred") or ev.name in seen:
            continue
        producer = next((t for t in reversed(before) if ev.name in t.binds), None)
        if producer is None and ev.name in parameters:
            default = parameters[ev.name]
            if default is not None and not isinstance(default, bool | int | float):
                diagnostics.append(
                    _diag(
                        "warning",
                        "metric-not-a-number",
                        f"the metrics cell reads parameter {ev.name!r}, whose default "
                        f"{default!r} is not a number or boolean: it is not recorded",
                        cell,
                        ev.line,
                    )
                )
                continue
            seen.add(ev.name)  # the run's value of it: recorded when the run is judged
            monitoring.metrics.append({"name": ev.name, "task": None, "source": "parameter"})
            continue
        if producer is None:
            if ev.name in BUILTIN_NAMES:
                continue  # print(accuracy): print is not a metric
            diagnostics.append(
                _diag(
                    "warning",
                    "metric-not-produced",
                    f"the metrics cell reads {ev.name!r}, which no task before it binds: "
                    "it is not recorded",
                    cell,
                    ev.line,
                )
            )
            continue
        seen.add(ev.name)
        monitoring.metrics.append({"name": ev.name, "task": producer.name, "source": "cell"})
        monitoring.task_metrics.setdefault(producer.name, []).append(ev.name)
    return diagnostics


def _drift_entries(
    monitoring: Monitoring, task: Any, drifts: list[tuple[str, float]], cell: Cell
) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for name, limit in drifts:
        if name in task.binds:
            key, kind = f"{task.name}.{name}", "artifact"
        elif name in task.reads_files or _normal(name) in map(_normal, task.reads_files):
            key, kind = _normal(name), "file"  # as the worker keys the file's profile
        else:
            files = [f for f in task.reads_files if f.lower().endswith(_TABULAR_SUFFIXES)]
            known = ", ".join([*task.binds, *files]) or "none"
            diagnostics.append(
                _diag(
                    "error",
                    "unknown-drift-input",
                    f"drift:{name}: task {task.name!r} neither binds {name!r} nor reads a file "
                    f"of that name (inputs it can watch: {known})",
                    cell,
                )
            )
            continue
        monitoring.drift.append(
            {"input": name, "task": task.name, "key": key, "kind": kind, "threshold": limit}
        )
    return diagnostics
