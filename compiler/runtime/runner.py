"""Run a pipeline spec on Dask: cache lookups, submission, retries, events, the output notebook.

The client decides, task by task in dependency order, whether a task is a cache hit or must run;
a task is submitted once all its upstream tasks are done, with their Dask futures as arguments
(values stay on the workers). Finished tasks report back through Dask's event log (one small
record per task: captured cell outputs, output digests, peak memory), so the client never
gathers output values. Everything the caller sees goes through one function, `_emit`, which
feeds `on_event` and the RunResult alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.runtime import notebook_output
from compiler.runtime.cache import (
    ArtifactStore,
    cache_key,
    dataset_digests,
    load_outputs,
    local_module_digests,
)
from compiler.runtime.cluster import (
    ClusterSession,
    Placement,
    format_bytes,
    larger_memory_placement,
    open_cluster,
    placement_for,
    wait_for_any_worker,
    worker_capacities,
)
from compiler.runtime.executor import (
    TaskFailed,
    evaluate_parameters,
    execute_task,
    exit_worker_process,
    kill_worker_from_nanny,
)
from compiler.runtime.parameters import resolve_parameters
from compiler.runtime.results import (
    CACHED,
    DONE,
    FAILED,
    RETRYING,
    RUNNING,
    SUCCEEDED_STATES,
    UPSTREAM_FAILED,
    WAITING,
    RunResult,
    TaskResult,
)

EventCallback = Callable[[dict[str, Any]], None]

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
MAX_MEMORY_RETRIES = 2
RECORD_WAIT_S = 5.0  # a finished future whose record event is this late: ask the worker
FUTURE_POLL_S = 0.5
HARD_TIMEOUT_GRACE_S = 3.0


def hard_timeout_deadline(running_since: float, timeout: float) -> float:
    """When the client stops waiting for a task the worker could not interrupt (blocked in C
    code such as time.sleep or a socket read): the timeout plus a grace period."""
    return running_since + timeout + max(HARD_TIMEOUT_GRACE_S, 0.1 * timeout)


def backoff_delay(retry_number: int) -> float:
    """Seconds to wait before retry number `retry_number` (0-based): 0.5 s, 1 s, 2 s, ... 30 s."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**retry_number))


def new_run_id() -> str:
    # Random first: Dask keys use run_id[:8], which must differ between runs.
    return uuid.uuid4().hex[:16]


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def plan_cache_keys(
    spec: Mapping[str, Any],
    parameter_values: Mapping[str, Any],
    notebook_dir: Path,
    module_dir: Path | None = None,
) -> dict[str, str]:
    """cache_key per task, in topological order (upstream keys are needed first). Data paths
    are relative to `notebook_dir`, local modules live in `module_dir` (default: the same)."""
    keys: dict[str, str] = {}
    for task in spec["tasks"]:
        keys[task["name"]] = cache_key(
            task["version"],
            {name: parameter_values[name] for name in task.get("parameters", [])},
            [keys[up] for up in task.get("upstream", [])],
            {
                **dataset_digests(task.get("datasets", {}).get("reads", []), notebook_dir),
                **local_module_digests(task.get("imports", []), module_dir or notebook_dir),
            },
        )
    return keys


def task_payload(
    task: Mapping[str, Any],
    *,
    key: str,
    attempt: int,
    run_id: str,
    parameter_values: Mapping[str, Any],
    input_positions: Mapping[str, int],
    notebook_dir: str,
    store_url: str | None,
    event_topic: str,
    module_dir: str | None = None,
) -> dict[str, Any]:
    """The plain data the worker-side executor needs for one attempt of one task."""
    return {
        "run_id": run_id,
        "task": task["name"],
        "key": key,
        "attempt": attempt,
        "event_topic": event_topic,
        "notebook_dir": notebook_dir,
        "module_dir": module_dir or notebook_dir,
        "setup": task.get("setup", ""),
        "cells": [dict(c) for c in task.get("code", [])],
        "parameters": {name: parameter_values[name] for name in task.get("parameters", [])},
        "inputs": dict(input_positions),
        "outputs": list(task.get("outputs", [])),
        "timeout": task.get("timeout"),
        "store_url": store_url,
    }


