"""Runs on a running cluster share one connection to it (compiler/runtime/clients.py).

Real LocalClusters on loopback: the scheduler's own view (its clients, its tasks) is what is
asserted, as a Dask dashboard would show it to a user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from compiler.runtime import run_pipeline
from compiler.runtime.clients import POOL
from tests.clusters import loopback_cluster


@pytest.fixture
def cluster() -> Iterator[Any]:
    cluster = loopback_cluster()
    try:
        yield cluster
    finally:
        POOL.forget(cluster.scheduler_address)
        cluster.close()


def _kiln_clients(cluster: Any) -> set[str]:
    # The LocalCluster's scheduler runs in this process; its own client is "fire-and-forget".
    return {name for name in cluster.scheduler.clients if not name.startswith("fire-and-forget")}


def _two_tasks(make_pipeline: Any) -> tuple[dict[str, Any], Any]:
    return make_pipeline(
        [
            # 24 MB: over the size whose writes are deferred (store_writes.py), so the first
            # task's value stays in the worker's memory while the second reads it.
            {
                "name": "features",
                "source": "import numpy as np\nX = np.ones(3_000_000)",
                "outputs": ["X"],
            },
            {
                "name": "total",
                "source": "total = float(X.sum())",
                "inputs": {"X": "features"},
                "outputs": ["total"],
            },
        ]
    )


def test_runs_share_one_connection_and_leave_nothing_in_the_cluster(
    cluster: Any, make_pipeline: Any
) -> None:
    spec, notebook = _two_tasks(make_pipeline)
    address = cluster.scheduler_address

    first = run_pipeline(spec, notebook_path=notebook, scheduler=address, use_cache=False)
    connected = _kiln_clients(cluster)
    second = run_pipeline(spec, notebook_path=notebook, scheduler=address, use_cache=False)

    assert first.status == second.status == "succeeded"
    assert len(connected) == 1 and _kiln_clients(cluster) == connected  # not a new client
    # The client outlives the runs, their data does not: no key is held in the cluster.
    deadline = time.monotonic() + 10
    while cluster.scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not cluster.scheduler.tasks


def test_an_idle_connection_is_closed(
    cluster: Any, make_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(POOL, "idle_close_s", 0.2)
    spec, notebook = _two_tasks(make_pipeline)
    run_pipeline(spec, notebook_path=notebook, scheduler=cluster.scheduler_address, use_cache=False)
    deadline = time.monotonic() + 10
    while _kiln_clients(cluster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _kiln_clients(cluster)


def test_a_cluster_that_went_away_gets_a_new_connection_and_no_error_log(
    make_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spec, notebook = _two_tasks(make_pipeline)
    gone = loopback_cluster()
    address = gone.scheduler_address
    run_pipeline(spec, notebook_path=notebook, scheduler=address, use_cache=False)
    gone.close()  # not by Kiln: its pooled client is left reconnecting

    # The same address served again (a cluster restarted on its port), then a run on it.
    port = int(address.rsplit(":", 1)[1])
    with caplog.at_level(logging.WARNING, logger="distributed.client"):
        again = loopback_cluster(scheduler_kwargs={"port": port})
        try:
            result = run_pipeline(spec, notebook_path=notebook, scheduler=address, use_cache=False)
            assert result.status == "succeeded"
            assert len(_kiln_clients(again)) == 1
        finally:
            POOL.forget(address)
            again.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
