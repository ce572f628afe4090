"""Reproduce a recorded run: same notebook, same parameters, nothing from the cache, then say
per output whether the digest matches the original run's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compiler.lineage.queries import LineageNotFound, load_run, own_code, resolve_run_id
from compiler.lineage.store import LineageStore
from compiler.model.events import Listener
from compiler.ops.run import RunRefused, prepare_run, run_notebook


class RerunRefused(RuntimeError):
    """The run cannot be reproduced as asked (exit code 1); the message says why."""


@dataclass
class OutputComparison:
    task: str
    output: str  # an output name, or the path of a file the task wrote
    kind: str  # "artifact" | "file"
    original: str | None
    rerun: str | None

    @property
    def equal(self) -> bool:
        return self.original is not None and self.original == self.rerun

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "equal": self.equal}


@dataclass
class RerunReport:
    original_run_id: str
    run_id: str
    status: str
    current_code: bool
    pipeline_version: str
    original_pipeline_version: str
    notebook_path: str
    comparisons: list[OutputComparison] = field(default_factory=list)

    @property
    def all_equal(self) -> bool:
        return self.status == "succeeded" and all(c.equal for c in self.comparisons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_run_id": self.original_run_id,
            "run_id": self.run_id,
            "status": self.status,
            "current_code": self.current_code,
            "pipeline_version": self.pipeline_version,
            "original_pipeline_version": self.original_pipeline_version,
            "notebook_path": self.notebook_path,
            "all_equal": self.all_equal,
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def _digests(
    outputs: Mapping[str, Mapping[str, Mapping[str, Any]]],
    writes: Mapping[str, list[dict[str, Any]]],
) -> dict[tuple[str, str, str], str | None]:
    found: dict[tuple[str, str, str], str | None] = {}
    for task, named in outputs.items():
        for name, info in named.items():
            found[(task, name, "artifact")] = info.get("digest")
    for task, accesses in writes.items():
        for access in accesses:
            found[(task, access["path"], "file")] = access["digest"]
    return found


def rerun(
    store: LineageStore,
    run_id: str,
    *,
    current_code: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    on_event: Listener | None = None,
) -> RerunReport:
    """Recompile the run's notebook, rerun it with the recorded parameters, compare digests.

    Refuses (RerunRefused) when the notebook is gone, does not compile, or compiles to another
    pipeline version than the recorded one, unless `current_code` (then parameters the current
    code no longer has are dropped)."""
    with store.reading() as connection:
        original = load_run(connection, resolve_run_id(connection, run_id))
    notebook = Path(original.run["notebook_path"])
    if not notebook.exists():
        raise RerunRefused(f"the notebook of run {original.run['run_id']} is gone: {notebook}")
    try:
        spec = prepare_run(notebook).spec
    except RunRefused as refused:
        first = next((d for d in refused.diagnostics if d.severity == "error"), None)
        raise RerunRefused(
            f"{notebook} does not compile any more: {first.render() if first else refused}"
        ) from None
    recorded_version = original.pipeline["version"]
    if spec["version"] != recorded_version and not current_code:
        changed = _changed_tasks(original.spec_tasks, spec)
        raise RerunRefused(
            f"{notebook.name} has changed since run {original.run['run_id']}: pipeline version "
            f"{recorded_version} then, {spec['version']} now"
            + (f" (tasks changed: {', '.join(changed)})" if changed else "")
            + "; rerun with --current-code to run the notebook as it is now"
        )
    params = dict(original.run["parameters"])
    if current_code:
        params = {k: v for k, v in params.items() if k in (spec.get("parameters") or {})}
    try:
        prepared = prepare_run(notebook, spec=spec, parameters=params)
    except RunRefused as refused:
        raise RerunRefused(str(refused)) from None
    new_id = prepared.run_id
    # Every task is forced rather than run with use_cache=False: the runtime only digests
    # (stores) outputs when the cache is on, and the digests are what we compare. Forced
    # tasks never read the cache.
    result = run_notebook(
        prepared,
        listeners=[on_event] if on_event is not None else [],
        lineage_store=store,
        rerun_of=original.run["run_id"],
        scheduler=scheduler,
        workers=workers,
        use_cache=True,
        force=[t["name"] for t in spec["tasks"]],
        store_url=original.run["store_url"],
    )
    with store.reading() as connection:
        repeated = load_run(connection, new_id)
    before = _digests(original.outputs, original.writes)
    after = _digests(repeated.outputs, repeated.writes)
    comparisons = [
        OutputComparison(task, name, kind, before.get((task, name, kind)), after.get(key))
        for key in sorted(before.keys() | after.keys(), key=_task_order(spec))
        for task, name, kind in [key]
    ]
    return RerunReport(
        original_run_id=original.run["run_id"],
        run_id=new_id,
        status=result.status,
        current_code=current_code,
        pipeline_version=spec["version"],
        original_pipeline_version=recorded_version,
        notebook_path=str(notebook),
        comparisons=comparisons,
    )


def _task_order(spec: Mapping[str, Any]) -> Callable[[tuple[str, str, str]], tuple[int, str, str]]:
    order = {t["name"]: i for i, t in enumerate(spec["tasks"])}
    return lambda key: (order.get(key[0], len(order)), key[2], key[1])


def _changed_tasks(recorded: Mapping[str, Mapping[str, Any]], spec: Mapping[str, Any]) -> list[str]:
    """Tasks whose own code changed (or that came or went), not those changed only upstream."""
    current = {t["name"]: t for t in spec["tasks"]}
    names = [*recorded, *(n for n in current if n not in recorded)]
    return [
        n
        for n in names
        if n not in recorded or n not in current or own_code(recorded[n]) != own_code(current[n])
    ]


__all__ = ["LineageNotFound", "OutputComparison", "RerunRefused", "RerunReport", "rerun"]
