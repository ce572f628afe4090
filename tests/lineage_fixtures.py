"""Helpers for the lineage tests and benchmark: a chain pipeline and the event stream a run of
it produces (same fields as compiler/runtime/runner.py emits), so the recorder can be driven
without Dask; and `python -m tests.lineage_fixtures` to record runs from another process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _hex(*parts: Any, n: int = 64) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]


def chain_spec(folder: Path, n_tasks: int = 5, name: str = "chain") -> tuple[dict[str, Any], Path]:
    """A notebook (written to `folder`) and its spec: t0 -> t1 -> ... each passing x_i on;
    t0 reads data/in.csv, the last task writes out.txt; parameter `scale` read by t0."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    _write_once(folder / "data" / "in.csv", "a,b\n1,2\n")
    # Written as plain JSON: importing nbformat costs a second and more of CPU per process,
    # which the concurrency tests would pay eight times over.
    cells = [_code_cell("parameters", "scale = 2", "parameters")]
    tasks = []
    for i in range(n_tasks):
        source = f"x{i} = {'scale' if i == 0 else f'x{i - 1} + 1'}"
        cell = _code_cell(f"cell-{i}", source, f"task:t{i}")
        cells.append(cell)
        tasks.append(
            {
                "name": f"t{i}",
                "version": _hex(name, i, n=16),
                "upstream": [f"t{i - 1}"] if i else [],
                "inputs": {f"x{i - 1}": f"t{i - 1}"} if i else {},
                "outputs": [f"x{i}"] if i < n_tasks - 1 else [],
                "parameters": ["scale"] if i == 0 else [],
                "cells": [cell["id"]],
                "code": [{"cell_id": cell["id"], "cell_index": i + 1, "source": source}],
                "setup": "",
                "resources": {"cpu": 1} if i == 0 else {},
                "retries": 1 if i == 1 else 0,
                "timeout": None,
                "cache": True,
                "datasets": {
                    "reads": ["data/in.csv"] if i == 0 else [],
                    "writes": ["out.txt"] if i == n_tasks - 1 else [],
                },
            }
        )
    path = folder / f"{name}.ipynb"
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    text = json.dumps(notebook, indent=1, sort_keys=True) + "\n"
    _write_once(path, text)
    spec = {
        "schema_version": 1,
        "name": name,
        "version": _hex(name, n_tasks, n=16),
        "notebook": {"file": path.name, "digest": _hex(text)},
        "parameters": {"scale": 2},
        "tasks": tasks,
    }
    return spec, path


def _code_cell(cell_id: str, source: str, tag: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": cell_id,
        "metadata": {"tags": [tag]},
        "outputs": [],
        "source": source,
    }


def _write_once(path: Path, text: str) -> None:
    """Several processes may build the same pipeline in one folder: never a half-written file."""
    if path.exists() and path.read_text() == text:
        return
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def chain_events(
    spec: dict[str, Any],
    run_id: str,
    *,
    retry_task: str | None = None,
    fail_task: str | None = None,
    salt: str = "",
) -> Iterator[dict[str, Any]]:
    """The events of one run of `spec`, in the runtime's order. Output digests depend only on
    the task and `salt`, so two runs with one salt produce equal artifacts."""
    yield {"type": "run", "run_id": run_id, "status": "started", "dashboard": None}
    base = {"type": "task", "run_id": run_id, "cached": False, "peak_memory": None}
    for task in spec["tasks"]:
        yield {
            **base,
            "task": task["name"],
            "status": "waiting",
            "attempt": 0,
            "duration": None,
            "cache_key": _hex("key", task["name"], salt),
            "version": task["version"],
            "worker": None,
            "resources": task["resources"],
            "outputs": {},
        }
    failed = False
    for task in spec["tasks"]:
        name = task["name"]
        common = {
            **base,
            "task": name,
            "cache_key": _hex("key", name, salt),
            "version": task["version"],
            "resources": task["resources"],
            "worker": "tcp://127.0.0.1:4001",
        }
        if failed:
            yield {**common, "status": "upstream_failed", "attempt": 0, "outputs": {}}
            continue
        attempt = 1
        yield {**common, "status": "running", "attempt": attempt, "duration": None, "outputs": {}}
        if name == retry_task:
            error = _error(task, "ConnectionError", "flaky")
            yield {
                **common,
                "status": "retrying",
                "attempt": attempt,
                "reason": "retried after 0.5 s (retry 1)",
                "error": error,
                "outputs": {},
            }
            attempt += 1
            yield {**common, "status": "running", "attempt": attempt, "outputs": {}}
        if name == fail_task:
            failed = True
            yield {
                **common,
                "status": "failed",
                "attempt": attempt,
                "duration": 0.01,
                "error": _error(task, "ZeroDivisionError", "division by zero"),
                "outputs": {},
            }
            continue
        outputs = {
            out: {
                "type": "builtins.int",
                "size": 28,
                "digest": _hex("artifact", name, out, salt),
                "stored_bytes": 40,
                "summary": {"len": 1},
            }
            for out in task["outputs"]
        }
        yield {
            **common,
            "status": "done",
            "attempt": attempt,
            "duration": 0.01,
            "peak_memory": 50_000_000,
            "outputs": outputs,
        }
    yield {"type": "run", "run_id": run_id, "status": "failed" if failed else "succeeded"}


def _error(task: dict[str, Any], ename: str, evalue: str) -> dict[str, Any]:
    cell = task["code"][0]
    return {
        "cell_index": cell["cell_index"],
        "cell_id": cell["cell_id"],
        "line": 1,
        "ename": ename,
        "evalue": evalue,
        "traceback": [f"{ename}: {evalue}\n"],
        "reason": "error",
    }


def record_chain_run(
    url: str,
    folder: Path,
    run_id: str,
    n_tasks: int,
    *,
    hang_after: int | None = None,
    salt: str = "",
) -> None:
    """Record one synthetic run through the real recorder (optionally stopping mid-run)."""
    from compiler.lineage import RunRecorder, open_store

    spec, notebook = chain_spec(folder, n_tasks)
    store = open_store(url)
    recorder = RunRecorder(store, spec, notebook, {"scale": 3}, run_id, heartbeat_s=0.5)
    recorder.start()
    for i, event in enumerate(chain_events(spec, run_id, retry_task="t1", salt=salt)):
        if hang_after is not None and i == hang_after:
            print("ready", flush=True)
            time.sleep(3600)
        recorder.record(event)  # raises: a lost row must fail the test, not be logged
    recorder.close()
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("folder", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--hang-after", type=int)
    args = parser.parse_args(argv)
    record_chain_run(args.url, args.folder, args.run_id, args.tasks, hang_after=args.hang_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
