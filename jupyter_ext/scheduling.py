"""The Jupyter server as a scheduler host (off by default).

With `c.KilnExtension.run_scheduler = True` (or `KILN_RUN_SCHEDULER=1` in the server's
environment) the server runs one `compiler.schedule.scheduler.Scheduler` per lineage database
that holds schedules, each in a daemon thread, and stops them when the server stops. Schedules
live in the lineage database of their notebook (`.kiln/lineage.db` beside it, or
$KILN_LINEAGE_DB), so the databases served are: those found under the server root at start (a
bounded walk), and every database a schedule is created in or listed from while the server runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compiler.lineage import LineageStore
from compiler.lineage.store import DEFAULT_DB, ENV_URL
from compiler.runtime.warm import WarmCluster
from compiler.schedule.scheduler import Action, Schedule, Scheduler, run_job
from jupyter_ext.runs import warm_cluster_for
from jupyter_ext.stores import LineageStores

ENV_RUN_SCHEDULER = "KILN_RUN_SCHEDULER"
DISCOVERY_DEPTH = 3
DISCOVERY_MAX_DIRS = 2000
SKIP_DIRS = {"node_modules", "__pycache__", "kiln-runs", "pipelines", "site-packages"}


def env_enabled() -> bool:
    return os.environ.get(ENV_RUN_SCHEDULER, "").strip().lower() in ("1", "true", "yes", "on")


def lineage_dbs_under(root: Path) -> Iterator[Path]:
    """`.kiln/lineage.db` files in `root` and its non-hidden folders, a few levels down."""
    visited = 0
    for folder, dirs, _files in os.walk(root):
        visited += 1
        depth = len(Path(folder).relative_to(root).parts)
        candidate = Path(folder) / DEFAULT_DB
        if candidate.is_file():
            yield candidate
        if depth >= DISCOVERY_DEPTH or visited >= DISCOVERY_MAX_DIRS:
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)


class SchedulerService:
    """Schedulers of this server, one per lineage database; inert when not enabled."""

    def __init__(
        self,
        stores: LineageStores,
        *,
        enabled: bool,
        poll_seconds: float = 1.0,
        dask_scheduler: str | None = None,
        cluster: WarmCluster | None = None,
        log: logging.Logger | None = None,
    ):
        self.stores = stores
        # The server's warm cluster: kiln-engine jobs run on it, as UI runs do, instead of each
        # starting and stopping a LocalCluster of its own (seconds a job on a laptop).
        self.cluster = cluster
        self.enabled = enabled
        self.poll_seconds = poll_seconds
        self.dask_scheduler = dask_scheduler or None
        self.log = log or logging.getLogger(__name__)
        self._schedulers: dict[str, tuple[Scheduler, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def serves(self, store: LineageStore) -> bool:
        with self._lock:
            return store.url in self._schedulers

    def watch(self, store: LineageStore) -> None:
        """Run due schedules of this database from now on (no-op when disabled or served)."""
        if not self.enabled:
            return
        with self._lock:
            if self._stopped or store.url in self._schedulers:
                return
            scheduler = Scheduler(store, dask_scheduler=self.dask_scheduler, job=self._job)
            thread = threading.Thread(
                target=self._serve, args=(scheduler,), name="kiln-scheduler", daemon=True
            )
            self._schedulers[store.url] = (scheduler, thread)
        thread.start()
        self.log.info("Kiln scheduler: running due schedules of %s", _safe(store.url))

    def _job(self, schedule: Schedule, due: dt.datetime) -> dict[str, Any]:
        if schedule.engine != "kiln":
            return run_job(schedule, due, dask_scheduler=self.dask_scheduler)
        with warm_cluster_for(self.cluster, self.dask_scheduler) as address:
            return run_job(schedule, due, dask_scheduler=address or self.dask_scheduler)

    def _serve(self, scheduler: Scheduler) -> None:
        def report(action: Action) -> None:
            why = f" ({action.reason})" if action.reason else ""
            self.log.info("Kiln schedule %s: %s%s", action.schedule, action.action, why)

        try:
            scheduler.serve(self.poll_seconds, on_action=report)
        except Exception:  # a broken database must not take the server down
            self.log.exception("Kiln scheduler for %s stopped", _safe(scheduler.store.url))

    def start(self, root: Path) -> None:
        """Serve the databases found under `root` (and $KILN_LINEAGE_DB), in the background."""
        if not self.enabled:
            return

        def discover() -> None:
            urls = [os.environ[ENV_URL]] if os.environ.get(ENV_URL) else []
            urls += [f"sqlite:///{db}" for db in lineage_dbs_under(root)]
            for url in urls:
                try:
                    store = self.stores.for_url(url)
                except Exception:
                    self.log.exception("Kiln scheduler: cannot open %s", _safe(url))
                    continue
                if store is not None:
                    self.watch(store)

        threading.Thread(target=discover, name="kiln-scheduler-discovery", daemon=True).start()

    def stop(self) -> None:
        """Stop ticking; jobs already running finish in their (daemon) threads or die with the
        process, and the next scheduler marks the latter interrupted."""
        with self._lock:
            self._stopped = True
            schedulers, self._schedulers = list(self._schedulers.values()), {}
        for scheduler, _thread in schedulers:
            scheduler.stop(wait=False)
        for _scheduler, thread in schedulers:
            thread.join(timeout=5)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<lineage database>"
