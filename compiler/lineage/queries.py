"""Questions asked of the lineage store; every answer is plain data (dicts and lists).

- `list_runs`: the latest runs, optionally of one notebook.
- `show_run`: one run with its tasks, attempts, errors, artifacts and files.
- `lineage`: which cells, task versions, parameters and input files produced an artifact, a task
  run's outputs or a file the pipeline wrote: a provenance tree back to the notebook's cells.
- `diff_runs`: what changed between two runs (task code, parameters, input files) and which
  outputs differ.

Run ids and digests may be abbreviated to any unique prefix, like git's. A query reads a run
with a handful of statements whatever its size (no per-task round trips).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.engine import Connection, Row

from compiler.lineage.errors import AmbiguousTarget as AmbiguousTarget
from compiler.lineage.errors import LineageNotFound as LineageNotFound
from compiler.lineage.run_context import file_digest
from compiler.lineage.schema import (
    artifacts,
    dataset_accesses,
    datasets,
    pipelines,
    runs,
    task_inputs,
    task_outputs,
    task_runs,
)
from compiler.lineage.store import LineageStore
from compiler.model.clock import as_utc
from compiler.model.clock import iso as iso

MIN_PREFIX = 4


def _seconds_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    start, end = as_utc(start), as_utc(end)
    return round((end - start).total_seconds(), 3) if start and end else None


def prefix_match(column: Any, prefix: str) -> ColumnElement[bool]:
    """`column` starts with `prefix`, as an index range (byte-ordered columns, see schema)."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper)


def resolve_run_id(connection: Connection, prefix: str) -> str:
    prefix = prefix.strip()
    if not prefix:
        raise AmbiguousTarget("a run id (or a prefix of one) is needed")
    exact = connection.execute(select(runs.c.id).where(runs.c.id == prefix)).scalar()
    if exact is not None:
        return str(exact)
    found = (
        connection.execute(select(runs.c.id).where(prefix_match(runs.c.id, prefix)).limit(6))
        .scalars()
        .all()
    )
    if not found:
        raise LineageNotFound(f"no run {prefix!r} in the lineage store")
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise AmbiguousTarget(f"run id prefix {prefix!r} is ambiguous: {shown}")
    return str(found[0])


# -- one run, loaded in a few statements ------------------------------------------------------


