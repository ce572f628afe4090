"""Real Dask clusters for the tests: worker processes on loopback, Dask's own logs quiet."""

from __future__ import annotations

import logging
from typing import Any


def loopback_cluster(n_workers: int = 1, **options: Any) -> Any:
    """A LocalCluster of `n_workers` single-threaded worker processes on 127.0.0.1, without a
    dashboard unless `dashboard_address` is given; `options` go to LocalCluster as they are."""
    from distributed import LocalCluster

    settings: dict[str, Any] = {
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "silence_logs": logging.CRITICAL,
    }
    return LocalCluster(n_workers=n_workers, **{**settings, **options})
