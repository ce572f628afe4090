"""Lineage: every run recorded in a SQL store, queryable and reproducible.

    from compiler.lineage import open_store, RunRecorder

    store = open_store(None, notebook_path)              # or a SQLAlchemy URL
    with RunRecorder(store, spec, notebook_path, params) as recorder:
        result = run_pipeline(spec, ..., run_id=recorder.run_id, on_event=recorder)
        recorder.finish(result)

    store.list_runs(notebook_path)        store.show_run("3f2a")
    store.lineage("metrics.json")         store.diff_runs("3f2a", "9b1c")
    mark_interrupted(store)

Modules: `schema` (tables), `store` (engine, migrations, transactions), `recorder` (events in),
`queries` (plain data out), `liveness` (interrupted runs), `openlineage`. Lineage never runs
anything: `kiln rerun` lives in `compiler.ops.rerun`, the subcommands in `compiler.cli.lineage`.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compiler.lineage.liveness import mark_interrupted
    from compiler.lineage.queries import (
        AmbiguousTarget,
        LineageNotFound,
        diff_runs,
        find_task,
        lineage,
        list_runs,
        show_run,
    )
    from compiler.lineage.recorder import RunRecorder
    from compiler.lineage.store import (
        ENV_URL,
        LineageStore,
        LineageStoreError,
        open_store,
        resolve_url,
    )

# Names are imported on first use: `kiln check` and the other commands that never touch a store
# must not pay for SQLAlchemy (a tenth of a second) just because the CLI lists `kiln runs`.
_WHERE = {
    "mark_interrupted": ".liveness",
    "AmbiguousTarget": ".queries",
    "LineageNotFound": ".queries",
    "diff_runs": ".queries",
    "find_task": ".queries",
    "lineage": ".queries",
    "list_runs": ".queries",
    "show_run": ".queries",
    "RunRecorder": ".recorder",
    "ENV_URL": ".defaults",
    "LineageStore": ".store",
    "LineageStoreError": ".store",
    "open_store": ".store",
    "resolve_url": ".store",
}

__all__ = [
    "ENV_URL",
    "AmbiguousTarget",
    "LineageNotFound",
    "LineageStore",
    "LineageStoreError",
    "RunRecorder",
    "diff_runs",
    "find_task",
    "lineage",
    "list_runs",
    "mark_interrupted",
    "open_store",
    "resolve_url",
    "show_run",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
