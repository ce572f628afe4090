"""Run a pipeline spec on Dask: the driver of the state machine.

`run_pipeline` plans (plan.py), opens the cluster, and then only moves messages: what the
cluster reports (task events on the run's Dask topic, futures that ended) becomes events for
`RunState.handle` (state.py), and the instructions that come back become Dask calls (submit,
cancel, end a worker process, add a bigger worker), cache writes and events for the listeners.
Finished tasks report through Dask's event log (one small record per task: captured cell
outputs, output digests, peak memory), so the client never gathers output values.

The runtime knows no store of its own: lineage, progress displays and the server's run records
are listeners (model.events), composed by `compiler.ops`.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from compiler.model.events import Fanout, Listener, RunEvent
from compiler.model.ids import new_run_id
from compiler.model.spec import PipelineSpec
from compiler.model.statuses import RunStatus
from compiler.model.validation import check_task_name
from compiler.runtime import notebook_output
from compiler.runtime.cache import ArtifactStore, load_outputs, written_file_fingerprints
from compiler.runtime.cluster import (
    ClusterSession,
    LocalClusterStart,
    Placement,
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
from compiler.runtime.judge import judge_run, monitoring_fields, prefetch_statistics
from compiler.runtime.monitor import monitor_payload
from compiler.runtime.parameters import resolve_parameters
from compiler.runtime.plan import plan_run, task_payload
from compiler.runtime.results import RunResult
from compiler.runtime.state import (
    AttemptFailed,
    AttemptRunning,
    AttemptSucceeded,
    Cancel,
    CancelRun,
    CellProgress,
    Emit,
    FindMoreMemory,
    Instruction,
    KillWorker,
    MemoryPlacement,
    Release,
    RunState,
    Started,
    StoreManifest,
    Submit,
    Tick,
)
from compiler.runtime.store_writes import commit_handed_out, commit_when_stored

RECORD_WAIT_S = 5.0  # a finished future whose record event is this late: ask the worker
FUTURE_POLL_S = 0.5
CANCEL_POLL_S = 0.2  # how often the loop looks at its cancel event (a wait, not a spin)


def _record_of(outcome: Mapping[str, Any]) -> Any:
    return outcome.get("record")


class Driver:
    """One execution of a spec on a cluster. Use `run_pipeline`."""

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        notebook_path: Path,
        parameters: dict[str, Any],
        computed_parameters: list[str],
        scheduler: str | None,
        workers: int | None,
        memory_limit: int | str | None,
        use_cache: bool,
        force: set[str],
        store: ArtifactStore,
        output_notebook: Path | None,
        listener: Listener,
        run_id: str,
        working_dir: Path | None,
        cancel: threading.Event | None = None,
        notebook_json: Mapping[str, Any] | None = None,
        cell_events: bool = False,
        cell_timeout: float | None = None,
        baseline: Mapping[str, Any] | Callable[[], Mapping[str, Any] | None] | None = None,
        cluster_start: LocalClusterStart | None = None,
    ):
        self.spec = spec
        # A local cluster the caller began starting before it compiled: used instead of
        # opening one, closed unused when the plan runs nothing.
        self.cluster_start = cluster_start
        # Set from another thread (the server's Cancel); the loop feeds CancelRun to the state.
        self.cancel = cancel
        self.notebook = notebook_json  # compiled content that is not the file on disk, or None
        self.cell_events = cell_events or bool(cell_timeout)
        self.cell_timeout = cell_timeout
        # {run_id, metrics, profiles}: what checks and input drift are judged against, or a
        # function that gives it when the tasks are over (the lineage store opens meanwhile)
        self.baseline = baseline
        self.notebook_path = notebook_path
        self.working_dir = working_dir
        # Relative paths, the cache and the output notebook: the notebook's folder by default.
        self.notebook_dir = working_dir or notebook_path.parent
        self.module_dir = notebook_path.parent  # helper modules stay beside the notebook
        self.parameters = parameters
        self.computed_parameters = computed_parameters
        self.scheduler = scheduler
        self.workers = workers
        self.memory_limit = memory_limit
        self.use_cache = use_cache
        self.force = force
        self.store = store
        self.output_notebook = output_notebook
        self.listener = listener
        self.run_id = run_id
        self.event_topic = f"kiln-{run_id}"
        self.session: ClusterSession | None = None
        self.reports: queue.Queue[Mapping[str, Any]] = queue.Queue()
        self.futures: dict[str, Any] = {}  # task -> future of its current or last attempt
        self.load_futures: dict[str, Any] = {}  # cached task -> future loading its outputs
        self.finished_seen: dict[str, float] = {}  # task -> when its future was seen finished
        self.state: RunState | None = None
        self.notebook_snapshot: dict[str, Any] | None = None
        self.manifest_writer: ThreadPoolExecutor | None = None
        self.manifest_writes: list[Future[Any]] = []

    # -- the run, top to bottom -------------------------------------------------------------------
    def execute(self) -> RunResult:
        self._snapshot_notebook()
        if callable(self.baseline) or self.baseline is None:
            if self.spec.raw.get("metrics") or self.spec.raw.get("drift"):
                prefetch_statistics({"profiles": True})  # a monitored notebook: likely needed
        else:
            prefetch_statistics(self.baseline)
        try:
            if self.computed_parameters:
                self._compute_parameters()
            plan = plan_run(
                self.spec,
                self.parameters,
                store=self.store,
                use_cache=self.use_cache,
                force=self.force,
                notebook_dir=self.notebook_dir,
                module_dir=self.module_dir,
            )
            placements = self._connect_and_place(plan.may_run) if plan.may_run else {}
        except BaseException:
            self._close_session()
            self._discard_cluster_start()
            raise
        self._discard_cluster_start()  # every task cached: the early cluster is not needed
        self.state = RunState(
            self.spec,
            plan,
            run_id=self.run_id,
            use_cache=self.use_cache,
            placements=placements,
            cell_timeout=self.cell_timeout,
        )
        dashboard = self.session.dashboard if self.session else None
        try:
            self.listener(
                RunEvent(
                    run_id=self.run_id,
                    status=RunStatus.STARTED,
                    dashboard=dashboard,
                    scheduler_address=(
                        self.session.client.scheduler.address if self.session else None
                    ),
                    parameters=dict(self.parameters),
                )
            )
            self._apply(self.state.handle(Started(time.monotonic())))
            self._loop()
            self._drain_manifests()
        except BaseException:
            self._cancel_outstanding()
            with contextlib.suppress(Exception):
                self._drain_manifests()
            raise
        finally:
            if self.session is not None and not self.session.owned:
                self._forget_events()  # a cluster we started goes away with its events
            self._close_session()
        return self._finish(dashboard)

    def _loop(self) -> None:
        # Bookkeeping is per event, so it must not scan all tasks (500 tiny tasks = 1500 events).
        assert self.state is not None
        next_poll = time.monotonic() + FUTURE_POLL_S
        while not self.state.finished:
            if self.cancel is not None and self.cancel.is_set():
                self._apply(self.state.handle(CancelRun(time.monotonic())))
                return
            due = self.state.next_due()
            if self.futures_in_flight():
                due = next_poll if due is None else min(due, next_poll)
            if self.cancel is not None:
                soon = time.monotonic() + CANCEL_POLL_S
                due = soon if due is None else min(due, soon)
            timeout = max(0.0, due - time.monotonic()) if due is not None else None
            try:
                message = self.reports.get(timeout=timeout)
            except queue.Empty:
                message = None
            now = time.monotonic()
            if message is not None:
                event = self._event_of(message, now)
                if event is not None:
                    self._apply(self.state.handle(event))
            if now >= next_poll:
                self._poll_futures(now)
                next_poll = time.monotonic() + FUTURE_POLL_S
            self._apply(self.state.handle(Tick(time.monotonic())))

    def futures_in_flight(self) -> bool:
        assert self.state is not None
        return self.state.any_in_flight()

    # -- instructions -> Dask ----------------------------------------------------------------------
    def _apply(self, instructions: list[Instruction]) -> None:
        assert self.state is not None
        work = list(instructions)
        while work:
            instruction = work.pop(0)
            if isinstance(instruction, Emit):
                self.listener(instruction.event)
            elif isinstance(instruction, Submit):
                self._submit(instruction)
            elif isinstance(instruction, StoreManifest):
                self._write_manifest(instruction)
            elif isinstance(instruction, Release):
                self.futures.pop(instruction.task, None)
                self.load_futures.pop(instruction.task, None)
            elif isinstance(instruction, Cancel):
                future = self.futures.get(instruction.task)
                if future is not None and self.session is not None:
                    with contextlib.suppress(Exception):
                        self.session.client.cancel([future])
            elif isinstance(instruction, KillWorker):
                self._kill_worker(instruction.worker)
            elif isinstance(instruction, FindMoreMemory):
                placement, memory = self._more_memory(instruction)
                answer = MemoryPlacement(instruction.task, placement, memory, time.monotonic())
                work = self.state.handle(answer) + work

    def _write_manifest(self, instruction: StoreManifest) -> None:
        # One writer thread: the run loop goes on with the next event while a manifest is
        # written and renamed (500 tiny tasks spent 6 s of the loop's time in these writes on
        # a busy machine). The run waits for them before it finishes (`_drain_manifests`).
        if self.manifest_writer is None:
            self.manifest_writer = ThreadPoolExecutor(1, thread_name_prefix="kiln-manifests")
        # What the task wrote, as it is now: a later plan reruns it once they changed.
        writes = self.spec.task(instruction.task).writes
        manifest = dict(instruction.manifest)
        if writes:
            manifest["writes"] = written_file_fingerprints(writes, self.notebook_dir)
        if instruction.written_by is not None and self.session is not None:
            # Its large outputs are still being written on that worker: the worker writes the
            # manifest after them, and the run does not wait (store_writes.py). A later run in
            # this process waits for it at its plan. Asked from the writer thread too: the
            # call is a round trip to the scheduler, and the tasks that read those outputs are
            # submitted after this instruction.
            outputs = manifest.get("outputs") or {}
            nbytes = sum(int(info.get("stored_bytes") or 0) for info in outputs.values())
            self.store.mark_pending(instruction.cache_key)
            commit_handed_out(self.store, instruction.cache_key, nbytes)
            self.manifest_writes.append(
                self.manifest_writer.submit(
                    self.session.client.run,
                    commit_when_stored,
                    self.store.url,
                    instruction.cache_key,
                    manifest,
                    list(instruction.pending_digests),
                    workers=[instruction.written_by],
                    wait=False,
                )
            )
            return
        self.manifest_writes.append(
            self.manifest_writer.submit(self.store.write_manifest, instruction.cache_key, manifest)
        )

    def _drain_manifests(self) -> None:
        """Wait for every manifest write; the first that failed raises here."""
        writes, self.manifest_writes = self.manifest_writes, []
        try:
            for write in writes:
                write.result()
        finally:
            if self.manifest_writer is not None:
                self.manifest_writer.shutdown(wait=True)
                self.manifest_writer = None

    def _value_future(self, producer: str) -> Any:
        assert self.session is not None and self.state is not None
        future = self.futures.get(producer)
        if future is not None:
            return future
        if producer not in self.load_futures:
            cache_key = self.state.tasks[producer].result.cache_key
            self.load_futures[producer] = self.session.client.submit(
                load_outputs,
                self.store.url,
                self.state.cached_outputs(producer),
                key=f"{producer}-{cache_key[:8]}-{self.run_id[:8]}-load",
                pure=False,
            )
        return self.load_futures[producer]

    def _fresh_load(self, producer: str, key: str) -> Any:
        """The producer's stored values, loaded for one attempt alone: its in-memory values
        may have been changed in place by another task (state.py `_reexport`)."""
        assert self.session is not None and self.state is not None
        return self.session.client.submit(
            load_outputs,
            self.store.url,
            self.state.cached_outputs(producer),
            key=f"{key}-{producer}-load",
            pure=False,
        )

    def _submit(self, instruction: Submit) -> None:
        assert self.state is not None
        if self.session is None:  # every task was cached, and one must run again
            placements = self._connect_and_place([])
            del placements
        assert self.session is not None
        task = self.spec.task(instruction.task)
        args: list[Any] = []
        positions: dict[str, int] = {}
        producer_position: dict[str, int] = {}
        from_store = self.state.from_store(task.name)
        for name, producer in self.state.producers_of(task.name).items():
            if producer not in producer_position:
                producer_position[producer] = len(args)
                if producer in from_store:
                    args.append(self._fresh_load(producer, instruction.key))
                else:
                    args.append(self._value_future(producer))
            positions[name] = producer_position[producer]
        payload = task_payload(
            task,
            key=instruction.key,
            attempt=instruction.attempt,
            run_id=self.run_id,
            parameter_values=self.parameters,
            input_positions=positions,
            notebook_dir=str(self.notebook_dir),
            module_dir=str(self.module_dir),
            store_url=self.store.url if self.use_cache else None,
            event_topic=self.event_topic,
            cell_timeout=self.cell_timeout,
            cell_events=self.cell_events,
        )
        payload.update(monitor_payload(self.spec.raw, task))
        # The producers' content digests: the worker's input-change check starts from them.
        payload["input_digests"] = self.state.expected_digests(task.name)
        placement: Placement = self.state.placement(task.name) or Placement()
        self.futures[task.name] = self.session.client.submit(
            execute_task,
            payload,
            *args,
            key=instruction.key,
            pure=False,
            **placement.submit_kwargs(),
        )
        self.finished_seen.pop(task.name, None)

    def _kill_worker(self, worker: str) -> None:
        assert self.session is not None
        client = self.session.client
        try:
            killed = client.run(kill_worker_from_nanny, workers=[worker], nanny=True)
        except Exception:
            killed = {}
        if not any(killed.values()):  # no nanny: the worker ends itself
            with contextlib.suppress(Exception):
                client.run(exit_worker_process, workers=[worker])

    def _more_memory(self, ask: FindMoreMemory) -> tuple[Placement | None, float | None]:
        """A placement on a worker with about twice the memory the task just ran out of."""
        import psutil

        assert self.session is not None
        capacities = worker_capacities(self.session.client)
        current: Placement = ask.placement or Placement()
        asked = float((current.resources or {}).get("MEMORY", 0.0))
        had = ask.memory_limit or max((c.memory_limit or 0 for c in capacities), default=0)
        target = int(2 * max(asked, float(had or 0)))
        if target <= 0:
            return None, None
        if self.session.owned:
            target = min(target, int(psutil.virtual_memory().total))
            if target <= max(asked, float(had or 0)):
                return None, None
            # One worker of that size serves every task that ran out of memory like this one.
            if not any(c.resources.get("MEMORY", 0.0) >= target for c in capacities):
                self.session.add_memory_worker(target)
            bigger = Placement(
                resources={**(current.resources or {}), "MEMORY": float(target)}, workers=None
            )
            return bigger, float(target)
        found = larger_memory_placement(current, target, capacities)
        if found is None:
            return None, None
        return found, (found.resources or {}).get("MEMORY", float(target))

    # -- Dask -> events ----------------------------------------------------------------------------
    def _on_worker_event(self, event: Any) -> None:
        # Runs on the client's event loop thread: hand over to the run loop, nothing else.
        _, message = event
        self.reports.put(message)

    def _event_of(self, message: Mapping[str, Any], now: float) -> Any:
        task, key, kind = str(message.get("task")), str(message.get("key")), message.get("kind")
        if kind == "running":
            return AttemptRunning(task, key, message.get("address"), now)
        if kind == "record":
            # Logged by the task just before it returns: the task is done. Downstream tasks can
            # be submitted now with its (still pending) future; Dask orders them.
            return AttemptSucceeded(task, key, message, now)
        if kind == "failed":
            return AttemptFailed(task, key, dict(message["error"]), dict(message), now)
        if kind in ("cell_started", "cell_finished"):
            cell = dict(message.get("cell") or {})
            return CellProgress(task, key, kind == "cell_started", cell, now)
        return None

    def _poll_futures(self, now: float) -> None:
        """Safety net for outcomes no task event reports: a worker that died for good
        (KilledWorker), a cancelled or lost task, a record event that never came."""
        assert self.state is not None and self.session is not None
        for name in self.state.in_flight():
            future = self.futures.get(name)
            key = self.state.current_key(name)
            if future is None or key is None:
                continue
            if future.status in ("error", "cancelled", "lost"):
                error, record = self._failure_of(future)
                self._apply(self.state.handle(AttemptFailed(name, key, error, record, now)))
            elif future.status == "finished":
                seen = self.finished_seen.setdefault(name, now)
                if now - seen > RECORD_WAIT_S:
                    client = self.session.client
                    record = client.submit(_record_of, future, pure=False).result()
                    self._apply(self.state.handle(AttemptSucceeded(name, key, record, now)))

    def _failure_of(self, future: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(error dict, worker record or None) for a future that did not finish."""
        from distributed.scheduler import KilledWorker

        try:
            exc = future.exception(timeout=30)
        except Exception as lost:  # cancelled, scheduler gone
            exc = lost
        if isinstance(exc, TaskFailed):
            return dict(exc.record["error"]), exc.record
        reason = "worker_died" if isinstance(exc, KilledWorker) else "error"
        error = {
            "cell_index": None,
            "cell_id": None,
            "line": None,
            "ename": type(exc).__name__,
            "evalue": str(exc),
            "traceback": traceback.format_exception(exc) if isinstance(exc, BaseException) else [],
            "reason": reason,
            "where": "worker",
        }
        return error, None

    # -- before and after --------------------------------------------------------------------------
    def _snapshot_notebook(self) -> None:
        """The notebook as it is when the run starts: the output notebook is built from it, so
        edits saved while the run goes on do not mix into this run's record."""
        if self.notebook is not None:
            self.notebook_snapshot = copy.deepcopy(dict(self.notebook))
            return
        try:
            self.notebook_snapshot = notebook_output.read_notebook_json(self.notebook_path)
        except (OSError, ValueError):  # no notebook beside a bare spec: no output notebook
            self.notebook_snapshot = None

    def _open_session(self) -> ClusterSession:
        if self.session is None:
            if self.cluster_start is not None:
                start, self.cluster_start = self.cluster_start, None
                self.session = start.session()
            else:
                self.session = open_cluster(self.scheduler, self.workers, self.memory_limit)
        return self.session

    def _discard_cluster_start(self) -> None:
        if self.cluster_start is not None:
            start, self.cluster_start = self.cluster_start, None
            start.discard()

    def _close_session(self) -> None:
        if self.session is not None:
            if not self.session.owned:
                # The client outlives the run (clients.py): the run's futures would hold their
                # values in the cluster's memory until they are garbage collected.
                for future in [*self.futures.values(), *self.load_futures.values()]:
                    if future is not None:
                        with contextlib.suppress(Exception):
                            future.release()
                self.futures.clear()
                self.load_futures.clear()
            self.session.close()
            self.session = None

    def _compute_parameters(self) -> None:
        """Evaluate the computed defaults once, before planning: the cache keys of the tasks
        that read them depend on their values (a new date is a new key). The cluster stays open
        for the run; `execute` closes it if anything here fails."""
        session = self._open_session()
        wait_for_any_worker(session.client)
        future = session.client.submit(
            evaluate_parameters,
            {
                "setup": self.spec.parameters_setup,
                "source": self.spec.parameters_source,
                "names": self.computed_parameters,
                "notebook_dir": str(self.notebook_dir),
                "module_dir": str(self.module_dir),
            },
            key=f"kiln-parameters-{self.run_id}",
            pure=False,
        )
        self.parameters.update(future.result())  # raises the worker's ValueError as is

    def _connect_and_place(self, names: list[str]) -> dict[str, Placement]:
        session = self._open_session()
        client = session.client
        wait_for_any_worker(client)
        capacities = worker_capacities(client)
        placements = {
            name: placement_for(name, self.spec.task(name).resources, capacities) for name in names
        }
        client.subscribe_topic(self.event_topic, self._on_worker_event)
        return placements

    def _cancel_outstanding(self) -> None:
        if self.session is None:
            return
        futures = [f for f in self.futures.values() if f is not None]
        if futures:
            with contextlib.suppress(Exception):
                self.session.client.cancel(futures)

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
        assert self.state is not None
        result = self.state.result(
            parameters=self.parameters, dashboard=dashboard, store_url=self.store.url
        )
        baseline = self.baseline() if callable(self.baseline) else self.baseline
        judge_run(result, self.spec.raw, baseline)  # checks and drift: may fail the run
        path = self.output_notebook or (
            self.notebook_dir / ".kiln" / "runs" / self.run_id / self.notebook_path.name
        )
        if self.notebook_snapshot is not None:
            notebook_output.write_output_notebook(
                self.notebook_snapshot,
                path,
                spec=self.spec.raw,
                result=result,
                cells_by_task=self.state.cells_by_task(),
                owned=True,  # the run's own snapshot, not used after this
            )
            self.notebook_snapshot = None
            result.output_notebook = str(path)
        self.listener(
            RunEvent(
                run_id=self.run_id,
                status=RunStatus(result.status),
                dashboard=dashboard,
                output_notebook=result.output_notebook,
                **monitoring_fields(result),
            )
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
    on_event: Listener | None = None,
    listeners: Iterable[Listener] = (),
    run_id: str | None = None,
    memory_limit: int | str | None = None,
    working_dir: str | Path | None = None,
    cancel: threading.Event | None = None,
    notebook_json: Mapping[str, Any] | None = None,
    cell_events: bool = False,
    cell_timeout: float | None = None,
    baseline: Mapping[str, Any] | Callable[[], Mapping[str, Any] | None] | None = None,
    cluster_start: LocalClusterStart | None = None,
) -> RunResult:
    """Run a compiled pipeline spec on Dask and write its output notebook.

    `params` are typed values (see coerce_parameters for CLI strings). With no `scheduler`
    (and no DASK_SCHEDULER_ADDRESS / `scheduler-address` config) a LocalCluster of `workers`
    processes (`memory_limit` each, Dask's "auto" by default) is started and closed afterwards;
    an existing cluster is never closed. `use_cache=False` neither reads nor writes the cache.
    `force` reruns the named tasks; their downstream tasks rerun only if the forced task's
    outputs changed. Raises ResourceUnavailable (before anything runs) when a task asks for
    resources no worker has, ValueError for unknown parameters or forced task names.
    Every event goes to `on_event` and `listeners` (a listener that raises is counted and
    dropped, never breaks the run). `working_dir` (default: the notebook's folder) is where
    tasks run and relative paths, the default artifact store and output notebook live.
    Recording lineage is a listener's job: see compiler.ops.run. Setting `cancel` (from any
    thread) stops the run: attempts in flight are cancelled on the cluster, unfinished tasks end
    `cancelled` and so does the run.
    Recording lineage is a listener's job: see compiler.ops.run. `notebook_json` (nbformat-4
    JSON): the notebook `spec` was compiled from, when that is not the file at
    `notebook_path` (the output notebook is built from it, cell for cell). `cell_events`:
    listeners also get a CellEvent as each cell starts and ends (a scheduler message each);
    `cell_timeout`: a limit in seconds on each cell (papermill's --execution-timeout).
    `baseline` ({run_id, metrics, profiles}, see lineage.metrics.load_baseline) is what the
    spec's relative checks and input drift are judged against (none: relative checks are not
    judged, drift not scored). `cluster_start`: a run's own local cluster already being started
    (cluster.LocalClusterStart), used instead of starting one; closed here if no task runs.
    """
    typed = PipelineSpec.from_dict(spec)
    notebook = Path(notebook_path).resolve()
    workdir = Path(working_dir).resolve() if working_dir else None
    names = typed.task_names
    for name in names:  # a spec not from this compiler (a bundle's file) is checked here too
        check_task_name(name)
    unknown = sorted(set(force) - set(names))
    if unknown:
        raise ValueError(
            f"--force names unknown task(s) {', '.join(unknown)} (tasks: {', '.join(names)})"
        )
    parameters = resolve_parameters(spec, params)
    computed = [name for name in typed.computed_parameters if name not in (params or {})]
    store = (
        ArtifactStore(store_url)
        if store_url
        else ArtifactStore.default_for(workdir or notebook.parent)
    )
    if use_cache:
        store.check_writable()  # before any compute: it failed only after all of it
    fanout = Fanout([*([on_event] if on_event else []), *listeners])
    driver = Driver(
        typed,
        notebook_path=notebook,
        parameters=parameters,
        computed_parameters=computed,
        scheduler=scheduler,
        workers=workers,
        memory_limit=memory_limit,
        use_cache=use_cache,
        force=set(force),
        store=store,
        output_notebook=Path(output_notebook) if output_notebook else None,
        listener=fanout,
        run_id=run_id or new_run_id(),
        working_dir=workdir,
        cancel=cancel,
        notebook_json=notebook_json,
        cell_events=cell_events,
        cell_timeout=cell_timeout,
        baseline=baseline,
        cluster_start=cluster_start,
    )
    return driver.execute()
