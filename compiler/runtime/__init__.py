"""Kiln's runtime: run a compiled pipeline spec on Dask, cached, retried and resumable.

    from compiler.runtime import run_pipeline, RunResult, coerce_parameters

The runtime reads only the spec (plain JSON data); it never imports the compiler's analysis.
Names are imported lazily: Dask workers import `compiler.runtime.executor` to run tasks, and
must not pay for the client side (nbformat alone takes over a second to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compiler.runtime.cluster import ResourceUnavailable
    from compiler.runtime.driver import run_pipeline
    from compiler.runtime.executor import TaskFailed, TaskTimeout
    from compiler.runtime.parameters import coerce_parameters, resolve_parameters
    from compiler.runtime.results import RunResult, TaskResult

_WHERE = {
    "ResourceUnavailable": ".cluster",
    "TaskFailed": ".executor",
    "TaskTimeout": ".executor",
    "coerce_parameters": ".parameters",
    "resolve_parameters": ".parameters",
    "RunResult": ".results",
    "TaskResult": ".results",
    "run_pipeline": ".driver",
}

__all__ = [
    "ResourceUnavailable",
    "RunResult",
    "TaskFailed",
    "TaskResult",
    "TaskTimeout",
    "coerce_parameters",
    "resolve_parameters",
    "run_pipeline",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
