"""The runtime's event vocabulary: what a run tells its listeners.

Listeners (the lineage recorder, the CLI progress display, the server's run records,
OpenLineage, the widget) receive these records in the order they happen. Each is a frozen,
typed record that also reads as its JSON form (a Mapping), because most listeners forward it as
JSON; `to_dict()` is that form. The TypeScript side (`jupyter_ext/src/types.ts`) spells the
same statuses (checked by tests/test_architecture.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from compiler.model.statuses import RunStatus, TaskStatus


@functools.cache
def _field_names(kind: type) -> frozenset[str]:
    # Every listener reads every event by key (1,500 events for 500 tasks): the names are
    # computed once per event class, not per look-up.
    return frozenset(f.name for f in fields(kind))


class _Record(Mapping[str, Any]):
    """Mapping access over a dataclass's fields; optional fields left None are absent."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            data[f.name] = str(value) if isinstance(value, RunStatus | TaskStatus) else value
        return data

    def _names(self) -> frozenset[str]:
        return _field_names(type(self))

    def __getitem__(self, key: str) -> Any:
        # Read per event by every listener: no dict is built for a look-up.
        if key not in self._names():
            raise KeyError(key)
        value = getattr(self, key)
        if value is None and key in self.OPTIONAL:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=False)
class RunEvent(_Record):
    """The run started (`status` running... the first event) or ended (succeeded / failed)."""

    run_id: str
    status: RunStatus
    dashboard: str | None = None
    scheduler_address: str | None = None  # where the run's tasks went; on 'started'
    output_notebook: str | None = None  # on the final event
    parameters: Mapping[str, Any] | None = None  # on 'started': every value, computed ones too
    # On the final event of a run that has metrics or verdicts (compiler/runtime/judge.py):
    error: str | None = None  # why a run whose tasks all succeeded failed (a check)
    flagged: bool | None = None  # succeeded, but a warn failed or an input drifted
    metrics: Mapping[str, Any] | None = None
    verdicts: list[dict[str, Any]] | None = None
    baseline_run: str | None = None
    type: str = "run"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {
            "scheduler_address",
            "output_notebook",
            "parameters",
            "error",
            "flagged",
            "metrics",
            "verdicts",
            "baseline_run",
        }
    )


@dataclass(frozen=True, eq=False)
class TaskEvent(_Record):
    """A task changed status. `attempts` and `attempt_log` come with final statuses, `error`
    with failed and retrying, `reason` with retrying."""

    run_id: str
    task: str
    status: TaskStatus
    attempt: int
    duration: float | None
    cache_key: str
    version: str
    cached: bool
    worker: str | None
    resources: Mapping[str, Any]
    peak_memory: int | None
    outputs: Mapping[str, Any]
    attempts: int | None = None
    attempt_log: list[dict[str, Any]] | None = None
    error: Mapping[str, Any] | None = None
    reason: str | None = None
    cache_error: str | None = None  # outputs the artifact store could not take (done tasks)
    # What the attempts used (model/costs.py); for a cache hit, what it saved.
    cost: Mapping[str, Any] | None = None
    cost_saved: Mapping[str, Any] | None = None
    # With done/cached: values the task changed in place without the compiler knowing, which
    # the run re-exported (runtime/state.py); each names the cell and the fix.
    warnings: list[dict[str, Any]] | None = None
    type: str = "task"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {
            "attempts",
            "attempt_log",
            "error",
            "reason",
            "cache_error",
            "cost",
            "cost_saved",
            "warnings",
        }
    )


@dataclass(frozen=True, eq=False)
class CellEvent(_Record):
    """A cell of a running task started (`status` running) or finished (with its outputs),
    for runs that ask for them (papermill's engine follows a run cell by cell)."""

    run_id: str
    task: str
    status: str  # "running" | "finished"
    cell: Mapping[str, Any]  # cell_id, cell_index, status, outputs, started, duration
    type: str = "cell"


Event = RunEvent | TaskEvent | CellEvent
# A listener gets every event of a run; it must not raise (the runtime counts and drops errors).
Listener = Callable[[Mapping[str, Any]], None]


@dataclass
class Fanout:
    """Several listeners as one; a listener that raises is counted, not propagated."""

    listeners: list[Listener] = field(default_factory=list)
    errors: int = 0

    def __call__(self, event: Mapping[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                self.errors += 1
