"""The run's output notebook: the source notebook with this run's outputs and `metadata.kiln`.

Task cells get the outputs captured on the workers (or, for cache hits, the ones stored with the
cache entry); every other code cell keeps its source and loses stale outputs. Like papermill, a
cell tagged `injected-parameters` follows the parameters cell when the run overrides defaults.

Notebooks are read and written as plain nbformat-4 JSON: importing nbformat costs over a second
here (jsonschema's format checkers), more than a fully cached run takes. Older notebook formats
go through nbformat's converter.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compiler.model.costs import add_costs
from compiler.model.statuses import TaskStatus
from compiler.runtime.judge import verdict_summary
from compiler.runtime.results import RunResult


def _injected_parameters_cell(
    parameters: Mapping[str, Any], defaults: Mapping[str, Any], with_id: bool
) -> Any | None:
    changed = {k: v for k, v in parameters.items() if defaults.get(k, object()) != v}
    if not changed:
        return None
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in changed.items())
    cell: dict[str, Any] = {
        "cell_type": "code",
        "metadata": {"tags": ["injected-parameters"]},
        "source": source.rstrip("\n"),
        "outputs": [],
        "execution_count": None,
    }
    if with_id:  # cell ids exist from nbformat 4.5 on; an older notebook with one is invalid
        cell["id"] = uuid.uuid4().hex[:8]
    return cell


def _has_cell_ids(nb: Mapping[str, Any]) -> bool:
    return (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5)


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def build_output_notebook(
    node: Any,
    *,
    spec: Mapping[str, Any],
    result: RunResult,
    cells_by_task: Mapping[str, list[dict[str, Any]]],
    owned: bool = False,
) -> Any:
    """A copy of notebook `node` carrying the run's outputs (pure: `node` is not modified),
    or `node` itself filled in when the caller hands it over (`owned`: the driver's snapshot,
    read for this run only; copying it was ~15 ms of a 500-task run's end)."""
    nb = node if owned else copy.deepcopy(node)
    task_results = {t.name: t for t in result.tasks}
    # cell id (and index, for notebooks without ids) -> (task name, captured cell record)
    by_id: dict[str, tuple[str, dict[str, Any] | None]] = {}
    by_index: dict[int, tuple[str, dict[str, Any] | None]] = {}
    for task in spec["tasks"]:
        task_cells = cells_by_task.get(task["name"], [])
        captured_by_id = {c.get("cell_id"): c for c in task_cells}
        # A cache entry made when the cells had other ids (papermill gives notebooks saved
        # without ids new random ones each run) still holds this task's cells, in order.
        captured_by_index = {c.get("cell_index"): c for c in task_cells}
        for code_cell in task.get("code", []):
            entry = (
                task["name"],
                captured_by_id.get(code_cell["cell_id"])
                or captured_by_index.get(code_cell["cell_index"]),
            )
            by_id[code_cell["cell_id"]] = entry
            by_index[code_cell["cell_index"]] = entry

    execution_count = 0
    parameters_at: int | None = None
    cells = nb["cells"]
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        metadata = cell.setdefault("metadata", {})
        tags = metadata.get("tags", []) or []
        if "parameters" in tags and parameters_at is None:
            parameters_at = index
        cell["outputs"] = []
        cell["execution_count"] = None
        metadata.pop("kiln", None)
        found = by_id.get(cell.get("id", "")) or by_index.get(index)
        if found is None:
            continue
        task_name, captured = found
        task = task_results[task_name]
        cell_status = task.status
        if captured is not None:
            outputs = [copy.deepcopy(o) for o in captured.get("outputs", [])]
            if captured.get("status") == "not_run":
                cell_status = "not_run"
            elif outputs or captured.get("status") in ("ok", "error"):
                execution_count += 1
                cell["execution_count"] = execution_count
                for output in outputs:
                    if output.get("output_type") == "execute_result":
                        output["execution_count"] = execution_count
            cell["outputs"] = outputs
        elif task.status in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED):
            cell_status = "not_run"
        metadata["kiln"] = {
            "run_id": result.run_id,
            "task": task_name,
            "version": task.version,
            "cache_key": task.cache_key,
            "status": cell_status,
            "task_status": task.status,
            "cached": task.cached,
            "duration": task.duration,
            "cost": task.cost,
            "cost_saved": task.cost_saved,
            "artifacts": {name: info.get("digest") for name, info in task.outputs.items()},
        }
        if captured is not None:  # this cell's own outcome, within its task's
            metadata["kiln"]["cell"] = {
                k: captured.get(k) for k in ("status", "started", "duration")
            }

    fill_metrics_cell(cells, spec, result)
    injected = _injected_parameters_cell(
        result.parameters, spec.get("parameters") or {}, _has_cell_ids(nb)
    )
    if injected is not None:
        cells.insert(parameters_at + 1 if parameters_at is not None else 0, injected)

    own = dict(nb.get("metadata", {}).get("kiln") or {})  # the notebook's owner, team, budget
    owner = dict(spec.get("owner") or {})
    nb.setdefault("metadata", {})["kiln"] = {
        **{k: own[k] for k in ("owner", "team", "budget") if own.get(k)},
        "owner": owner.get("name") or own.get("owner"),
        "team": owner.get("team") or own.get("team"),
        "cost": add_costs(t.cost for t in result.tasks),
        "cost_saved": add_costs(t.cost_saved for t in result.tasks if t.cached),
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "version": result.version,
        "status": result.status,
        "parameters": result.parameters,
        "started": result.started,
        "finished": result.finished,
        **monitoring_metadata(result),
    }
    return nb


