"""Worker side of metrics and input profiles, for one task attempt.

    monitor = TaskMonitor(payload)
    with monitor.watching():          # kiln.log_metric records here; pandas readers profiled
        ... run the task's cells, calling monitor.in_cell(cell) before each ...
    record.update(monitor.collect(namespace, output_values))

`kiln.log_metric(name, value)` (the `kiln` package) calls `log_metric` below: inside a task it
records into the active monitor; anywhere else (a plain kernel, a script) it does nothing and
says so once. Values must be numbers or booleans, or dicts of them (flattened with dots); anything
else becomes a warning naming the cell, never an error: a metric must not fail the task that
computed it.

Profiles: every pandas DataFrame the task outputs, and every frame a task gets from
pandas.read_csv / read_parquet / read_table of a file path while it runs (the readers are wrapped
for the task's duration only), are profiled once here (see profile.py for the size and cost).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from compiler.model.spec import TaskSpec
from compiler.runtime.profile import is_dataframe, profile_frame

_ACTIVE: TaskMonitor | None = None
_NOTICE_SHOWN = False
_READERS = ("read_csv", "read_parquet", "read_table")
MAX_METRICS = 1000  # per task: a runaway loop must not grow the record without bound


def _is_metric_value(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float) and not isinstance(value, complex):
        return math.isfinite(float(value))
    # numpy scalars (np.float64 is a float already; np.int64, np.bool_ are not)
    return (
        type(value).__module__ == "numpy"
        and getattr(value, "ndim", None) == 0
        and (getattr(value, "dtype", None) is not None and value.dtype.kind in "biuf")
    )


def _plain(value: Any) -> float | int | bool:
    if isinstance(value, bool | int | float):
        return value
    item = value.item()
    return bool(item) if isinstance(item, bool) else item


def flatten_metric(name: str, value: Any) -> tuple[dict[str, Any], list[str]]:
    """({flat name: value}, [names whose value is not a number or bool])."""
    if isinstance(value, Mapping):
        found: dict[str, Any] = {}
        bad: list[str] = []
        for key, inner in value.items():
            f, b = flatten_metric(f"{name}.{key}", inner)
            found.update(f)
            bad += b
        return found, bad
    if _is_metric_value(value):
        return {name: _plain(value)}, []
    return {}, [f"{name} ({type(value).__name__})"]


class TaskMonitor:
    def __init__(self, payload: Mapping[str, Any]):
        self.task = str(payload.get("task"))
        self.metric_names = list(payload.get("metrics") or [])
        self.metrics_cell = payload.get("metrics_cell_index")
        self.metrics: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.profiles: dict[str, Any] = {}
        self.cell_index: int | None = None
        self.tabular_reads = bool(payload.get("tabular_reads"))

    def in_cell(self, cell_index: int | None) -> None:
        self.cell_index = cell_index

    def _where(self) -> str:
        return (
            f"task {self.task!r}, cell {self.cell_index}"
            if self.cell_index is not None
            else (f"task {self.task!r}")
        )

    def log(self, name: Any, value: Any = None) -> None:
        if isinstance(name, Mapping) and value is None:
            for key, inner in name.items():
                self.log(str(key), inner)
            return
        if not isinstance(name, str) or not name:
            self.warnings.append(
                f"{self._where()}: kiln.log_metric needs a name (a string) or a dict, "
                f"got {type(name).__name__}; not recorded"
            )
            return
        found, bad = flatten_metric(name, value)
        for b in bad:
            self.warnings.append(
                f"{self._where()}: metric {b} is not a number or boolean; not recorded"
            )
        room = MAX_METRICS - len(self.metrics)
        if len(found) > room:
            self.warnings.append(f"{self._where()}: more than {MAX_METRICS} metrics; rest dropped")
            found = dict(list(found.items())[: max(0, room)])
        self.metrics.update(found)

    @contextlib.contextmanager
    def watching(self) -> Iterator[TaskMonitor]:
        global _ACTIVE
        previous, _ACTIVE = _ACTIVE, self
        restore = self._wrap_readers()
        try:
            yield self
        finally:
            _ACTIVE = previous
            for module, name, original in restore:
                setattr(module, name, original)

    def _wrap_readers(self) -> list[tuple[Any, str, Any]]:
        # Where pandas is loaded already (a worker that ran a pandas task keeps it), or the task
        # reads a CSV/Parquet file (it will import pandas anyway, most likely): a task that
        # reads no such file does not pay pandas' import (~0.5 s) for this.
        pandas = sys.modules.get("pandas")
        if pandas is None and self.tabular_reads:
            try:
                pandas = importlib.import_module("pandas")
            except ImportError:
                return []
        if pandas is None:
            return []
        restore = []
        for name in _READERS:
            original = getattr(pandas, name, None)
            if original is None or getattr(original, "__kiln_wrapped__", False):
                continue
            setattr(pandas, name, self._reader(original))
            restore.append((pandas, name, original))
        return restore

    def _reader(self, original: Any) -> Any:
        monitor = self

        def read(*args: Any, **kwargs: Any) -> Any:
            frame = original(*args, **kwargs)
            path = args[0] if args else kwargs.get("filepath_or_buffer", kwargs.get("path"))
            if isinstance(path, str | os.PathLike) and is_dataframe(frame):
                # Keyed as the compiler keys `drift:` tags (compile/metrics.py): the path as
                # written, normalised, so `./data/x.parquet` and `data/x.parquet` are one input.
                # The path itself too: a Parquet file's footer holds exact counts and extremes.
                monitor.profile(os.path.normpath(os.fspath(path)), frame, "file", path)
            return frame

        read.__kiln_wrapped__ = True  # type: ignore[attr-defined]
        read.__wrapped__ = original  # type: ignore[attr-defined]
        read.__doc__ = original.__doc__
        return read

    def profile(self, key: str, frame: Any, source: str, path: Any = None) -> None:
        if key in self.profiles:
            return
        try:
            self.profiles[key] = profile_frame(frame, source, path)
        except Exception as exc:  # a profile is information; never fail the task for one
            self.warnings.append(f"{self._where()}: could not profile {key}: {exc}")

    def collect(self, namespace: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        """What goes into the task's record: metrics, warnings about them, profiles."""
        self.cell_index = self.metrics_cell
        for name in self.metric_names:
            if name not in namespace:
                self.warnings.append(
                    f"task {self.task!r} did not bind {name!r}, which the metrics cell "
                    f"(cell {self.metrics_cell}) reads; not recorded"
                )
                continue
            found, bad = flatten_metric(name, namespace[name])
            for b in bad:
                self.warnings.append(
                    f"metrics cell (cell {self.metrics_cell}): {b} from task {self.task!r} is "
                    "not a number or boolean; not recorded"
                )
            self.metrics.update(found)
        for name, value in outputs.items():
            if is_dataframe(value):
                self.profile(f"{self.task}.{name}", value, "artifact")
        return {
            "metrics": self.metrics,
            "metric_warnings": self.warnings,
            "profiles": self.profiles,
        }