@dataclass
class RunData:
    run: dict[str, Any]
    pipeline: dict[str, Any]
    spec_tasks: dict[str, dict[str, Any]]
    tasks: dict[str, dict[str, Any]]  # task name -> task run row
    outputs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    inputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    writes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _run_row(row: Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    return {
        "run_id": data["id"],
        "status": data["status"],
        "parameters": data["parameters"] or {},
        "started_at": iso(data["started_at"]),
        "ended_at": iso(data["ended_at"]),
        "duration": _seconds_between(data["started_at"], data["ended_at"]),
        "heartbeat_at": iso(data["heartbeat_at"]),
        "user": data["user"],
        "host": data["host"],
        "pid": data["pid"],
        "python_version": data["python_version"],
        "packages": data["packages"] or {},
        "scheduler_address": data["scheduler_address"],
        "dashboard": data["dashboard"],
        "notebook_path": data["notebook_path"],
        "notebook_digest": data["notebook_digest"],
        "git_commit": data["git_commit"],
        "git_dirty": data["git_dirty"],
        "output_notebook": data["output_notebook"],
        "store_url": data["store_url"],
        "rerun_of": data["rerun_of"],
        "error": data["error"],
        "owner": data["owner"],
        "team": data["team"],
        "cost": data["cost"],
        "budget": data["budget"],
    }


def _task_row(data: Any, spec_task: Mapping[str, Any] | None) -> dict[str, Any]:
    error = data["error"] or None
    if error is not None:
        error = {
            "cell_index": data["error_cell_index"],
            "cell_id": data["error_cell_id"],
            "line": data["error_line"],
            "message": data["error_message"],
            "reason": error.get("reason"),
            "traceback": error.get("traceback"),
        }
    return {
        "task": data["task"],
        "task_run_id": data["id"],
        "version": data["version"],
        "cache_key": data["cache_key"],
        "status": data["status"],
        "cached": bool(data["cached"]),
        "attempts": data["attempts"],
        "attempt_log": data["attempt_log"] or [],
        "worker": data["worker"],
        "resources": data["resources"] or {},
        "started_at": iso(data["started_at"]),
        "ended_at": iso(data["ended_at"]),
        "duration": data["duration"],
        "peak_memory": data["peak_memory"],
        "cost": data["cost"],
        "cost_saved": data["cost_saved"],
        "error": error,
        "cells": cells_of(spec_task),
    }


def cells_of(spec_task: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [
        {"index": c.get("cell_index"), "id": c.get("cell_id")}
        for c in (spec_task or {}).get("code") or []
    ]


def task_cell(spec_task: Mapping[str, Any] | None) -> str | None:
    """The id of the cell a task starts at (its `task:` tag's cell): the task's identity across
    renames. A rename rewrites the tag, never the cell's id (nbformat 4.5 ids are kept by
    JupyterLab and the compiler), so runs recorded under the old name are the same task's."""
    cells = (spec_task or {}).get("cells") or []
    first = cells[0] if cells else None
    if isinstance(first, Mapping):  # show_run's form: [{"index", "id"}]
        first = first.get("id")
    return str(first) if first else None


def find_task(
    tasks: Iterable[Mapping[str, Any]], name: str, cell_id: str | None = None
) -> Mapping[str, Any] | None:
    """The record of task `name` (whose first cell is `cell_id`, when known) among one run's
    tasks: the task that started at that cell, whatever it was called then; else the task of
    that name (its tag moved to another cell)."""
    listed = list(tasks)
    if cell_id:
        for task in listed:
            if task_cell(task) == cell_id:
                return task
    for task in listed:
        if task.get("task", task.get("name")) == name:
            return task
    return None


def load_run(connection: Connection, run_id: str) -> RunData:
    run = connection.execute(select(runs).where(runs.c.id == run_id)).first()
    if run is None:
        raise LineageNotFound(f"no run {run_id!r} in the lineage store")
    pipeline = connection.execute(select(pipelines).where(pipelines.c.id == run.pipeline_id)).one()
    spec = pipeline.spec or {}
    spec_tasks = {t["name"]: t for t in spec.get("tasks") or []}
    task_rows = connection.execute(
        select(task_runs).where(task_runs.c.run_id == run_id).order_by(task_runs.c.id)
    ).all()
    data = RunData(
        run=_run_row(run),
        pipeline={
            "name": pipeline.name,
            "version": pipeline.version,
            "spec_digest": pipeline.spec_digest,
            "notebook_path": pipeline.notebook_path,
            "spec": spec,
        },
        spec_tasks=spec_tasks,
        tasks={r.task: _task_row(r._mapping, spec_tasks.get(r.task)) for r in task_rows},
    )
    by_id = {t["task_run_id"]: name for name, t in data.tasks.items()}
    ids = list(by_id)
    for row in connection.execute(
        select(task_outputs, artifacts)
        .join(artifacts, artifacts.c.digest == task_outputs.c.artifact_digest, isouter=True)
        .where(task_outputs.c.task_run_id.in_(ids))
        .order_by(task_outputs.c.task_run_id, task_outputs.c.name)
    ):
        data.outputs.setdefault(by_id[row.task_run_id], {})[row.name] = {
            "name": row.name,
            "digest": row.artifact_digest,
            "type": row.type,
            "size": row.size,
            "stored_bytes": row.stored_bytes,
            "summary": row.summary,
            "uri": row.uri,
        }
    for row in connection.execute(
        select(task_inputs)
        .where(task_inputs.c.task_run_id.in_(ids))
        .order_by(task_inputs.c.task_run_id, task_inputs.c.name)
    ):
        data.inputs.setdefault(by_id[row.task_run_id], []).append(
            {"name": row.name, "producer": row.producer_task, "digest": row.artifact_digest}
        )
    for row in connection.execute(
        select(dataset_accesses, datasets.c.path)
        .join(datasets, datasets.c.id == dataset_accesses.c.dataset_id)
        .where(dataset_accesses.c.task_run_id.in_(ids))
        .order_by(dataset_accesses.c.id)
    ):
        target = data.reads if row.direction == "read" else data.writes
        target.setdefault(by_id[row.task_run_id], []).append(
            {"path": row.path, "digest": row.digest, "recorded_at": iso(row.recorded_at)}
        )
    return data


# -- list and show ----------------------------------------------------------------------------


def list_runs(
    store: LineageStore, notebook: str | Path | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The latest runs, newest first, with per-status task counts."""
    query = (
        select(runs, pipelines.c.name.label("pipeline"), pipelines.c.version.label("version"))
        .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
        .order_by(runs.c.started_at.desc(), runs.c.id.desc())
        .limit(limit)
    )
    if notebook is not None:
        query = query.where(runs.c.notebook_path == str(Path(notebook).resolve()))
    with store.reading() as connection:
        rows = connection.execute(query).all()
        ids = [r.id for r in rows]
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for run_id, status, n in connection.execute(
            select(task_runs.c.run_id, task_runs.c.status, func.count())
            .where(task_runs.c.run_id.in_(ids))
            .group_by(task_runs.c.run_id, task_runs.c.status)
        ):
            counts[run_id][status] = n
    listed = []
    for row in rows:
        item = _run_row(row)
        item.update(pipeline=row.pipeline, version=row.version, tasks=dict(counts[row.id]))
        listed.append(item)
    return listed


def show_run(store: LineageStore, run_id: str) -> dict[str, Any]:
    with store.reading() as connection:
        data = load_run(connection, resolve_run_id(connection, run_id))
    tasks = []
    for name, task in data.tasks.items():
        tasks.append(
            {
                **task,
                "parameters": {
                    p: data.run["parameters"].get(p)
                    for p in data.spec_tasks.get(name, {}).get("parameters") or []
                },
                "outputs": list(data.outputs.get(name, {}).values()),
                "inputs": data.inputs.get(name, []),
                "reads": data.reads.get(name, []),
                "writes": data.writes.get(name, []),
            }
        )
    pipeline = {k: v for k, v in data.pipeline.items() if k != "spec"}
    return {**data.run, "pipeline": pipeline, "tasks": tasks}


# -- lineage ------------------------------------------------------------------------------------


def lineage(store: LineageStore, target: str) -> dict[str, Any]:
    """Provenance of `target`: an artifact digest (or prefix), `task@run`, or a written file."""
    target = target.strip()
    with store.reading() as connection:
        root = _resolve_target(connection, target)
        data = load_run(connection, root["run_id"])
        computed_in = _cached_origins(connection, data)
    tree = _provenance(data, root["task"], computed_in)
    parameters: dict[str, Any] = {}
    input_files: dict[str, str | None] = {}
    for node in tree["nodes"].values():
        parameters.update(node["parameters"])
        for read in node["reads"]:
            input_files[read["path"]] = read["digest"]
    return {
        "target": root,
        "run": {
            k: data.run[k]
            for k in ("run_id", "status", "started_at", "notebook_path", "git_commit", "git_dirty")
        },
        "pipeline": {"name": data.pipeline["name"], "version": data.pipeline["version"]},
        "parameters": dict(sorted(parameters.items())),
        "input_files": [{"path": p, "digest": d} for p, d in sorted(input_files.items())],
        "tree": tree["root"],
    }


def _looks_like_digest(target: str) -> bool:
    return len(target) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in target)


def _resolve_target(connection: Connection, target: str) -> dict[str, Any]:
    if "@" in target:
        task, _, run_prefix = target.partition("@")
        run_id = resolve_run_id(connection, run_prefix)
        found = connection.execute(
            select(task_runs.c.id).where(task_runs.c.run_id == run_id, task_runs.c.task == task)
        ).first()
        if found is None:
            raise LineageNotFound(f"run {run_id} has no task {task!r}")
        return {"kind": "task_run", "task": task, "run_id": run_id}
    digest = target.removeprefix("sha256:")
    if _looks_like_digest(digest) and not Path(target).exists():
        found_artifact = _artifact_target(connection, digest)
        if found_artifact is not None:
            return found_artifact
    return _file_target(connection, target)


def _artifact_target(connection: Connection, digest: str) -> dict[str, Any] | None:
    digests = (
        connection.execute(
            select(artifacts.c.digest).where(prefix_match(artifacts.c.digest, digest)).limit(6)
        )
        .scalars()
        .all()
    )
    if not digests:
        return None
    if len(digests) > 1:
        raise AmbiguousTarget(f"digest prefix {digest!r} matches {len(digests)}+ artifacts")
    full = str(digests[0])
    # The latest run that computed it (a cache hit only reused it); else the latest at all.
    producer = connection.execute(
        select(task_runs.c.task, task_runs.c.run_id, task_outputs.c.name, artifacts)
        .join(task_outputs, task_outputs.c.task_run_id == task_runs.c.id)
        .join(runs, runs.c.id == task_runs.c.run_id)
        .join(artifacts, artifacts.c.digest == task_outputs.c.artifact_digest)
        .where(task_outputs.c.artifact_digest == full)
        .order_by(task_runs.c.cached, runs.c.started_at.desc())
        .limit(1)
    ).first()
    if producer is None:
        return None
    producers = connection.execute(
        select(func.count()).where(task_outputs.c.artifact_digest == full)
    ).scalar_one()
    return {
        "kind": "artifact",
        "digest": full,
        "name": producer.name,
        "type": producer.type,
        "size": producer.size,
        "summary": producer.summary,
        "uri": producer.uri,
        "task": producer.task,
        "run_id": producer.run_id,
        "produced_by_task_runs": producers,
    }


def _file_target(connection: Connection, target: str) -> dict[str, Any]:
    path = str(Path(target).expanduser().resolve())
    rows = connection.execute(select(datasets).where(datasets.c.path == path)).all()
    if not rows:  # not written from here: match the file name's tail anywhere
        tail = "/" + target.lstrip("./")
        rows = connection.execute(
            select(datasets).where(datasets.c.path.like(f"%{_escape_like(tail)}", escape="\\"))
        ).all()
    if not rows:
        raise LineageNotFound(
            f"{target!r} is not an artifact digest, task@run, or a file a run wrote"
        )
    if len(rows) > 1:
        paths = ", ".join(sorted(r.path for r in rows)[:5])
        raise AmbiguousTarget(f"{target!r} matches several files: {paths}")
    dataset = rows[0]
    current = file_digest(Path(dataset.path))
    writes = (
        select(dataset_accesses.c.digest, task_runs.c.task, task_runs.c.run_id)
        .join(task_runs, task_runs.c.id == dataset_accesses.c.task_run_id)
        .where(dataset_accesses.c.dataset_id == dataset.id, dataset_accesses.c.direction == "write")
        .order_by(dataset_accesses.c.recorded_at.desc(), dataset_accesses.c.id.desc())
        .limit(1)
    )
    # The file as it is now was written by...; else the latest write (the file changed since).
    write = connection.execute(writes.where(dataset_accesses.c.digest == current)).first()
    matches = write is not None
    if write is None:
        write = connection.execute(writes).first()
    if write is None:
        raise LineageNotFound(f"no recorded run wrote {dataset.path} (runs only read it)")
    return {
        "kind": "file",
        "path": dataset.path,
        "digest": write.digest,
        "current_digest": current,
        "current_matches": matches,
        "task": write.task,
        "run_id": write.run_id,
    }


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _cached_origins(connection: Connection, data: RunData) -> dict[str, str]:
    """task -> run that computed the outputs a cached task run reused (same cache key)."""
    keys = {
        t["cache_key"]: name for name, t in data.tasks.items() if t["cached"] and t["cache_key"]
    }
    if not keys:
        return {}
    origins: dict[str, str] = {}
    rows = connection.execute(
        select(task_runs.c.cache_key, task_runs.c.run_id)
        .join(runs, runs.c.id == task_runs.c.run_id)
        .where(
            task_runs.c.cache_key.in_(list(keys)),
            task_runs.c.cached.is_(False),
            task_runs.c.status == "done",
        )
        .order_by(runs.c.started_at)
    )
    for cache_key, run_id in rows:
        origins[keys[cache_key]] = run_id  # the latest wins
    return origins


def _provenance(data: RunData, root_task: str, computed_in: Mapping[str, str]) -> dict[str, Any]:
    """The root task's node with its producers as children (each task expanded once)."""
    nodes: dict[str, dict[str, Any]] = {}
    run_parameters = data.run["parameters"]

    def node(name: str) -> dict[str, Any]:
        task = data.tasks.get(name, {})
        spec_task = data.spec_tasks.get(name, {})
        return {
            "task": name,
            "run_id": data.run["run_id"],
            "version": task.get("version") or spec_task.get("version"),
            "status": task.get("status"),
            "cached": task.get("cached", False),
            "computed_in_run": computed_in.get(name),
            "cells": cells_of(spec_task),
            "parameters": {p: run_parameters.get(p) for p in spec_task.get("parameters") or []},
            "reads": data.reads.get(name, []),
            "outputs": list(data.outputs.get(name, {}).values()),
        }

    def expand(name: str, path: tuple[str, ...]) -> dict[str, Any]:
        if name in nodes:
            return {"task": name, "see_above": True}
        nodes[name] = node(name)
        by_producer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for consumed in data.inputs.get(name) or _spec_inputs(data, name):
            by_producer[consumed["producer"]].append(consumed)
        children = []
        for producer, edges in by_producer.items():
            if producer in path:
                continue  # cannot happen in a DAG; never loop on bad data
            child = expand(producer, (*path, name))
            child["via"] = [{"name": e["name"], "digest": e["digest"]} for e in edges]
            children.append(child)
        for upstream in data.spec_tasks.get(name, {}).get("upstream") or []:
            if upstream not in by_producer and upstream not in path:  # `after:` edges
                child = expand(upstream, (*path, name))
                child["via"] = []
                children.append(child)
        return {**nodes[name], "inputs": children}

    return {"root": expand(root_task, ()), "nodes": nodes}


def _spec_inputs(data: RunData, name: str) -> Iterable[dict[str, Any]]:
    """Inputs from the spec when none were recorded (the task never started)."""
    for input_name, producer in (data.spec_tasks.get(name, {}).get("inputs") or {}).items():
        digest = data.outputs.get(producer, {}).get(input_name, {}).get("digest")
        yield {"name": input_name, "producer": producer, "digest": digest}


# -- diff ---------------------------------------------------------------------------------------


def own_code(spec_task: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a task's version change besides its upstream versions."""
    return (
        tuple(c.get("source") for c in spec_task.get("code") or []),
        spec_task.get("setup"),
        tuple(spec_task.get("parameters") or []),
    )


def _files_by_path(per_task: Mapping[str, list[dict[str, Any]]]) -> dict[str, str | None]:
    files: dict[str, str | None] = {}
    for accesses in per_task.values():
        for access in accesses:
            files.setdefault(access["path"], access["digest"])
    return files


def _changed_pairs(a: Mapping[str, Any], b: Mapping[str, Any], label: str) -> list[dict[str, Any]]:
    return [
        {label: key, "a": a.get(key), "b": b.get(key)}
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def diff_runs(store: LineageStore, run_a: str, run_b: str) -> dict[str, Any]:
    """What changed from run A to run B, and which outputs differ."""
    with store.reading() as connection:
        a = load_run(connection, resolve_run_id(connection, run_a))
        b = load_run(connection, resolve_run_id(connection, run_b))
    code_changed: list[str] = []
    upstream_changed: list[str] = []
    versions: list[dict[str, Any]] = []
    # A task only in A and one only in B that start at the same cell: one task, renamed.
    gone = {task_cell(t): n for n, t in a.spec_tasks.items() if n not in b.spec_tasks}
    renamed = {
        gone[cell]: n
        for n, t in b.spec_tasks.items()
        if n not in a.spec_tasks and (cell := task_cell(t)) and cell in gone
    }
    pairs = [(n, n) for n in a.spec_tasks if n in b.spec_tasks] + list(renamed.items())
    added = [n for n in b.spec_tasks if n not in a.spec_tasks and n not in renamed.values()]
    removed = [n for n in a.spec_tasks if n not in b.spec_tasks and n not in renamed]
    for name_a, name in pairs:
        ta, tb = a.spec_tasks[name_a], b.spec_tasks[name]
        if ta.get("version") != tb.get("version"):
            versions.append({"task": name, "a": ta.get("version"), "b": tb.get("version")})
            (code_changed if own_code(ta) != own_code(tb) else upstream_changed).append(name)
    outputs: list[dict[str, Any]] = []
    for name_a, name in pairs:
        if name_a not in a.tasks or name not in b.tasks:
            continue
        oa, ob = a.outputs.get(name_a, {}), b.outputs.get(name, {})
        for output in sorted(oa.keys() | ob.keys()):
            da, db = oa.get(output, {}).get("digest"), ob.get(output, {}).get("digest")
            if da != db:
                outputs.append({"task": name, "output": output, "a": da, "b": db})
    order = {name: i for i, name in enumerate(b.spec_tasks)}
    outputs.sort(key=lambda o: (order.get(o["task"], len(order)), o["output"]))
    return {
        "run_a": a.run["run_id"],
        "run_b": b.run["run_id"],
        "notebook_path": b.run["notebook_path"],
        "pipeline": {
            "name": b.pipeline["name"],
            "a": a.pipeline["version"],
            "b": b.pipeline["version"],
        },
        "code_changed": code_changed,
        "upstream_changed": upstream_changed,
        "tasks_added": added,
        "tasks_removed": removed,
        "tasks_renamed": [{"a": old, "b": new} for old, new in renamed.items()],
        "task_versions": versions,
        "parameters": _changed_pairs(a.run["parameters"], b.run["parameters"], "name"),
        "input_files": _changed_pairs(_files_by_path(a.reads), _files_by_path(b.reads), "path"),
        "outputs": outputs,
        "output_files": _changed_pairs(_files_by_path(a.writes), _files_by_path(b.writes), "path"),
    }


def last_run_warnings(store: LineageStore, notebook: str | Path) -> tuple[str | None, list[Any]]:
    """(run id, warnings) of the notebook's latest recorded run: the values its tasks changed in
    place without the compiler knowing (runtime/state.py `_reexport`), each with its fix, so
    `kiln check` can say what the compiler needs."""
    latest = list_runs(store, notebook, limit=1)
    if not latest:
        return None, []
    run_id = str(latest[0]["run_id"])
    found: list[Any] = []
    with store.reading() as connection:
        for (log,) in connection.execute(
            select(task_runs.c.attempt_log)
            .where(task_runs.c.run_id == run_id)
            .order_by(task_runs.c.id)
        ):
            entries = [e for e in log or [] if isinstance(e, dict) and e.get("warnings")]
            if entries:  # the last attempt that finished says what this notebook still does
                found.extend(w for w in entries[-1]["warnings"] if isinstance(w, dict))
    return run_id, found