def fill_metrics_cell(cells: list[Any], spec: Mapping[str, Any], result: RunResult) -> None:
    """The metrics cell shows the run's metrics and verdicts; a failed check is an error output
    there, so papermill (which raises on error outputs) fails the run too."""
    where = spec.get("metrics_cell")
    if not where:  # no metrics cell: never match a cell by a missing id (pre-4.5 notebooks)
        return
    cell = next((c for c in cells if c.get("id") == where.get("cell_id")), None)
    index = where.get("cell_index")
    if cell is None and isinstance(index, int) and 0 <= index < len(cells):
        cell = cells[index]  # a notebook without cell ids (nbformat < 4.5)
    if cell is None or cell.get("cell_type") != "code":
        return
    width = max((len(n) for n in result.metrics), default=0)
    lines = [f"{name.ljust(width)}  {value!r}" for name, value in result.metrics.items()]
    lines += [v["message"] for v in result.verdicts if v.get("message")]
    outputs: list[dict[str, Any]] = []
    if lines:
        outputs.append({"output_type": "stream", "name": "stdout", "text": "\n".join(lines) + "\n"})
    failed = [v["message"] for v in result.verdicts if v["kind"] == "check" and not v["passed"]]
    if failed:
        outputs.append(
            {
                "output_type": "error",
                "ename": "CheckFailed",
                "evalue": "; ".join(failed),
                "traceback": [f"CheckFailed: {m}" for m in failed],
            }
        )
    cell["outputs"] = outputs
    cell.setdefault("metadata", {})["kiln"] = {
        "run_id": result.run_id,
        "status": result.status,
        "metrics_cell": True,
        **monitoring_metadata(result),
    }


def monitoring_metadata(result: RunResult) -> dict[str, Any]:
    """Metrics and verdicts for `metadata.kiln` (profiles stay in the lineage store)."""
    if not (result.metrics or result.verdicts):
        return {}
    return {
        "metrics": result.metrics,
        "flagged": result.flagged,
        "baseline_run": result.baseline_run,
        "verdicts": [verdict_summary(v) for v in result.verdicts],
        "error": result.error,
    }


def read_notebook_json(path: Path) -> dict[str, Any]:
    """The notebook as nbformat-4 JSON (converted by nbformat only when older)."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    if nb.get("nbformat") != 4:
        import nbformat

        nb = json.loads(nbformat.writes(nbformat.read(str(path), as_version=4)))
        for index, cell in enumerate(nb.get("cells", [])):
            cell["id"] = f"cell-{index}"  # as the compiler names them (not the converter's)
    return dict(nb)


def write_notebook_atomic(nb: Mapping[str, Any], path: Path) -> None:
    """Write with sorted keys, one line per notebook, via a temporary file and a rename.

    Not indented as nbformat writes: json's C encoder only serves `indent=None`, and the
    pure-Python one took 0.22 s of a 500-task run's end (its tasks' records in the cells'
    metadata), ~6x the compact form. Jupyter reads both; saving it from JupyterLab indents it
    again. An output notebook is a record of a run, not a file people edit and diff."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # One write of the whole text: json.dump to the file made one write call per token
        # (66,000 for a 500-task notebook, a fifth of the time spent writing it).
        text = json.dumps(nb, sort_keys=True, ensure_ascii=False, default=repr)
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_output_notebook(
    node: Mapping[str, Any],
    output_path: Path,
    *,
    spec: Mapping[str, Any],
    result: RunResult,
    cells_by_task: Mapping[str, list[dict[str, Any]]],
    owned: bool = False,
) -> Path:
    """`node`: the source notebook as read when the run started (see read_notebook_json);
    `owned`: see build_output_notebook."""
    nb = build_output_notebook(
        node, spec=spec, result=result, cells_by_task=cells_by_task, owned=owned
    )
    write_notebook_atomic(nb, Path(output_path))
    return Path(output_path)
