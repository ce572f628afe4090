"""Before anything runs: each task's cache key, and which cache entries this run may use.

Planning reads the artifact store (manifests, artifact digests) and the files the tasks read;
it submits nothing. Its result is plain data that the state machine (state.py) starts from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.model.spec import PipelineSpec, TaskSpec
from compiler.runtime.cache import (
    ArtifactStore,
    cache_key,
    changed_written_files,
    dataset_digests,
    local_module_digests,
)
from compiler.runtime.monitor import manifest_has_metrics
from compiler.runtime.store_writes import await_commit


@dataclass(frozen=True)
class PlannedTask:
    cache_key: str
    previous_manifest: dict[str, Any] | None  # the last stored entry for this key
    hit_manifest: dict[str, Any] | None  # that entry, verified and usable by this run
    cache_note: str | None  # why an existing entry was not used


@dataclass(frozen=True)
class RunPlan:
    tasks: Mapping[str, PlannedTask]
    may_run: list[str]  # tasks without a usable entry, and everything downstream of them


def plan_cache_keys(
    spec: PipelineSpec,
    parameter_values: Mapping[str, Any],
    notebook_dir: Path,
    module_dir: Path | None = None,
) -> dict[str, str]:
    """cache_key per task, in topological order (upstream keys are needed first). Data paths
    are relative to `notebook_dir`, local modules live in `module_dir` (default: the same)."""
    keys: dict[str, str] = {}
    for task in spec.tasks:
        keys[task.name] = cache_key(
            task.version,
            {name: parameter_values[name] for name in task.parameters},
            [keys[up] for up in task.upstream],
            {
                **dataset_digests(task.reads, notebook_dir),
                **local_module_digests(task.imports, module_dir or notebook_dir),
            },
        )
    return keys


def plan_run(
    spec: PipelineSpec,
    parameter_values: Mapping[str, Any],
    *,
    store: ArtifactStore,
    use_cache: bool,
    force: Iterable[str],
    notebook_dir: Path,
    module_dir: Path,
) -> RunPlan:
    """Cache keys and usable entries. A damaged entry's artifacts are discarded here, so the
    task recomputes them (found by their digests)."""
    forced = set(force)
    keys = plan_cache_keys(spec, parameter_values, notebook_dir, module_dir)
    tasks: dict[str, PlannedTask] = {}
    for task in spec.tasks:
        hit, note = None, None
        # An entry an earlier run of this process handed to a worker (a large output written
        # after its task returned) is waited for, so that run's cache serves this one.
        unstored = await_commit(store, keys[task.name]) if use_cache else None
        previous = store.read_manifest(keys[task.name]) if use_cache else None
        if unstored is not None and previous is None:
            note = f"the last run's cache entry was not stored ({unstored}); recomputed"
        if (
            previous is not None
            and task.cache
            and task.name not in forced
            and manifest_has_metrics(previous, task)
        ):
            damaged = store.damaged_artifacts(previous)
            # A task run for its side effect (a report file) runs again once that file is gone.
            gone = changed_written_files(previous, notebook_dir)
            if gone and not damaged:
                note = f"file(s) it wrote missing or changed since: {', '.join(gone)}; rerun"
            elif not damaged:
                hit = previous
            else:
                store.discard_artifacts(damaged)
                note = "cached artifact missing or damaged; recomputed"
        tasks[task.name] = PlannedTask(keys[task.name], previous, hit, note)
    may_run: set[str] = set()
    for task in spec.tasks:  # topological order
        if tasks[task.name].hit_manifest is None or any(up in may_run for up in task.upstream):
            may_run.add(task.name)
    return RunPlan(tasks, [t.name for t in spec.tasks if t.name in may_run])


def task_payload(
    task: TaskSpec,
    *,
    key: str,
    attempt: int,
    run_id: str,
    parameter_values: Mapping[str, Any],
    input_positions: Mapping[str, int],
    notebook_dir: str,
    store_url: str | None,
    event_topic: str,
    module_dir: str | None = None,
    cell_timeout: float | None = None,
    cell_events: bool = False,
) -> dict[str, Any]:
    """The plain data the worker-side executor needs for one attempt of one task."""
    return {
        "run_id": run_id,
        "task": task.name,
        "key": key,
        "attempt": attempt,
        "event_topic": event_topic,
        "notebook_dir": notebook_dir,
        "module_dir": module_dir or notebook_dir,
        "setup": task.setup,
        "cells": [
            {"cell_id": c.cell_id, "cell_index": c.cell_index, "source": c.source}
            for c in task.code
        ],
        "parameters": {name: parameter_values[name] for name in task.parameters},
        "inputs": dict(input_positions),
        "outputs": list(task.outputs),
        "timeout": task.timeout,
        "cell_timeout": cell_timeout,
        "cell_events": cell_events,
        "store_url": store_url,
    }
