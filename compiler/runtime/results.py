"""What a run returns: plain records, serializable with to_dict() (for `kiln run --json`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from compiler.model.statuses import SUCCEEDED_STATES, WAITING


@dataclass
class TaskResult:
    name: str
    version: str
    cache_key: str
    status: str = WAITING
    cached: bool = False
    attempts: int = 0
    duration: float | None = None  # seconds of the successful (or last) attempt
    peak_memory: int | None = None  # peak RSS of the worker process while the task ran, bytes
    worker: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)  # as declared in the spec
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> digest/type/size
    error: dict[str, Any] | None = None  # cell_index, cell_id, line, ename, evalue, traceback
    attempt_log: list[dict[str, Any]] = field(default_factory=list)  # each attempt, and why
    cache_note: str | None = None  # why a cache entry was not used, when it existed
    cost: dict[str, Any] | None = None  # its attempts' resources summed (compiler/model/costs.py)
    cost_saved: dict[str, Any] | None = None  # a cache hit: the cost of the run it replaced
    metrics: dict[str, Any] = field(default_factory=dict)  # flat name -> number or bool
    metric_warnings: list[str] = field(default_factory=list)  # values that were not recorded
    profiles: dict[str, Any] = field(default_factory=dict)  # input key -> column profile
    # Values it changed in place that the compiler did not make outputs (state.py re-exports
    # them): task, name, producer, cell, the readers that were re-planned or rerun, the fix.
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in SUCCEEDED_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    run_id: str
    status: str  # "succeeded" | "failed"
    pipeline: str
    version: str
    started: str  # ISO 8601, UTC
    finished: str
    parameters: dict[str, Any]
    tasks: list[TaskResult]
    output_notebook: str | None = None
    dashboard: str | None = None
    store_url: str | None = None
    # Why the run's lineage was not (or not fully) recorded; None when it was. Never a mere
    # warning: `kiln run` fails with it.
    lineage_error: str | None = None
    # Filled by judge.judge_run when the tasks are over:
    metrics: dict[str, Any] = field(default_factory=dict)  # every task's, flat
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # checks, warns, drift
    flagged: bool = False  # succeeded, but a warn failed or an input drifted
    baseline_run: str | None = None
    error: str | None = None  # why a run whose tasks all succeeded failed (a check)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def task(self, name: str) -> TaskResult:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        # asdict(self) would already convert the tasks (deep copies of every output and attempt
        # log); converting them once halves the cost for 500 tasks.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tasks"}
        data["parameters"] = dict(self.parameters)
        data["tasks"] = [t.to_dict() for t in self.tasks]
        return data
