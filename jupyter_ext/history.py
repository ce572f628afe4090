"""What the Pipeline panel shows for the active cell: its task's recent runs, from the lineage
store (`compiler.lineage.queries`), with paths made relative to the server root.

This module only picks fields and rewrites paths; every query is the library's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.lineage import LineageStore, find_task, list_runs, show_run
from jupyter_ext.stores import inside

TASK_FIELDS = (
    "status",
    "version",
    "duration",
    "cached",
    "attempts",
    "attempt_log",  # the run timeline draws one bar per attempt
    "started_at",
    "ended_at",
    "parameters",
    "error",
    "cost",
    "cost_saved",
)
ARTIFACT_FIELDS = ("name", "digest", "type", "size", "stored_bytes", "summary")


def file_ref(root: Path, notebook_file: Path, path: str, digest: str | None) -> dict[str, Any]:
    """A file a task read or wrote: its name as the notebook sees it, and its API path when the
    file is under the server root (so the UI can open it)."""
    full = Path(path)
    try:
        name = full.relative_to(notebook_file.parent).as_posix()
    except ValueError:
        name = str(full)
    found = inside(root, full)
    return {
        "name": name,
        "path": found.relative_to(root).as_posix() if found else None,
        "digest": digest,
    }


def task_view(root: Path, notebook_file: Path, task: dict[str, Any]) -> dict[str, Any]:
    view = {key: task.get(key) for key in TASK_FIELDS}
    view["outputs"] = [{k: o.get(k) for k in ARTIFACT_FIELDS} for o in task.get("outputs", [])]
    view["inputs"] = [{"name": i["name"], "producer": i["producer"]} for i in task["inputs"]]
    for direction in ("reads", "writes"):
        view[direction] = [
            file_ref(root, notebook_file, f["path"], f.get("digest")) for f in task[direction]
        ]
    return view


def task_history(
    store: LineageStore,
    root: Path,
    notebook_file: Path,
    task: str | None,
    limit: int,
    cell_id: str | None = None,
) -> list[dict[str, Any]]:
    """The notebook's latest runs (newest first). With `task`: only runs that had that task,
    each with the task's record; without: each run with all its tasks. `cell_id`, the cell the
    task starts at, finds its runs under earlier names too (`find_task`): a rename keeps the
    lineage; `recorded_as` says the name a run knew it by."""
    history = []
    for listed in list_runs(store, notebook=notebook_file, limit=limit):
        run = show_run(store, listed["run_id"])
        tasks = {t["task"]: t for t in run["tasks"]}
        found = find_task(run["tasks"], task, cell_id) if task is not None else None
        if task is not None and found is None:
            continue
        item = {
            "run_id": run["run_id"],
            "status": run["status"],
            "started_at": run["started_at"],
            "ended_at": run["ended_at"],
            "duration": run["duration"],
            "user": run["user"],
            "pipeline_version": run["pipeline"]["version"],
            "parameters": run["parameters"],
            "has_output": inside(root, run["output_notebook"]) is not None,
            "owner": run.get("owner"),
            "team": run.get("team"),
            "cost": run.get("cost"),
            "budget": run.get("budget"),
        }
        if found is not None:
            item["task"] = task_view(root, notebook_file, dict(found))
            item["recorded_as"] = found["task"]
        else:
            item["tasks"] = {name: task_view(root, notebook_file, t) for name, t in tasks.items()}
        history.append(item)
    return history
