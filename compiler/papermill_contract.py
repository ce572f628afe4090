"""papermill's output-notebook contract, for the `kiln` engine.

papermill hands an engine its notebook in memory (upgraded to nbformat 4.5, error banners of an
earlier run removed, the `injected-parameters` cell added) and expects each cell's outputs,
execution count and `metadata.papermill` (status, exception, times) to be set on that very
notebook, through the NotebookExecutionManager's callbacks; papermill itself then adds the error
banners and raises for the first failed cell. This module turns papermill's notebook into the
notebook Kiln compiles (`RunNotebook`) and maps a Kiln run's per-cell results back onto
papermill's cells, by position (never by id: pre-4.5 notebooks get fresh random ids from
papermill, and Kiln's own run notebook keeps none on such cells).

What differs from `kiln run`, on purpose (papermill semantics):
- the injected cell is merged into the parameters cell, so a parameter the notebook does not
  declare is one (papermill has warned about it) and a task that reads it gets it;
- a syntax error fails that cell: the cells before it run, the broken cell gets IPython's
  SyntaxError output, later cells stay `pending` (`kiln run` refuses the whole notebook);
- cells after the failing cell that never ran stay `pending`; cells that did run (an
  independent task) keep their outputs and are `completed`.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"
ERROR_MARKER_TAG = "papermill-error-cell-tag"


def _tags(cell: Mapping[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


@dataclass
class RunNotebook:
    """The notebook Kiln compiles, and where each of its cells came from in papermill's."""

    nb: dict[str, Any]
    origin: list[int]  # origin[i]: index in papermill's notebook of run-notebook cell i
    parameter_cells: list[int] = field(default_factory=list)  # papermill indices
    broken_cell: int | None = None  # papermill index of the first cell that does not compile
    broken_output: dict[str, Any] | None = None  # its error output, as IPython shows it

    def truncated_before(self, run_index: int, output: dict[str, Any]) -> RunNotebook:
        """The cells before `run_index` only (papermill runs up to a broken cell)."""
        return RunNotebook(
            nb={**self.nb, "cells": self.nb["cells"][:run_index]},
            origin=self.origin[:run_index],
            parameter_cells=[i for i in self.parameter_cells if i < self.origin[run_index]],
            broken_cell=self.origin[run_index],
            broken_output=output,
        )


def run_notebook_from(
    papermill_nb: Mapping[str, Any], saved_format: tuple[int, int] | None = None
) -> RunNotebook:
    """papermill's notebook as Kiln compiles it: the injected cell's assignments appended to
    the parameters cell (or made the parameters cell, where the notebook has none).
    `saved_format`: the notebook's (nbformat, minor) on disk. papermill gives a pre-4.5
    notebook random cell ids on every run; Kiln's run notebook keeps the saved format, without
    them (the compiler then names cells by position, the same on every run, so cached
    outputs find their cells again)."""
    nb = copy.deepcopy(dict(papermill_nb))
    cells = nb.get("cells", [])
    if saved_format is not None and saved_format < (4, 5):
        nb["nbformat"], nb["nbformat_minor"] = saved_format
        for cell in cells:
            cell.pop("id", None)
    injected = next((i for i, c in enumerate(cells) if INJECTED_TAG in _tags(c)), None)
    declared = next((i for i, c in enumerate(cells) if PARAMETERS_TAG in _tags(c)), None)
    kept: list[dict[str, Any]] = []
    origin: list[int] = []
    parameter_cells: list[int] = []
    for index, cell in enumerate(cells):
        cell.get("metadata", {}).pop("papermill", None)
        if index == injected and declared is not None:
            parameter_cells.append(index)
            continue  # merged into the parameters cell below
        if index == injected:  # the notebook's parameters cell now (Kiln's run notebook)
            tags = [t for t in _tags(cell) if t != INJECTED_TAG]
            cell["metadata"]["tags"] = [*tags, PARAMETERS_TAG]
        if index in (injected, declared):
            parameter_cells.append(index)
        kept.append(cell)
        origin.append(index)
    if injected is not None and declared is not None:
        at = origin.index(declared)
        merged = kept[at]
        merged["source"] = (
            _text(merged["source"]).rstrip("\n") + "\n" + _text(cells[injected]["source"])
        )
    nb["cells"] = kept
    return RunNotebook(nb=nb, origin=origin, parameter_cells=parameter_cells)


