"""papermill engine `kiln`: `papermill in.ipynb out.ipynb --engine kiln -p k v`.

A thin adapter: papermill parameterizes the notebook and owns the output notebook's bookkeeping
(`metadata.papermill`, saving); Kiln compiles the notebook and runs it on Dask with the same
`compiler.ops.run` path as `kiln run` (cache, retries and lineage included), then hands each
cell's outputs back to papermill.
"""

from __future__ import annotations

import ast
import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
from papermill.engines import Engine
from papermill.exceptions import PapermillException

from compiler.compile.api import compile_notebook_json
from compiler.ops.run import prepare_run, run_notebook

INJECTED_TAG = "injected-parameters"


def injected_parameters(nb: Any) -> dict[str, Any]:
    """Values papermill injected (`-p k v`), read back from its injected cell's assignments."""
    values: dict[str, Any] = {}
    for cell in nb.cells:
        if INJECTED_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        for stmt in ast.parse(cell.source).body:
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        values[target.id] = ast.literal_eval(stmt.value)
    return values


def without_injected_cell(nb: Any) -> Any:
    clean = copy.deepcopy(nb)
    clean.cells = [
        c for c in clean.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])
    ]
    return clean


class KilnEngine(Engine):
    """Runs a papermill job as a Kiln pipeline on Dask."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        input_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not input_path or "://" in str(input_path):
            raise PapermillException(
                "the kiln engine needs a local input notebook path (got "
                f"{input_path!r}): its folder holds the cache and lineage"
            )
        notebook_path = Path(input_path).resolve()
        params = injected_parameters(nb_man.nb)
        source = without_injected_cell(nb_man.nb)
        result = compile_notebook_json(dict(source), notebook_path.name, str(notebook_path))
        spec = result.spec
        if spec is None:
            errors = "\n".join(d.render() for d in result.diagnostics if d.severity == "error")
            raise PapermillException(f"kiln could not compile {notebook_path.name}:\n{errors}")

        cells_by_id = {c.get("id"): c for c in nb_man.nb.cells}
        task_cells = {
            t["name"]: [cells_by_id[cid] for cid in t["cells"] if cid in cells_by_id]
            for t in spec["tasks"]
        }

        def on_event(event: Mapping[str, Any]) -> None:
            if event.get("type") != "task":
                return
            cells = task_cells.get(event.get("task", ""), [])
            status = event.get("status")
            if status == "running":
                for cell in cells:
                    nb_man.cell_start(cell, nb_man.nb.cells.index(cell))
            elif status in ("done", "cached", "failed", "upstream_failed"):
                for cell in cells:
                    if status == "failed":
                        nb_man.cell_exception(cell, nb_man.nb.cells.index(cell))
                    nb_man.cell_complete(cell, nb_man.nb.cells.index(cell))

        prepared = prepare_run(notebook_path, spec=spec, parameters=params)
        run = run_notebook(
            prepared,
            listeners=[on_event],
            scheduler=kwargs.get("scheduler") or os.environ.get("DASK_SCHEDULER_ADDRESS"),
        )
        _copy_outputs(run.output_notebook, nb_man.nb)
        nb_man.nb.metadata["kiln"] = {
            "run_id": run.run_id,
            "pipeline": run.pipeline,
            "version": run.version,
            "status": run.status,
            "output_notebook": run.output_notebook,
        }


def _copy_outputs(run_notebook_path: str | None, nb: Any) -> None:
    """Each task cell gets the outputs and `metadata.kiln` that the run recorded for it."""
    if not run_notebook_path:
        return
    executed = nbformat.read(run_notebook_path, as_version=4)
    by_id = {c.get("id"): c for c in executed.cells}
    for cell in nb.cells:
        ran = by_id.get(cell.get("id"))
        if ran is None or cell.cell_type != "code":
            continue
        cell.outputs = ran.get("outputs", [])
        if "kiln" in ran.metadata:
            cell.metadata["kiln"] = ran.metadata["kiln"]
        cell.execution_count = ran.get("execution_count")