TABULAR_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".csv.gz", ".csv.zip")


def monitor_payload(spec: Mapping[str, Any], task: TaskSpec) -> dict[str, Any]:
    """What the worker needs for a task's metrics and profiles (added to plan.task_payload)."""
    reads = task.reads
    return {
        "metrics": list(task.metrics),
        "metrics_cell_index": (spec.get("metrics_cell") or {}).get("cell_index"),
        "tabular_reads": any(str(p).lower().endswith(TABULAR_SUFFIXES) for p in reads),
    }


def manifest_has_metrics(manifest: Mapping[str, Any], task: TaskSpec) -> bool:
    """A cache entry serves a task only if it recorded the metrics the task now reports (the
    metrics cell may name more than when the entry was written)."""
    return set(task.metrics) <= set(manifest.get("metric_names") or ())


def log_metric(name: Any, value: Any = None) -> None:
    """Record a metric of the running Kiln task: `log_metric("accuracy", 0.93)` or
    `log_metric({"precision": p, "recall": r})`. Outside a Kiln run: a one-line notice."""
    global _NOTICE_SHOWN
    if _ACTIVE is not None:
        _ACTIVE.log(name, value)
        return
    if not _NOTICE_SHOWN:
        _NOTICE_SHOWN = True
        shown = name if value is None else f"{name}={value!r}"
        print(
            f"kiln.log_metric: not in a Kiln run, nothing recorded ({shown}); "
            "`kiln run` records metrics",
            file=sys.stderr,
        )