def syntax_error_output(source: str) -> dict[str, Any] | None:
    """The error output IPython gives a cell that does not compile, or None when it compiles
    (magics and `!cmd` are transformed first, as the kernel does)."""
    import traceback

    from IPython.core.inputtransformer2 import TransformerManager

    try:
        code = TransformerManager().transform_cell(source)
        compile(code, "<cell>", "exec")
    except SyntaxError as exc:
        return {
            "output_type": "error",
            "ename": type(exc).__name__,
            "evalue": str(exc),
            "traceback": traceback.format_exception_only(type(exc), exc),
        }
    return None


@dataclass
class CellResult:
    """What a Kiln run did with one cell (from `metadata.kiln` of its run notebook)."""

    status: str  # "ok" | "error" | "not_run"
    outputs: list[dict[str, Any]]
    started: float | None = None
    duration: float | None = None
    kiln: dict[str, Any] = field(default_factory=dict)  # the run notebook's `metadata.kiln`


def cell_results(run_nb: Mapping[str, Any], run: RunNotebook) -> dict[int, CellResult]:
    """papermill index -> the cell's result, for the cells that belong to a task."""
    results: dict[int, CellResult] = {}
    # Kiln adds its own injected cell where a run's values differ from the defaults (computed
    # ones such as float('nan') always do); it is not one of the compiled cells.
    compiled = [c for c in run_nb.get("cells", []) if INJECTED_TAG not in _tags(c)]
    for index, cell in enumerate(compiled):
        kiln = cell.get("metadata", {}).get("kiln")
        if cell.get("cell_type") != "code" or not kiln or index >= len(run.origin):
            continue
        own = kiln.get("cell") or {}
        status = own.get("status") or "not_run"
        if status not in ("ok", "error"):
            status = "not_run"
        results[run.origin[index]] = CellResult(
            status=status,
            outputs=list(cell.get("outputs", [])),
            started=own.get("started"),
            duration=own.get("duration"),
            kiln=dict(kiln),
        )
    return results


def as_node(output: Any) -> Any:
    """An output as papermill's notebook holds them (attribute access, as nbclient gives)."""
    import nbformat

    return nbformat.from_dict(copy.deepcopy(output))


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def apply_results(
    nb_man: Any,
    run: RunNotebook,
    results: Mapping[int, CellResult],
    run_started: float,
    run_finished: float,
    task_errors: Mapping[int, dict[str, Any]] | None = None,
) -> int | None:
    """Set each cell's outputs, execution count and `metadata.papermill` on papermill's
    notebook. `task_errors`: papermill index -> error output for a task that failed without a
    cell error (a worker that died, a timeout outside the cell's code). Returns the index of
    the failed cell, if any."""
    nb = nb_man.nb
    failed = _first_failure(results, run, task_errors or {})
    count = 0
    for index, cell in enumerate(nb.cells):
        reached = failed is None or index <= failed
        result = results.get(index)
        meta = cell.metadata.setdefault("papermill", {})
        if result is not None and result.kiln:
            cell.metadata["kiln"] = copy.deepcopy(result.kiln)  # task, cache key, run id
        ran: bool
        if result is not None and result.status in ("ok", "error"):
            ran = True
            cell.outputs = [as_node(o) for o in result.outputs]
            started = result.started or run_started
            ended = started + (result.duration or 0.0)
        elif index == failed and index == run.broken_cell:
            ran = True
            cell.outputs = [as_node(run.broken_output)]
            started = ended = run_finished
        elif index == failed and task_errors and index in task_errors:
            ran = True
            cell.outputs = [*getattr(cell, "outputs", []), as_node(task_errors[index])]
            started = ended = run_finished
        elif result is None and reached and index != failed:
            # Not a task cell (markdown, parameters, injected, setup, empty): done when the
            # run got past it, as papermill's loop would have.
            ran = cell.cell_type == "code" and bool(_text(cell.source).strip())
            started = ended = run_started
        else:
            continue  # never ran: stays pending
        meta["start_time"] = _iso(started)
        meta["end_time"] = _iso(ended)
        meta["duration"] = ended - started
        meta["status"] = "completed"
        meta["exception"] = False
        if cell.cell_type == "code" and ran and _text(cell.source).strip():
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if output.get("output_type") == "execute_result":
                    output["execution_count"] = count
        if index == failed:
            nb_man.cell_exception(cell, index)
    return failed


def _first_failure(
    results: Mapping[int, CellResult],
    run: RunNotebook,
    task_errors: Mapping[int, dict[str, Any]],
) -> int | None:
    candidates = [i for i, r in results.items() if r.status == "error"]
    candidates += list(task_errors)
    if run.broken_cell is not None:
        candidates.append(run.broken_cell)
    return min(candidates) if candidates else None
