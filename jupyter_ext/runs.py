"""Pipeline runs started from the Jupyter server: one background thread per run, events in memory.

The library (`compiler.ops.run.run_spec`: runtime + lineage) does all the work; this module only
starts it, keeps what it reports per run id, and answers "what is this run doing now?" for the
UI. The run record is one more listener of the run's events. The UI asks with a long poll
(`RunRecord.changed_since`): the request is answered as soon as the run's state changes, so a
badge turns `running` when the task does, not at the next tick of a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from compiler.model.clock import iso_now
from compiler.model.ids import new_run_id
from compiler.model.statuses import FINAL_RUN_STATES, RunStatus, TaskStatus
from compiler.ops.run import run_spec
from compiler.runtime.cluster import configured_scheduler_address
from compiler.runtime.warm import WarmCluster, answers
from jupyter_ext.paths import api_path_of

Runner = Callable[..., Any]  # run_spec's signature; returns an object with to_dict()

MAX_RUNS_KEPT = 50
MAX_EVENTS_KEPT = 5000
# A task in one of these states has no error of an earlier attempt to show.
_CLEARS_ERROR = (TaskStatus.WAITING, TaskStatus.RUNNING, TaskStatus.CACHED, TaskStatus.DONE)


class RunConflict(Exception):
    """A run of this notebook is already in progress in this server."""


def output_notebook_for(notebook_file: Path, run_id: str) -> Path:
    """Where a run started from the UI writes its output notebook.

    Beside the notebook and not hidden, so JupyterLab (whose contents manager refuses hidden
    paths by default) can open it from the run's link.
    """
    return notebook_file.parent / "kiln-runs" / notebook_file.stem / f"{run_id}.ipynb"


@dataclass
class RunRecord:
    run_id: str
    path: str  # API path of the notebook, relative to the server root
    notebook_file: Path
    root_dir: Path
    parameters: dict[str, Any]
    scheduler: str | None = None
    status: str = RunStatus.STARTING  # starting, running, cancelling, then a FINAL_RUN_STATE
    started: str = field(default_factory=iso_now)
    finished: str | None = None
    dashboard: str | None = None
    output_notebook: str | None = None  # API path, once written
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest state per task
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # a failure of the run itself (not of a task)
    result: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # use_cache, force: shown in history
    # Set by Cancel; the runtime's loop checks it (run_pipeline(cancel=...)).
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Bumped on every change a reader can see; a long poll waits for it to move.
    version: int = 0
    # The run's call returned: lineage closed, result and output notebook known. The UI shows
    # the outcome at the run's last event (`done`) and keeps listening until this.
    settled: bool = False
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list, repr=False
    )

    @property
    def done(self) -> bool:
        return self.status in FINAL_RUN_STATES

    async def changed_since(self, version: int, timeout: float) -> None:
        """Return once `version` is stale (the run changed since the reader's copy), the run
        has settled, or after `timeout` seconds. Called on the server's event loop; the run's
        thread wakes it (`_changed`)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self.lock:
            if self.version != version or self.settled:
                return
            self._waiters.append((loop, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            with self.lock:
                with contextlib.suppress(ValueError):
                    self._waiters.remove((loop, waiter))

    def _changed(self) -> None:
        """Under the lock: a new version, and every long poll waiting for one is woken."""
        self.version += 1
        waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_wake, waiter)

    def record_event(self, event: Mapping[str, Any]) -> None:
        """A listener of the run's events; called from the run's thread."""
        with self.lock:
            if len(self.events) < MAX_EVENTS_KEPT:
                # When the server heard it (epoch seconds): the timeline's time axis.
                self.events.append({**event, "at": time.time()})
            if event.get("type") == "task" and event.get("task"):
                state = self.tasks.setdefault(str(event["task"]), {})
                state["status"] = event.get("status")
                if event.get("status") in _CLEARS_ERROR:
                    state.pop("error", None)  # an earlier attempt's error no longer applies
                for key in ("duration", "error", "attempt", "cost", "cost_saved"):
                    if event.get(key) is not None:
                        state[key] = event[key]
            elif event.get("type") == "run":
                if event.get("dashboard"):
                    self.dashboard = str(event["dashboard"])
                started = event.get("status") in (RunStatus.STARTED, RunStatus.RUNNING)
                if started and self.status == RunStatus.STARTING:  # not over "cancelling"
                    self.status = RunStatus.RUNNING
                elif event.get("status") in FINAL_RUN_STATES:
                    # The run's last event comes once its last task ended and the output
                    # notebook is written: the UI shows the outcome now, while the lineage
                    # records are closed and the cluster client let go (`finish` follows).
                    self.status = RunStatus(str(event["status"]))
                    self.finished = iso_now()
                    self._output_notebook(event.get("output_notebook"))
            self._changed()

    def finish(self, result: Any | None, error: str | None) -> None:
        with self.lock:
            self.settled = True
            self._changed()
            self.finished = self.finished or iso_now()
            if result is not None:
                data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
                self.result = data
                status = data.get("status")
                kept = (RunStatus.SUCCEEDED, RunStatus.CANCELLED)
                self.status = RunStatus(status) if status in kept else RunStatus.FAILED
                self.error = data.get("error") or self.error  # a failed check says which
                self.dashboard = data.get("dashboard") or self.dashboard
                for task in data.get("tasks", []):
                    state = self.tasks.setdefault(task["name"], {})
                    state["status"] = task.get("status")
                    for key in ("duration", "error", "attempts", "cost", "cost_saved"):
                        if task.get(key) is not None:
                            state[key] = task[key]
                self._output_notebook(data.get("output_notebook"))
            elif self.cancel_event.is_set():
                self.status = RunStatus.CANCELLED  # cancelled before the runtime's loop began
                self.error = error
            else:
                self.status = RunStatus.FAILED
                self.error = error or "the run failed"

    def request_cancel(self) -> bool:
        """Ask the runtime to stop; False when the run already ended."""
        with self.lock:
            if self.done:
                return False
            self.status = RunStatus.CANCELLING
            self._changed()
        self.cancel_event.set()
        return True

    def _output_notebook(self, out: Any) -> None:
        if out:
            try:
                self.output_notebook = api_path_of(self.root_dir, str(out))
            except ValueError:
                self.output_notebook = None  # written outside the root: not servable

    def summary(self) -> dict[str, Any]:
        proxy = self._dashboard_proxy()  # may connect: outside the lock
        with self.lock:
            return {
                "run_id": self.run_id,
                "path": self.path,
                "status": self.status,
                "started": self.started,
                "finished": self.finished,
                "dashboard": self.dashboard,
                # The dashboard through this Jupyter server (jupyter-server-proxy), relative
                # to its base URL; null when the cluster is gone or the proxy is missing.
                "dashboard_proxy": proxy,
                "scheduler": self.scheduler,
                "options": dict(self.options),
                "output_notebook": self.output_notebook,
                "error": self.error,
                "version": self.version,
                "settled": self.settled,
            }

    def _dashboard_proxy(self) -> str | None:
        dashboard = self.dashboard
        proxy = dashboard_proxy_path(dashboard) if dashboard else None
        if proxy and self.done and not dashboard_answers(str(dashboard)):
            # Its cluster is gone: a run's own LocalCluster closes with the run; the warm or an
            # external cluster may outlive it, and then the link stays while it answers.
            return None
        return proxy

    def to_dict(self, since: int = 0) -> dict[str, Any]:
        data = self.summary()
        with self.lock:
            data.update(
                {
                    "parameters": self.parameters,
                    "tasks": {name: dict(state) for name, state in self.tasks.items()},
                    "events": self.events[since:],
                    "event_count": len(self.events),
                }
            )
        return data


@contextlib.contextmanager
def warm_cluster_for(cluster: WarmCluster | None, named: str | None) -> Iterator[str | None]:
    """The server's warm cluster's address, held for one run (UI run or schedule), unless the
    run or the environment names a cluster (--scheduler, DASK_SCHEDULER_ADDRESS, Dask's
    scheduler-address): then None, and the run goes where it was told."""
    if cluster is None or named or configured_scheduler_address(None):
        yield None
        return
    with cluster.lease() as address:
        yield address


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def proxy_available() -> bool:
    try:
        import jupyter_server_proxy  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard_answers(dashboard: str) -> bool:
    """Whether the dashboard's port takes a connection; only loopback dashboards are asked
    (those the proxy serves), where a closed port is refused at once."""
    parts = urlsplit(dashboard)
    return answers(f"tcp://{parts.hostname}:{parts.port}", timeout=0.2)


def dashboard_proxy_path(dashboard: str) -> str | None:
    """`proxy/PORT/status` for a dashboard on this machine, served by jupyter-server-proxy
    (authenticated by the Jupyter server, so it works from a remote browser too)."""
    parts = urlsplit(dashboard)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not parts.port:
        return None
    if not proxy_available():
        return None
    return f"proxy/{parts.port}{parts.path or '/status'}"


class RunManager:
    """Runs of this server, newest last; at most one live run per notebook."""

    def __init__(
        self,
        root_dir: str | Path,
        runner: Runner | None = None,
        cluster: WarmCluster | None = None,
    ):
        self.root_dir = Path(root_dir).resolve()
        self._runner = runner
        # The server's one LocalCluster, reused by every run that names no cluster itself (a
        # run then pays no cluster start-up: seconds on a laptop).
        self.cluster = cluster
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def runner(self) -> Runner:
        return self._runner or run_spec

    def start(
        self,
        spec: dict[str, Any],
        notebook_file: Path,
        *,
        parameters: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Start the run in a daemon thread (a server shutdown never waits for a pipeline)."""
        runner = self.runner
        path = api_path_of(self.root_dir, notebook_file)
        options = dict(options or {})
        with self._lock:
            for other in self._runs.values():
                if other.path == path and not other.done:
                    raise RunConflict(f"a run of {path} is in progress: {other.run_id}")
            run_id = new_run_id()
            record = RunRecord(
                run_id=run_id,
                path=path,
                notebook_file=notebook_file,
                root_dir=self.root_dir,
                parameters=dict(parameters or {}),
                scheduler=options.get("scheduler"),
                options={k: options[k] for k in ("use_cache", "force") if k in options},
            )
            self._runs[run_id] = record
            while len(self._runs) > MAX_RUNS_KEPT:
                oldest = next(iter(self._runs))
                if not self._runs[oldest].done:
                    break
                self._runs.pop(oldest)

        options["output_notebook"] = str(output_notebook_for(notebook_file, run_id))
        options["cancel"] = record.cancel_event

        def work() -> None:
            try:
                with self._cluster_for(options) as address:
                    if address:
                        options["scheduler"] = address
                    result = runner(
                        spec,
                        notebook_path=str(notebook_file),
                        params=record.parameters or None,
                        on_event=record.record_event,
                        run_id=run_id,
                        **options,
                    )
            except Exception as exc:  # a run must always end in a state the UI can show
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                record.finish(None, detail)
            else:
                record.finish(result, None)

        threading.Thread(target=work, name=f"kiln-run-{run_id}", daemon=True).start()
        return record

    def _cluster_for(
        self, options: Mapping[str, Any]
    ) -> contextlib.AbstractContextManager[str | None]:
        return warm_cluster_for(self.cluster, options.get("scheduler"))

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def list(self, path: str | None = None) -> list[RunRecord]:
        with self._lock:
            runs = list(self._runs.values())
        return [r for r in reversed(runs) if path is None or r.path == path]
