"""`kiln verify NOTEBOOK`: the notebook top to bottom in one kernel against the pipeline.

Both runs digest each task's outputs with `runtime.digest.value_digest`: the pipeline's workers
report it in each task's record; the kernel run (papermill) gets a probe cell after each task's
last cell that digests what the task hands on, at that point of the notebook. A task whose
outputs differ is where the pipeline computes something the notebook does not.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from compiler.runtime import digest as digest_module

_MARK = "KILN_VERIFY "


@dataclass
class TaskComparison:
    task: str
    same: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # no digest on one side (unpicklable)
    error: str | None = None  # the pipeline task did not finish


@dataclass
class Verification:
    tasks: list[TaskComparison]

    @property
    def ok(self) -> bool:
        return all(not t.different and t.error is None for t in self.tasks)


def probed_notebook(notebook: Path, spec: dict[str, Any], folder: Path) -> Path:
    """A copy of the notebook with a digest probe after each task's last cell."""
    node = nbformat.read(notebook, as_version=4)
    after: dict[int, list[dict[str, Any]]] = {}
    for task in spec["tasks"]:
        if task["code"]:
            last = max(c["cell_index"] for c in task["code"])
            after.setdefault(last, []).append(task)
    cells = [
        nbformat.v4.new_code_cell(inspect.getsource(digest_module) + "\n__kiln_verify__ = {}\n")
    ]
    for index, cell in enumerate(node.cells):
        cells.append(cell)
        for task in after.get(index, []):
            names = json.dumps(task["outputs"])
            cells.append(
                nbformat.v4.new_code_cell(
                    f"__kiln_verify__[{task['name']!r}] = "
                    f"{{n: value_digest(globals()[n]) if n in globals() else None "
                    f"for n in {names}}}"
                )
            )
    cells.append(
        nbformat.v4.new_code_cell(f"import json\nprint({_MARK!r} + json.dumps(__kiln_verify__))")
    )
    node.cells = cells
    out = folder / notebook.name
    nbformat.write(node, out)
    return out


def kernel_digests(notebook: Path, spec: dict[str, Any], cwd: Path) -> dict[str, dict]:
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        probed = probed_notebook(notebook, spec, Path(tmp))
        executed = Path(tmp) / "executed.ipynb"
        papermill.execute_notebook(
            str(probed), str(executed), cwd=str(cwd), progress_bar=False, log_output=False
        )
        node = nbformat.read(executed, as_version=4)
    for output in node.cells[-1].get("outputs", []):
        text = output.get("text", "")
        if _MARK in text:
            return dict(json.loads(text.split(_MARK, 1)[1]))
    raise RuntimeError("the kernel run printed no digests")


def compare(
    spec: dict[str, Any], pipeline_tasks: list[Any], kernel: dict[str, dict]
) -> Verification:
    by_name = {t.name: t for t in pipeline_tasks}
    out = []
    for task in spec["tasks"]:
        result = by_name.get(task["name"])
        row = TaskComparison(task["name"])
        if result is None or result.status not in ("done", "cached"):
            row.error = (result.error or {}).get("evalue") if result else "not run"
            row.error = row.error or (result.status if result else "not run")
        for name in task["outputs"]:
            ours = ((result.outputs if result else {}).get(name) or {}).get("content_digest")
            theirs = kernel.get(task["name"], {}).get(name)
            if ours is None or theirs is None:
                row.unchecked.append(name)
            elif ours == theirs:
                row.same.append(name)
            else:
                row.different.append(name)
        out.append(row)
    return Verification(out)
