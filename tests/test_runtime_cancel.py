"""Cancelling a run (the Jupyter server's Cancel button): `run_pipeline(cancel=event)`.

On the shared LocalCluster; the cancelled task sleeps in short steps so the worker thread it
holds is free again within a second or two (Dask cannot stop a running Python thread).
"""

from __future__ import annotations

import threading

import pytest

from compiler.lineage import open_store, show_run
from compiler.ops.run import run_spec
from compiler.runtime.driver import run_pipeline

pytestmark = pytest.mark.timeout(120)


def test_a_cancelled_run_stops_its_tasks_and_lineage_says_cancelled(
    make_pipeline, dask_scheduler_address, tmp_path
):
    spec, nb_path = make_pipeline(
        tasks=[
            {"name": "quick", "source": "a = 1", "outputs": ["a"]},
            {
                "name": "slow",
                "source": "import time\nfor _ in range(20):\n    time.sleep(0.1)\nb = a + 1",
                "inputs": {"a": "quick"},
                "outputs": ["b"],
            },
            {"name": "report", "source": "c = b * 2", "inputs": {"b": "slow"}},
        ]
    )
    cancel = threading.Event()
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event.get("task") == "slow" and event.get("status") == "running":
            cancel.set()  # what the server's Cancel does, from another thread

    db = f"sqlite:///{tmp_path / 'lineage.db'}"
    result = run_spec(  # the runtime with the lineage recorder, as the server runs it
        spec,
        notebook_path=nb_path,
        scheduler=dask_scheduler_address,
        on_event=on_event,
        cancel=cancel,
        lineage_db=db,
    )

    assert result.status == "cancelled"
    statuses = {t.name: t.status for t in result.tasks}
    assert statuses == {"quick": "done", "slow": "cancelled", "report": "cancelled"}
    assert ("slow", "cancelled") in [(e.get("task"), e.get("status")) for e in events]
    assert events[-1] == {**events[-1], "type": "run", "status": "cancelled"}

    store = open_store(db, nb_path)
    try:
        recorded = show_run(store, result.run_id)
    finally:
        store.close()
    assert recorded["status"] == "cancelled"
    assert {t["task"]: t["status"] for t in recorded["tasks"]} == statuses

    # The cluster is usable right after: the same pipeline runs to the end (quick from cache).
    again = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    assert again.status == "succeeded"
    assert {t.name: t.status for t in again.tasks}["quick"] == "cached"