def _record_of(outcome: Mapping[str, Any]) -> Any:
    return outcome.get("record")


@dataclass
class _TaskState:
    spec: dict[str, Any]
    result: TaskResult
    hit_manifest: dict[str, Any] | None = None  # verified cache entry usable for this run
    previous_manifest: dict[str, Any] | None = None  # last stored entry for this key
    placement: Placement = field(default_factory=Placement)
    future: Any = None
    load_future: Any = None  # for a cached task whose value a downstream task needs
    current_key: str | None = None
    remaining_upstream: int = 0
    blocked: bool = False  # some upstream task failed
    changed: bool = False  # ran and produced outputs other than its previous cache entry
    consumers_left: int = 0
    retries_used: int = 0
    memory_retries: int = 0
    cells: list[dict[str, Any]] = field(default_factory=list)
    running_since: float | None = None  # when the worker said it started the current attempt
    running_on: str | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class PipelineRun:
    """One execution of a spec. Use `run_pipeline`; this class only holds the run's state."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        notebook_path: str | Path,
        params: Mapping[str, Any] | None,
        scheduler: str | None,
        workers: int | None,
        use_cache: bool,
        force: Iterable[str],
        store_url: str | None,
        output_notebook: str | Path | None,
        on_event: EventCallback | None,
        run_id: str | None,
        memory_limit: int | str | None,
        lineage_db: str | None = None,
        record_lineage: bool = True,
        working_dir: str | Path | None = None,
    ):
        self.spec = dict(spec)
        self.notebook_path = Path(notebook_path).resolve()
        # Relative paths, the cache and the lineage database: the notebook's folder by default.
        self.working_dir = Path(working_dir).resolve() if working_dir else None
        self.notebook_dir = self.working_dir or self.notebook_path.parent
        self.parameters = resolve_parameters(spec, params)
        # Defaults that are expressions: evaluated on a worker when the run starts.
        self.computed_parameters = [
            name for name in spec.get("computed_parameters") or () if name not in (params or {})
        ]
        self.scheduler = scheduler
        self.workers = workers
        self.memory_limit = memory_limit
        self.use_cache = use_cache
        self.force = set(force)
        names = [t["name"] for t in spec["tasks"]]
        unknown = sorted(self.force - set(names))
        if unknown:
            raise ValueError(
                f"--force names unknown task(s) {', '.join(unknown)} (tasks: {', '.join(names)})"
            )
        self.store = (
            ArtifactStore(store_url) if store_url else ArtifactStore.default_for(self.notebook_dir)
        )
        self.output_notebook = Path(output_notebook) if output_notebook else None
        self.on_event = on_event
        self.run_id = run_id or new_run_id()
        self.event_topic = f"kiln-{self.run_id}"
        self.session: ClusterSession | None = None
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.states: dict[str, _TaskState] = {}
        self.downstream: dict[str, list[str]] = {n: [] for n in names}
        self.ready: deque[_TaskState] = deque()  # all upstream final, not yet resolved
        self.unfinished = 0  # tasks not yet in a final state
        self.retry_at: dict[str, float] = {}  # task -> when to submit its next attempt
        self.hard_deadlines: dict[str, float] = {}  # running task -> when to stop waiting
        self.in_flight: dict[str, float | None] = {}  # submitted task -> when seen finished
        self.started = _now_iso()
        self._event_errors = 0
        self.lineage_db = lineage_db
        self.record_lineage = record_lineage
        self.recorder: Any = None
        self.notebook_snapshot: dict[str, Any] | None = None

    # -- events ---------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.recorder is not None:
            self.recorder(event)  # queues the event; never raises into the run
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a broken listener must not break the run
            self._event_errors += 1

    def _open_recorder(self) -> None:
        """Lineage of every run, whoever started it (CLI, server, papermill, scheduler)."""
        if not self.record_lineage:
            return
        from compiler.lineage import RunRecorder, open_store

        store = None
        try:
            store = open_store(self.lineage_db, self.notebook_dir / self.notebook_path.name)
            recorder = RunRecorder(
                store,
                self.spec,
                self.notebook_path,
                self.parameters,
                self.run_id,
                scheduler_address=self.scheduler,
                store_url=self.store.url,
                working_dir=self.working_dir,
            )
            recorder.start()
        except Exception as exc:  # lineage must not stop a run (a bad URL, a damaged database)
            if store is not None:
                store.close()
            warnings.warn(f"kiln: lineage not recorded for this run: {exc}", stacklevel=3)
            return
        self.recorder = recorder

    def _close_recorder(self, result: RunResult | None, error: BaseException | None) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        try:
            if result is not None:
                recorder.finish(result)
            elif error is not None:
                status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
                recorder.fail(error, status)
        finally:
            recorder.close()
            recorder.store.close()

    def _emit_task(self, st: _TaskState, status: str, **extra: Any) -> None:
        r = st.result
        event = {
            "type": "task",
            "run_id": self.run_id,
            "task": r.name,
            "status": status,
            "attempt": r.attempts,
            "duration": r.duration,
            "cache_key": r.cache_key,
            "version": r.version,
            "cached": r.cached,
            "worker": r.worker,
            "resources": r.resources,
            "peak_memory": r.peak_memory,
            "outputs": r.outputs,
        }
        if status in (DONE, FAILED, CACHED):
            event["attempts"] = r.attempts
            event["attempt_log"] = r.attempt_log
        if r.error is not None and status == FAILED:
            event["error"] = r.error
        event.update(extra)
        self._emit(event)

    # -- planning -------------------------------------------------------------------------
    def _plan(self) -> None:
        keys = plan_cache_keys(
            self.spec, self.parameters, self.notebook_dir, self.notebook_path.parent
        )
        for task in self.spec["tasks"]:
            name = task["name"]
            st = _TaskState(
                spec=task,
                result=TaskResult(
                    name=name,
                    version=task["version"],
                    cache_key=keys[name],
                    resources=dict(task.get("resources") or {}),
                ),
                remaining_upstream=len(task.get("upstream", [])),
            )
            for up in task.get("upstream", []):
                self.downstream[up].append(name)
            if self.use_cache:
                st.previous_manifest = self.store.read_manifest(keys[name])
            may_hit = task.get("cache", True) and name not in self.force
            if st.previous_manifest is not None and may_hit:
                damaged = self.store.damaged_artifacts(st.previous_manifest)
                if not damaged:
                    st.hit_manifest = st.previous_manifest
                else:
                    self.store.discard_artifacts(damaged)
                    st.result.cache_note = "cached artifact missing or damaged; recomputed"
            self.states[name] = st
        self.unfinished = len(self.states)
        for task in self.spec["tasks"]:
            for producer in set(task.get("inputs", {}).values()):
                self.states[producer].consumers_left += 1

    def _tasks_that_may_run(self) -> list[str]:
        """Tasks without a usable cache entry, and everything downstream of them."""
        may_run: set[str] = set()
        for task in self.spec["tasks"]:  # topological order
            name = task["name"]
            if self.states[name].hit_manifest is None or any(
                up in may_run for up in task.get("upstream", [])
            ):
                may_run.add(name)
        return [t["name"] for t in self.spec["tasks"] if t["name"] in may_run]

    def _connect_and_place(self, names: list[str]) -> None:
        if self.session is None:  # already open when parameter defaults were computed
            self.session = open_cluster(self.scheduler, self.workers, self.memory_limit)
        try:
            client = self.session.client
            wait_for_any_worker(client)
            capacities = worker_capacities(client)
            for name in names:
                st = self.states[name]
                st.placement = placement_for(name, st.spec.get("resources") or {}, capacities)
            client.subscribe_topic(self.event_topic, self._on_worker_event)
        except BaseException:
            self.session.close()
            self.session = None
            raise

    def _on_worker_event(self, event: Any) -> None:
        # Runs on the client's event loop thread: hand over to the run loop, nothing else.
        _, message = event
        self.events.put(("worker", message))

    # -- the run --------------------------------------------------------------------------
    def _compute_parameters(self) -> None:
        """Evaluate the computed defaults once, before planning: the cache keys of the tasks
        that read them depend on their values (a new date is a new key). The cluster stays open
        for the run; `execute` closes it if anything here fails."""
        self.session = open_cluster(self.scheduler, self.workers, self.memory_limit)
        wait_for_any_worker(self.session.client)
        future = self.session.client.submit(
            evaluate_parameters,
            {
                "setup": self.spec.get("parameters_setup", ""),
                "source": self.spec.get("parameters_source", ""),
                "names": self.computed_parameters,
                "notebook_dir": str(self.notebook_dir),
                "module_dir": str(self.notebook_path.parent),
            },
            key=f"kiln-parameters-{self.run_id}",
            pure=False,
        )
        self.parameters.update(future.result())  # raises the worker's ValueError as is

    def _snapshot_notebook(self) -> None:
        """The notebook as it is when the run starts: the output notebook is built from it, so
        edits saved while the run goes on do not mix into this run's record."""
        try:
            self.notebook_snapshot = notebook_output.read_notebook_json(self.notebook_path)
        except (OSError, ValueError):  # no notebook beside a bare spec: no output notebook
            self.notebook_snapshot = None

    def execute(self) -> RunResult:
        self._snapshot_notebook()
        try:
            if self.computed_parameters:
                self._compute_parameters()
            self._plan()
            may_run = self._tasks_that_may_run()
        except BaseException:
            if self.session is not None:
                self.session.close()
                self.session = None
            raise
        self._open_recorder()
        try:
            result = self._execute(may_run)
        except BaseException as exc:
            self._close_recorder(None, exc)
            raise
        self._close_recorder(result, None)
        return result

    def _execute(self, may_run: list[str]) -> RunResult:
        dashboard: str | None = None
        try:
            if may_run:
                self._connect_and_place(may_run)
            dashboard = self.session.dashboard if self.session else None
            scheduler_address = self.session.client.scheduler.address if self.session else None
            self._emit(
                {
                    "type": "run",
                    "run_id": self.run_id,
                    "status": "started",
                    "dashboard": dashboard,
                    "scheduler_address": scheduler_address,
                }
            )
            for st in self.states.values():
                self._emit_task(st, WAITING)
            self.ready.extend(st for st in self.states.values() if st.remaining_upstream == 0)
            self._resolve_ready()
            self._loop()
        except BaseException:
            self._cancel_outstanding()
            raise
        finally:
            if self.session is not None:
                if not self.session.owned:  # a cluster we started goes away with its events
                    self._forget_events()
                self.session.close()
        return self._finish(dashboard)

    def _loop(self) -> None:
        # Bookkeeping is per event, so it must not scan all tasks (500 tiny tasks = 1500 events).
        next_poll = time.monotonic() + FUTURE_POLL_S
        while self.unfinished:
            due = [*self.retry_at.values(), *self.hard_deadlines.values()]
            if self.in_flight:
                due.append(next_poll)
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            try:
                kind, item = self.events.get(timeout=timeout)
            except queue.Empty:
                kind, item = "tick", None
            if kind == "worker":
                self._on_worker_message(item)
            if time.monotonic() >= next_poll:
                self._poll_futures()
                next_poll = time.monotonic() + FUTURE_POLL_S
            self._submit_due_retries()
            self._stop_tasks_past_their_timeout()
            self._resolve_ready()

    def _submit_due_retries(self) -> None:
        now = time.monotonic()
        for name, due in list(self.retry_at.items()):
            if due <= now:
                del self.retry_at[name]
                self._submit(self.states[name])

    def _stop_tasks_past_their_timeout(self) -> None:
        """The worker raises TaskTimeout inside the task at its timeout; a task blocked in C
        code never sees it. Past the grace period, cancel it and restart its worker process."""
        now = time.monotonic()
        for name, deadline in list(self.hard_deadlines.items()):
            st = self.states[name]
            timeout = st.spec.get("timeout")
            if now < deadline or st.future is None:
                continue
            del self.hard_deadlines[name]
            assert self.session is not None
            client = self.session.client
            future, worker = st.future, st.running_on
            client.cancel([future])
            if worker:
                # Its thread cannot be stopped: end the worker process (its nanny starts a new
                # one). Dask's graceful restart would wait for the blocked thread.
                try:
                    killed = client.run(kill_worker_from_nanny, workers=[worker], nanny=True)
                except Exception:
                    killed = {}
                if not any(killed.values()):  # no nanny: the worker ends itself
                    with contextlib.suppress(Exception):
                        client.run(exit_worker_process, workers=[worker])
            evalue = (
                f"task exceeded its timeout of {timeout}s and did not stop (blocked in code "
                f"that cannot be interrupted); its worker process {worker} was ended"
            )
            error: dict[str, Any] = {
                "cell_index": None,
                "cell_id": None,
                "line": None,
                "ename": "TaskTimeout",
                "evalue": evalue,
                "traceback": [],
                "reason": "timeout",
                "where": "worker",
            }
            self._attempt_failed(st, error, {"worker": worker})

    # -- deciding and submitting --------------------------------------------------------------
    def _resolve_ready(self) -> None:
        # A work list, not recursion: a long chain of cache hits resolves in one pass.
        while self.ready:
            self._resolve(self.ready.popleft())

    def _resolve(self, st: _TaskState) -> None:
        """All upstream tasks are final: skip, take from cache, or submit."""
        if st.blocked:
            st.result.status = UPSTREAM_FAILED
            self._emit_task(st, UPSTREAM_FAILED)
            self._finalize(st)
            return
        upstream_changed = any(self.states[u].changed for u in st.spec.get("upstream", []))
        if st.hit_manifest is not None and not upstream_changed:
            manifest = st.hit_manifest
            st.result.cached = True
            st.result.duration = 0.0
            st.result.outputs = dict(manifest.get("outputs") or {})
            st.result.peak_memory = manifest.get("peak_memory")
            st.cells = list(manifest.get("cells") or [])
            st.result.status = CACHED
            self._emit_task(st, CACHED)
            self._finalize(st)
            return
        self._submit(st)

    def _value_future(self, producer: str) -> Any:
        st = self.states[producer]
        if st.future is not None:
            return st.future
        if st.load_future is None:
            assert self.session is not None
            digests = {name: info["digest"] for name, info in st.result.outputs.items()}
            st.load_future = self.session.client.submit(
                load_outputs,
                self.store.url,
                digests,
                key=f"{producer}-{st.result.cache_key[:8]}-{self.run_id[:8]}-load",
                pure=False,
            )
        return st.load_future

    def _submit(self, st: _TaskState) -> None:
        assert self.session is not None
        args: list[Any] = []
        positions: dict[str, int] = {}
        producer_position: dict[str, int] = {}
        for name, producer in st.spec.get("inputs", {}).items():
            if producer not in producer_position:
                producer_position[producer] = len(args)
                args.append(self._value_future(producer))
            positions[name] = producer_position[producer]
        st.result.attempts += 1
        attempt = st.result.attempts
        key = f"{st.name}-{st.result.cache_key[:8]}-{self.run_id[:8]}"
        if attempt > 1:
            key += f"-{attempt}"
        payload = task_payload(
            st.spec,
            key=key,
            attempt=attempt,
            run_id=self.run_id,
            parameter_values=self.parameters,
            input_positions=positions,
            notebook_dir=str(self.notebook_dir),
            module_dir=str(self.notebook_path.parent),
            store_url=self.store.url if self.use_cache else None,
            event_topic=self.event_topic,
        )
        st.current_key = key
        st.running_since = st.running_on = None
        future = self.session.client.submit(
            execute_task, payload, *args, key=key, pure=False, **st.placement.submit_kwargs()
        )
        st.future = future
        self.in_flight[st.name] = None

    # -- reports back -------------------------------------------------------------------------
    def _on_worker_message(self, message: Mapping[str, Any]) -> None:
        st = self.states.get(str(message.get("task")))
        if st is None or message.get("key") != st.current_key:
            return
        if message.get("kind") == "running":
            st.running_since = time.monotonic()
            st.running_on = message.get("address")
            if st.spec.get("timeout"):
                self.hard_deadlines[st.name] = hard_timeout_deadline(
                    st.running_since, float(st.spec["timeout"])
                )
            st.result.worker = message.get("address")
            self._emit_task(st, RUNNING, worker=message.get("address"))
        elif message.get("kind") == "record":
            # Logged by the task just before it returns: the task is done. Downstream tasks can
            # be submitted now with its (still pending) future; Dask orders them.
            self._succeeded(st, message)
        elif message.get("kind") == "failed":
            self._attempt_failed(st, dict(message["error"]), dict(message))

    def _poll_futures(self) -> None:
        """Safety net for outcomes no task event reports: a worker that died for good
        (KilledWorker), a cancelled or lost task, a record event that never came."""
        now = time.monotonic()
        for name, finished_seen in list(self.in_flight.items()):
            st = self.states[name]
            future = st.future
            if future is None:
                continue
            if future.status in ("error", "cancelled", "lost"):
                self._attempt_failed(st, *self._failure_of(future))
            elif future.status == "finished":
                if finished_seen is None:
                    self.in_flight[name] = now
                elif now - finished_seen > RECORD_WAIT_S:
                    assert self.session is not None
                    record = self.session.client.submit(_record_of, future, pure=False).result()
                    self._succeeded(st, dict(record))

    def _end_attempt(self, st: _TaskState) -> None:
        """The current attempt's outcome is known: later reports about it are ignored."""
        st.current_key = None
        st.running_since = None
        self.hard_deadlines.pop(st.name, None)
        self.in_flight.pop(st.name, None)

    def _succeeded(self, st: _TaskState, record: Mapping[str, Any]) -> None:
        self._end_attempt(st)
        r = st.result
        r.duration = record.get("duration")
        r.peak_memory = record.get("peak_memory")
        r.worker = record.get("worker")
        r.outputs = dict(record.get("outputs") or {})
        r.error = None
        st.cells = list(record.get("cells") or [])
        r.attempt_log.append(self._attempt_entry(st, record, "done"))
        digests = {n: info.get("digest") for n, info in r.outputs.items()}
        previous = (st.previous_manifest or {}).get("outputs") or {}
        st.changed = (
            not self.use_cache
            or st.previous_manifest is None
            or digests != {n: info.get("digest") for n, info in previous.items()}
        )
        if self.use_cache and all(digests.values()):
            self.store.write_manifest(r.cache_key, self._manifest(st, record))
        r.status = DONE
        self._emit_task(st, DONE)
        self._finalize(st)

    def _manifest(self, st: _TaskState, record: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "task": st.name,
            "version": st.result.version,
            "cache_key": st.result.cache_key,
            "outputs": st.result.outputs,
            "cells": st.cells,
            "duration": record.get("duration"),
            "peak_memory": record.get("peak_memory"),
            "worker": record.get("worker"),
            "run_id": self.run_id,
            "created": _now_iso(),
        }

    def _attempt_entry(
        self, st: _TaskState, record: Mapping[str, Any] | None, status: str
    ) -> dict[str, Any]:
        record = record or {}
        return {
            "attempt": st.result.attempts,
            "status": status,
            "worker": record.get("worker"),
            "duration": record.get("duration"),
            "peak_memory": record.get("peak_memory"),
            "memory_limit": record.get("memory_limit"),
            "resources": st.placement.resources,
        }

    def _failure_of(self, future: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(error dict, worker record or None) for a future that did not finish."""
        from distributed.scheduler import KilledWorker

        try:
            exc = future.exception(timeout=30)
        except Exception as lost:  # cancelled, scheduler gone
            exc = lost
        if isinstance(exc, TaskFailed):
            return dict(exc.record["error"]), exc.record
        import traceback as tb

        reason = "worker_died" if isinstance(exc, KilledWorker) else "error"
        error = {
            "cell_index": None,
            "cell_id": None,
            "line": None,
            "ename": type(exc).__name__,
            "evalue": str(exc),
            "traceback": tb.format_exception(exc) if isinstance(exc, BaseException) else [],
            "reason": reason,
            "where": "worker",
        }
        return error, None

    def _attempt_failed(
        self, st: _TaskState, error: dict[str, Any], record: dict[str, Any] | None
    ) -> None:
        self._end_attempt(st)
        r = st.result
        entry = self._attempt_entry(st, record, "failed")
        entry["error"] = f"{error['ename']}: {error['evalue']}"
        entry["reason"] = error.get("reason")
        r.attempt_log.append(entry)
        if record is not None:
            r.worker = record.get("worker")
            r.duration = record.get("duration")
            r.peak_memory = record.get("peak_memory")
        st.future = None

        if error.get("reason") in ("memory", "worker_died") and (
            st.memory_retries < MAX_MEMORY_RETRIES
        ):
            bigger = self._more_memory(st, record)
            if bigger is not None:
                st.memory_retries += 1
                st.placement = bigger
                memory = (bigger.resources or {}).get("MEMORY")
                entry["retry"] = f"retried with more memory ({format_bytes(memory)})"
                self._emit_task(st, RETRYING, reason=entry["retry"], error=error)
                self._submit(st)
                return
        if st.retries_used < int(st.spec.get("retries") or 0):
            delay = backoff_delay(st.retries_used)
            st.retries_used += 1
            self.retry_at[st.name] = time.monotonic() + delay
            entry["retry"] = f"retried after {delay:g} s (retry {st.retries_used})"
            self._emit_task(st, RETRYING, reason=entry["retry"], error=error)
            return
        r.error = {
            k: error.get(k)
            for k in ("cell_index", "cell_id", "line", "ename", "evalue", "traceback", "reason")
        }
        st.cells = list((record or {}).get("cells") or [])
        r.status = FAILED
        self._emit_task(st, FAILED)
        self._finalize(st)

    def _more_memory(self, st: _TaskState, record: Mapping[str, Any] | None) -> Placement | None:
        """Placement on a worker with about twice the memory the task just ran out of."""
        import psutil

        assert self.session is not None
        client = self.session.client
        capacities = worker_capacities(client)
        asked = float((st.placement.resources or {}).get("MEMORY", 0.0))
        had = (record or {}).get("memory_limit") or max(
            (c.memory_limit or 0 for c in capacities), default=0
        )
        target = int(2 * max(asked, float(had or 0)))
        if target <= 0:
            return None
        if self.session.owned:
            target = min(target, int(psutil.virtual_memory().total))
            if target <= max(asked, float(had or 0)):
                return None
            # One worker of that size serves every task that ran out of memory like this one.
            if not any(c.resources.get("MEMORY", 0.0) >= target for c in capacities):
                self.session.add_memory_worker(target)
            return Placement(
                resources={**(st.placement.resources or {}), "MEMORY": float(target)},
                workers=None,
            )
        return larger_memory_placement(st.placement, target, capacities)

    # -- finishing ------------------------------------------------------------------------------
    def _finalize(self, st: _TaskState) -> None:
        """A task reached a final state: release what it held and unblock its dependents."""
        self.unfinished -= 1
        failed = st.result.status in (FAILED, UPSTREAM_FAILED)
        for producer in set(st.spec.get("inputs", {}).values()):
            up = self.states[producer]
            up.consumers_left -= 1
            if up.consumers_left <= 0:
                up.future = up.load_future = None  # let Dask free the value
        if st.consumers_left <= 0:
            st.future = st.load_future = None
        for child in self.downstream[st.name]:
            cst = self.states[child]
            cst.blocked = cst.blocked or failed
            cst.remaining_upstream -= 1
            if cst.remaining_upstream == 0:
                self.ready.append(cst)

    def _cancel_outstanding(self) -> None:
        if self.session is None:
            return
        futures = [s.future for s in self.states.values() if s.future is not None]
        if futures:
            try:
                self.session.client.cancel(futures)
            except Exception:
                pass

    def _forget_events(self) -> None:
        assert self.session is not None
        client = self.session.client
        topic = self.event_topic
        try:
            client.unsubscribe_topic(topic)

            def drop_topic(dask_scheduler: Any) -> None:
                # The scheduler keeps every topic's recent events; this run's are done with.
                broker = getattr(dask_scheduler, "_broker", None)
                if broker is not None and hasattr(broker, "truncate"):
                    broker.truncate(topic)
                elif isinstance(getattr(dask_scheduler, "events", None), dict):
                    dask_scheduler.events.pop(topic, None)

            client.run_on_scheduler(drop_topic)
        except Exception:
            pass

    def _finish(self, dashboard: str | None) -> RunResult:
        results = [self.states[t["name"]].result for t in self.spec["tasks"]]
        status = "succeeded" if all(r.status in SUCCEEDED_STATES for r in results) else "failed"
        result = RunResult(
            run_id=self.run_id,
            status=status,
            pipeline=str(self.spec.get("name", "")),
            version=str(self.spec.get("version", "")),
            started=self.started,
            finished=_now_iso(),
            parameters=dict(self.parameters),
            tasks=results,
            dashboard=dashboard,
            store_url=self.store.url,
        )
        path = self.output_notebook or (
            self.notebook_dir / ".kiln" / "runs" / self.run_id / self.notebook_path.name
        )
        if self.notebook_snapshot is not None:
            notebook_output.write_output_notebook(
                self.notebook_snapshot,
                path,
                spec=self.spec,
                result=result,
                cells_by_task={name: st.cells for name, st in self.states.items()},
            )
            result.output_notebook = str(path)
        self._emit(
            {
                "type": "run",
                "run_id": self.run_id,
                "status": status,
                "dashboard": dashboard,
                "output_notebook": result.output_notebook,
            }
        )
        return result


def run_pipeline(
    spec: Mapping[str, Any],
    *,
    notebook_path: str | Path,
    params: Mapping[str, Any] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    use_cache: bool = True,
    force: Iterable[str] = (),
    store_url: str | None = None,
    output_notebook: str | Path | None = None,
    on_event: EventCallback | None = None,
    run_id: str | None = None,
    memory_limit: int | str | None = None,
    lineage_db: str | None = None,
    record_lineage: bool = True,
    working_dir: str | Path | None = None,
) -> RunResult:
    """Run a compiled pipeline spec on Dask and write its output notebook.

    `params` are typed values (see coerce_parameters for CLI strings). With no `scheduler`
    (and no DASK_SCHEDULER_ADDRESS / `scheduler-address` config) a LocalCluster of `workers`
    processes (`memory_limit` each, Dask's "auto" by default) is started and closed afterwards;
    an existing cluster is never closed. `use_cache=False` neither reads nor writes the cache.
    `force` reruns the named tasks; their downstream tasks rerun only if the forced task's
    outputs changed. Raises ResourceUnavailable (before anything runs) when a task asks for
    resources no worker has, ValueError for unknown parameters or forced task names.
    Lineage goes to `lineage_db` (a SQLAlchemy URL; default $KILN_LINEAGE_DB, else
    `.kiln/lineage.db` beside the notebook) unless `record_lineage` is False. `working_dir`
    (default: the notebook's folder) is where tasks run and relative paths, the default
    artifact store, lineage database and output notebook live.
    """
    run = PipelineRun(
        spec,
        notebook_path=notebook_path,
        params=params,
        scheduler=scheduler,
        workers=workers,
        use_cache=use_cache,
        force=force,
        store_url=store_url,
        output_notebook=output_notebook,
        on_event=on_event,
        run_id=run_id,
        memory_limit=memory_limit,
        lineage_db=lineage_db,
        record_lineage=record_lineage,
        working_dir=working_dir,
    )
    return run.execute()
