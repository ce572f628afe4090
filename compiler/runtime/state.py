"""The run's decisions as a pure state machine: an event in, instructions out.

Modelled on Dask's worker state machine: `RunState.handle(event)` never talks to Dask, a
store or a clock. The driver (driver.py) turns what happened on the cluster into events
(`Started`, `AttemptRunning`, `AttemptSucceeded`, `AttemptFailed`, `Tick`, `MemoryPlacement`)
and carries out the instructions it gets back (`Submit`, `Cancel`, `KillWorker`,
`FindMoreMemory`, `StoreManifest`, `Release`, `Emit`). Retries with backoff, memory
escalation, hard timeouts, cache hits and upstream failures are therefore unit-tested without a
cluster (tests/test_runtime_state.py); the cluster tests check the driver does what it is told.

Time is an argument (`now`, monotonic seconds), as in the scheduler's `tick(now)`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.model.clock import iso_now
from compiler.model.costs import add_costs, attempt_cost
from compiler.model.events import CellEvent, RunEvent, TaskEvent
from compiler.model.spec import PipelineSpec, TaskSpec
from compiler.model.statuses import (
    CACHED,
    CANCELLED,
    DONE,
    FAILED,
    RETRYING,
    RUNNING,
    SUCCEEDED_STATES,
    UPSTREAM_FAILED,
    WAITING,
    RunStatus,
    TaskStatus,
)
from compiler.model.units import format_bytes
from compiler.runtime.plan import RunPlan
from compiler.runtime.results import RunResult, TaskResult

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
MAX_MEMORY_RETRIES = 2
HARD_TIMEOUT_GRACE_S = 3.0
MEMORY_REASONS = ("memory", "worker_died")
# A task rerun because a value it received changed (state.py `_rerun`) this many times fails
# instead: each rerun follows a change the run saw, so more means the changes do not settle.
MAX_RERUNS = 4
FINAL_STATES = (DONE, CACHED, FAILED, UPSTREAM_FAILED, CANCELLED)


def backoff_delay(retry_number: int) -> float:
    """Seconds to wait before retry number `retry_number` (0-based): 0.5 s, 1 s, 2 s, ... 30 s."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**retry_number))


def hard_timeout_deadline(running_since: float, timeout: float) -> float:
    """When to stop waiting for a task the worker could not interrupt (blocked in C code such
    as time.sleep or a socket read): the timeout plus a grace period."""
    return running_since + timeout + max(HARD_TIMEOUT_GRACE_S, 0.1 * timeout)


def attempt_key(task: str, cache_key: str, run_id: str, attempt: int) -> str:
    """The Dask key of one attempt: readable in the dashboard, unique per run and attempt."""
    key = f"{task}-{cache_key[:8]}-{run_id[:8]}"
    return key if attempt == 1 else f"{key}-{attempt}"


# -- events in ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    now: float


@dataclass(frozen=True)
class AttemptRunning:
    task: str
    key: str
    worker: str | None
    now: float


@dataclass(frozen=True)
class AttemptSucceeded:
    task: str
    key: str
    record: Mapping[str, Any]  # what the worker reported: cells, outputs, duration, memory
    now: float


@dataclass(frozen=True)
class AttemptFailed:
    task: str
    key: str
    error: Mapping[str, Any]  # cell_index, cell_id, line, ename, evalue, traceback, reason
    record: Mapping[str, Any] | None
    now: float


@dataclass(frozen=True)
class MemoryPlacement:
    """The driver's answer to FindMoreMemory: a placement with more memory, or None."""

    task: str
    placement: Any | None  # cluster.Placement
    memory: float | None  # bytes the new placement asks for
    now: float


@dataclass(frozen=True)
class CellProgress:
    """A cell of the current attempt started or finished (only for runs with cell events)."""

    task: str
    key: str
    started: bool
    cell: Mapping[str, Any]
    now: float


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class CancelRun:
    """The user cancelled the run (the server's Cancel): stop everything still going."""

    now: float


# -- instructions out -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Submit:
    task: str
    key: str
    attempt: int


@dataclass(frozen=True)
class Cancel:
    task: str


@dataclass(frozen=True)
class KillWorker:
    worker: str


@dataclass(frozen=True)
class FindMoreMemory:
    task: str
    placement: Any  # the placement that ran out of memory
    memory_limit: int | None  # the worker's limit when it did, if known


@dataclass(frozen=True)
class StoreManifest:
    task: str
    cache_key: str
    manifest: Mapping[str, Any]
    # Outputs still being written by the worker at `written_by` (store_writes.py): that worker
    # writes the manifest once they are on disk.
    pending_digests: tuple[str, ...] = ()
    written_by: str | None = None


@dataclass(frozen=True)
class Release:
    """Nothing will read this task's values any more: drop its futures so Dask frees them."""

    task: str


@dataclass(frozen=True)
class Emit:
    event: RunEvent | TaskEvent | CellEvent


Instruction = Submit | Cancel | KillWorker | FindMoreMemory | StoreManifest | Release | Emit


@dataclass
class TaskState:
    spec: TaskSpec
    result: TaskResult
    hit_manifest: dict[str, Any] | None
    previous_manifest: dict[str, Any] | None
    placement: Any
    # Tasks it waits for: the spec's upstream, and a task that re-exported a value it reads.
    waiting_on: set[str]
    # name -> the task whose value it receives: the spec's inputs until a task re-exports one
    # (it changed the value in place without the compiler knowing, see `_reexport`).
    sources: dict[str, str]
    consumers_left: int = 0
    blocked: bool = False  # some upstream task failed
    changed: bool = False  # ran and produced outputs other than its previous cache entry
    retries_used: int = 0
    memory_retries: int = 0
    current_key: str | None = None
    running_on: str | None = None
    running_since: float | None = None  # monotonic time the current attempt started running
    cells: list[dict[str, Any]] = field(default_factory=list)
    pending_failure: tuple[dict[str, Any], dict[str, Any]] | None = None  # awaiting placement
    attempt_sources: dict[str, str] = field(default_factory=dict)  # sources of this attempt
    attempt_from_store: frozenset[str] = frozenset()  # producers it loads from the store
    ran_sources: dict[str, str] = field(default_factory=dict)  # sources of its result
    arrival: dict[str, str] = field(default_factory=dict)  # input digests as they arrived
    fresh: bool = False  # rerun: its inputs come from the store, not from shared memory
    rerun_after: str | None = None  # the attempt in flight is void: why it runs again after
    reruns: int = 0


class RunState:
    """Every decision of one run. Construct from a plan, then feed events to `handle`."""

    def __init__(
        self,
        spec: PipelineSpec,
        plan: RunPlan,
        *,
        run_id: str,
        use_cache: bool,
        placements: Mapping[str, Any] | None = None,
        cell_timeout: float | None = None,
    ):
        self.spec = spec
        # papermill's --execution-timeout: a limit on each cell, from its CellProgress start.
        self.cell_timeout = cell_timeout
        self.run_id = run_id
        self.use_cache = use_cache
        self.started = iso_now()
        self.tasks: dict[str, TaskState] = {}
        self.downstream: dict[str, list[str]] = {t.name: [] for t in spec.tasks}
        for task in spec.tasks:
            planned = plan.tasks[task.name]
            self.tasks[task.name] = TaskState(
                spec=task,
                result=TaskResult(
                    name=task.name,
                    version=task.version,
                    cache_key=planned.cache_key,
                    resources=dict(task.resources),
                    cache_note=planned.cache_note,
                ),
                hit_manifest=planned.hit_manifest,
                previous_manifest=planned.previous_manifest,
                placement=(placements or {}).get(task.name),
                waiting_on=set(task.upstream),
                sources=dict(task.inputs),
            )
            for up in task.upstream:
                self.downstream[up].append(task.name)
        for task in spec.tasks:
            for producer in set(task.inputs.values()):
                self.tasks[producer].consumers_left += 1
        self.unfinished = len(self.tasks)
        self.retry_at: dict[str, float] = {}  # task -> when its next attempt is due
        self.deadlines: dict[str, float] = {}  # running task -> when to stop waiting for it
        self._ready: deque[TaskState] = deque()
        # Tasks with a submitted attempt and no outcome: kept as a set, since the driver asks
        # after every event (a scan of all tasks per event is quadratic in the run's size).
        self._in_flight: dict[str, None] = {}
        self._out: list[Instruction] = []
        self.cancelled = False
        # producer -> names whose in-memory value a task changed in place: a worker that
        # shares the object hands the changed one on, so readers get them from the store.
        self.tainted: dict[str, set[str]] = {}
        self.released: set[str] = set()  # tasks whose futures the driver dropped
        # (task, name) -> (the producer it had, readers switched to the task's re-export)
        self.switched: dict[tuple[str, str], tuple[str, list[str]]] = {}

    # -- the one entry point ---------------------------------------------------------------------
    def handle(self, event: Any) -> list[Instruction]:
        self._out = []
        if isinstance(event, Started):
            for st in self.tasks.values():
                self._emit_task(st, WAITING)
            self._ready.extend(st for st in self.tasks.values() if not st.waiting_on)
        elif isinstance(event, AttemptRunning):
            self._running(event)
        elif isinstance(event, AttemptSucceeded):
            succeeded = self._current(event.task, event.key)
            if succeeded is not None:
                self._succeeded(succeeded, event.record)
        elif isinstance(event, AttemptFailed):
            failed = self._current(event.task, event.key)
            if failed is not None:
                record = dict(event.record or {})
                self._attempt_failed(failed, dict(event.error), record, event.now)
        elif isinstance(event, MemoryPlacement):
            self._memory_answer(event)
        elif isinstance(event, CellProgress):
            self._cell_progress(event)
        elif isinstance(event, CancelRun):
            self._cancel_run()
            return self._out
        self._tick(event.now)
        self._resolve_ready()
        return self._out

    @property
    def finished(self) -> bool:
        return self.unfinished == 0

    def next_due(self) -> float | None:
        """The earliest time at which `Tick` has something to do, or None."""
        due = [*self.retry_at.values(), *self.deadlines.values()]
        return min(due) if due else None

    def in_flight(self) -> list[str]:
        """Tasks with an attempt submitted and no outcome yet."""
        return list(self._in_flight)

    def any_in_flight(self) -> bool:
        return bool(self._in_flight)

    def current_key(self, task: str) -> str | None:
        return self.tasks[task].current_key

    def producers_of(self, task: str) -> dict[str, str]:
        """name -> the task whose value the current attempt receives."""
        st = self.tasks[task]
        return dict(st.attempt_sources or st.sources)

    def expected_digests(self, task: str) -> dict[str, str]:
        """name -> content digest of the value the current attempt receives, where known."""
        found = {}
        for name, producer in self.producers_of(task).items():
            digest = self._content_digest(producer, name)
            if digest:
                found[name] = digest
        return found

    def from_store(self, task: str) -> frozenset[str]:
        """Producers whose values the current attempt loads from the store afresh (their
        in-memory values may have been changed in place by another task)."""
        return self.tasks[task].attempt_from_store

    def cached_outputs(self, task: str) -> dict[str, str]:
        """name -> artifact digest of a task served from the cache (the driver loads them)."""
        return {n: info["digest"] for n, info in self.tasks[task].result.outputs.items()}

    def placement(self, task: str) -> Any:
        return self.tasks[task].placement

    def cells_by_task(self) -> dict[str, list[dict[str, Any]]]:
        return {name: st.cells for name, st in self.tasks.items()}

    def result(
        self,
        *,
        parameters: Mapping[str, Any],
        dashboard: str | None,
        store_url: str | None,
    ) -> RunResult:
        results = [self.tasks[t.name].result for t in self.spec.tasks]
        ok = all(r.status in SUCCEEDED_STATES for r in results)
        status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
        return RunResult(
            run_id=self.run_id,
            status=RunStatus.CANCELLED if self.cancelled else status,
            pipeline=self.spec.name,
            version=self.spec.version,
            started=self.started,
            finished=iso_now(),
            parameters=dict(parameters),
            tasks=results,
            dashboard=dashboard,
            store_url=store_url,
        )

    # -- what happened -----------------------------------------------------------------------------
    def _current(self, task: str, key: str) -> TaskState | None:
        """The task's state if `key` is its current attempt: late reports are ignored."""
        st = self.tasks.get(task)
        if st is None or st.current_key is None or st.current_key != key:
            return None
        return st

    def _running(self, event: AttemptRunning) -> None:
        st = self._current(event.task, event.key)
        if st is None:
            return
        if st.running_on is not None and event.worker != st.running_on:
            self._worker_lost(st)
        st.running_on = event.worker
        st.running_since = event.now
        if st.spec.timeout:
            self.deadlines[st.spec.name] = hard_timeout_deadline(event.now, st.spec.timeout)
        st.result.worker = event.worker
        self._emit_task(st, RUNNING, worker=event.worker)

    def _cell_progress(self, event: CellProgress) -> None:
        st = self._current(event.task, event.key)
        if st is None:
            return
        name = st.spec.name
        if self.cell_timeout and event.started:
            self.deadlines[name] = hard_timeout_deadline(event.now, self.cell_timeout)
        elif self.cell_timeout:  # the task's own timeout (if any) counts again
            self.deadlines.pop(name, None)
            if st.spec.timeout and st.running_since is not None:
                self.deadlines[name] = hard_timeout_deadline(st.running_since, st.spec.timeout)
        status = "running" if event.started else "finished"
        self._out.append(Emit(CellEvent(self.run_id, name, status, dict(event.cell))))

    def _worker_lost(self, st: TaskState) -> None:
        """The same attempt started again on another worker: Dask reschedules a task whose
        worker died (up to `allowed-failures` times) without telling the client. Lineage
        shows it as a lost attempt on that worker."""
        lost = st.running_on
        message = f"the worker {lost} died while running the task"
        entry = self._attempt_entry(st, {"worker": lost}, FAILED)
        entry.update(reason="worker_died", error=message, retry="rerun by Dask on another worker")
        st.result.attempt_log.append(entry)
        error = {"ename": "KilledWorker", "evalue": message, "reason": "worker_died"}
        self._emit_task(st, RETRYING, reason=entry["retry"], error=error, worker=lost)
        st.result.attempts += 1

    def _tick(self, now: float) -> None:
        for name, due in list(self.retry_at.items()):
            if due <= now:
                del self.retry_at[name]
                self._submit(self.tasks[name])
        for name, deadline in list(self.deadlines.items()):
            st = self.tasks[name]
            if now < deadline or st.current_key is None:
                continue
            del self.deadlines[name]
            worker = st.running_on
            self._out.append(Cancel(name))
            if worker:
                # Its thread cannot be stopped: the driver ends the worker process (its nanny
                # starts a new one). Dask's graceful restart would wait for the blocked thread.
                self._out.append(KillWorker(worker))
            limit = self.cell_timeout or st.spec.timeout or 0.0
            error: dict[str, Any] = {
                "cell_index": None,
                "cell_id": None,
                "line": None,
                "ename": "TaskTimeout",
                "evalue": (
                    f"task exceeded its timeout of {limit:g}s and did not stop "
                    "(blocked in code that cannot be interrupted); its worker process "
                    f"{worker} was ended"
                ),
                "traceback": [],
                "reason": "timeout",
                "where": "worker",
            }
            self._attempt_failed(st, error, {"worker": worker}, now)

    def _cancel_run(self) -> None:
        """Cancel every attempt in flight and end each unfinished task `cancelled`; nothing is
        submitted after this (the run is finished)."""
        self.cancelled = True
        for name, st in self.tasks.items():
            if st.result.status in (DONE, CACHED, FAILED, UPSTREAM_FAILED, CANCELLED):
                continue
            if st.current_key is not None:
                self._out.append(Cancel(name))
            self._in_flight.pop(name, None)
            st.current_key = None
            st.pending_failure = None
            st.result.status = CANCELLED
            st.result.error = None
            self._emit_task(st, CANCELLED)
        self.unfinished = 0
        self.retry_at.clear()
        self.deadlines.clear()
        self._ready.clear()

    def _end_attempt(self, st: TaskState) -> None:
        self._in_flight.pop(st.spec.name, None)
        st.current_key = None
        st.running_on = None
        self.deadlines.pop(st.spec.name, None)

    def _succeeded(self, st: TaskState, record: Mapping[str, Any]) -> None:
        stale = st.rerun_after or self._received_changed_value(st, record)
        if stale is not None:
            # It may have read a value another task changed in place (a worker shares the
            # object), or what it read changed since: run it again, its inputs from the store.
            self._void_attempt(st, record, stale)
            return
        self._end_attempt(st)
        # Its values are new objects: whatever changed the old ones in place is behind it.
        self.tainted.pop(st.spec.name, None)
        self.released.discard(st.spec.name)
        r = st.result
        r.duration = record.get("duration")
        r.peak_memory = record.get("peak_memory")
        r.worker = record.get("worker")
        r.outputs = dict(record.get("outputs") or {})
        r.error = None
        st.cells = list(record.get("cells") or [])
        r.metrics = dict(record.get("metrics") or {})
        r.metric_warnings = list(record.get("metric_warnings") or [])
        r.profiles = dict(record.get("profiles") or {})
        st.ran_sources = dict(st.attempt_sources)
        st.arrival = dict(record.get("input_digests") or {})
        # A value the store could not take (unpicklable, disk full) still flows in memory; the
        # task says so instead of being silently uncached.
        store_errors = "; ".join(
            f"{n}: {info['store_error']}"
            for n, info in r.outputs.items()
            if info.get("store_error")
        )
        entry = self._attempt_entry(st, record, DONE)
        if store_errors:
            entry["cache_error"] = store_errors
        r.attempt_log.append(entry)
        r.cost = add_costs(e.get("cost") for e in r.attempt_log)
        digests = {n: info.get("digest") for n, info in r.outputs.items()}
        previous = (st.previous_manifest or {}).get("outputs") or {}
        st.changed = (
            not self.use_cache
            or st.previous_manifest is None
            or digests != {n: info.get("digest") for n, info in previous.items()}
        )
        r.status = DONE
        r.warnings = []
        for change in record.get("changed_inputs") or []:
            self._reexport(st, change, executed=True)
        if r.warnings:
            entry["warnings"] = list(r.warnings)
        if self.use_cache and all(digests.values()):
            pending = tuple(record.get("deferred_writes") or ())
            self._out.append(
                StoreManifest(
                    st.spec.name,
                    r.cache_key,
                    self._manifest(st, record),
                    pending_digests=pending,
                    written_by=record.get("worker") if pending else None,
                )
            )
        self._emit_task(st, DONE, cache_error=store_errors or None)
        self._finalize(st)

    # -- values changed in place without the compiler knowing ---------------------------------
    def _reexport(self, st: TaskState, change: Mapping[str, Any], *, executed: bool) -> None:
        """`st` changed `name`, which it received, in place and the compiler did not make it an
        output. As in the notebook, later cells see the change: readers after it in notebook
        order receive the value from `st` (its worker handed the changed value on as an
        output), those that already ran with the old one run again (and what read theirs);
        readers before it keep the value the notebook gives them. The run warns, with the fix.
        """
        name = str(change["name"])
        producer = st.ran_sources.get(name) or st.sources.get(name)
        if producer is None:
            return
        if executed:
            self.tainted.setdefault(producer, set()).add(name)
        if name not in st.result.outputs:
            return  # rebound after the change: the compiler saw that binding
        position = _position(st.spec)
        replanned: list[str] = []
        rerun: list[str] = []
        for t in self.tasks.values():
            if t is st or t.sources.get(name) != producer:
                continue
            if _position(t.spec) > position:
                self._switch_source(t, name, st.spec.name)
                self.switched.setdefault((st.spec.name, name), (producer, []))[1].append(
                    t.spec.name
                )
                status = t.result.status
                if status in FINAL_STATES and status != CANCELLED:
                    same = t.ran_sources.get(name) == st.spec.name and not st.changed
                    if status in (DONE, CACHED) and same:
                        continue
                    rerun.append(t.spec.name)
                    self._rerun(t, f"reran: {st.spec.name!r} changed {name!r} in place")
                elif t.current_key is not None:
                    rerun.append(t.spec.name)
                    self._rerun(t, f"reran: {st.spec.name!r} changed {name!r} in place")
                else:
                    replanned.append(t.spec.name)
            elif executed and self._may_have_read_changed(t, producer, name):
                rerun.append(t.spec.name)
                self._rerun(t, f"reran with {name!r} as {producer!r} made it")
        cell = change.get("cell_index")
        line = change.get("line")
        first = change.get("first_cell_index")
        where = f"cells {first}-{cell}" if first is not None else f"cell {cell}"
        where += f", line {line}" if line is not None else ""
        readers = sorted({*replanned, *rerun})
        handed = (
            f"; the run handed the changed value on to {', '.join(map(repr, readers))}"
            if readers
            else ""
        )
        st.result.warnings.append(
            {
                "code": "input-changed-in-place",
                "task": st.spec.name,
                "name": name,
                "producer": producer,
                "cell_index": cell,
                "cell_id": change.get("cell_id"),
                "line": line,
                "replanned": sorted(replanned),
                "rerun": sorted(rerun),
                "fix": f"{name} = {name}",
                "message": (
                    f"task {st.spec.name!r} changed {name!r} in place ({where}), which it "
                    f"received from {producer!r}, and the compiler did not see it{handed}. Add "
                    f"`{name} = {name}` after the change so the compiler makes {name!r} an "
                    f"output of {st.spec.name!r}"
                ),
            }
        )

    def _switch_source(self, t: TaskState, name: str, producer: str) -> None:
        old = t.sources[name]
        t.sources[name] = producer
        if t.spec.name not in self.downstream[producer]:
            self.downstream[producer].append(t.spec.name)
        if t.result.status in FINAL_STATES:
            return  # counted out of its producers already; a rerun counts it in again
        if old not in t.sources.values():
            self._consumer_done(old)
        if list(t.sources.values()).count(producer) == 1:
            self.tasks[producer].consumers_left += 1
        if self.tasks[producer].result.status not in FINAL_STATES:
            t.waiting_on.add(producer)

    def _content_digest(self, producer: str, name: str) -> str | None:
        info = self.tasks[producer].result.outputs.get(name) or {}
        return info.get("content_digest")

    def _may_have_read_changed(self, t: TaskState, producer: str, name: str) -> bool:
        """Whether `t`'s result may rest on `producer`'s `name` as another task changed it in
        memory: it ran (not from the cache or the store), and its arrival digest is not the
        producer's (or unknown)."""
        if t.result.cached or producer in t.attempt_from_store:
            return False
        if t.result.status not in (DONE, FAILED):
            return False  # in flight: checked when it reports; not yet run: from the store
        expected = self._content_digest(producer, name)
        return t.result.status == FAILED or not expected or t.arrival.get(name) != expected

    def _void_attempt(self, st: TaskState, record: Mapping[str, Any], reason: str) -> None:
        """An attempt whose result is not used; what it changed in place still counts (a
        worker may hand the changed object to the next reader, which reruns)."""
        self._end_attempt(st)
        for change in record.get("changed_inputs") or []:
            name = str(change.get("name"))
            producer = st.attempt_sources.get(name)
            if producer is None:
                continue
            self.tainted.setdefault(producer, set()).add(name)
            for t in self.tasks.values():
                if t is not st and t.ran_sources.get(name) == producer:
                    if self._may_have_read_changed(t, producer, name):
                        self._rerun(t, f"reran with {name!r} as {producer!r} made it")
        st.rerun_after = None
        entry = self._attempt_entry(st, dict(record), FAILED)
        entry["retry"] = reason
        st.result.attempt_log.append(entry)
        self._rerun(st, reason)

    def _received_changed_value(self, st: TaskState, record: Mapping[str, Any]) -> str | None:
        """Why this attempt may have read a value another task changed in place (it shared the
        object on a worker), or None."""
        arrival = record.get("input_digests") or {}
        for name, producer in st.attempt_sources.items():
            if name not in self.tainted.get(producer, ()):
                continue
            if producer in st.attempt_from_store:
                continue
            expected = self._content_digest(producer, name)
            if expected is None or arrival.get(name) != expected:
                return f"reran: it may have read {name!r} changed in place by another task"
        return None

    def _rerun(self, st: TaskState, reason: str, *, cascade: bool = True) -> None:
        """Run a task again (its result, if any, is void): it waits for what it reads, takes
        its inputs from the store, and with `cascade` the tasks that read its outputs run
        again too."""
        name = st.spec.name
        was_final = st.result.status in FINAL_STATES
        if st.current_key is not None and st.reruns < MAX_RERUNS:
            # Let the attempt finish rather than cancel it: what it changes in place is then
            # noticed (a cancelled attempt's report would be ignored); it runs again after.
            st.rerun_after = reason
            return
        if st.reruns >= MAX_RERUNS:
            if not was_final or st.result.status in (DONE, CACHED):
                if not was_final:
                    if st.current_key is not None:
                        self._out.append(Cancel(name))
                    self._end_attempt(st)
                    self.retry_at.pop(name, None)
                else:
                    self.unfinished += 1
                    for producer in set(st.sources.values()):
                        self.tasks[producer].consumers_left += 1
                st.result.status = WAITING
                self._retry_or_fail(st, self._unsettled(st), {}, 0.0, retry=False)
            return
        st.reruns += 1
        if st.current_key is not None:
            self._out.append(Cancel(name))
        self._end_attempt(st)
        self.retry_at.pop(name, None)
        st.pending_failure = None
        if was_final:
            self.unfinished += 1
            for producer in set(st.sources.values()):
                self.tasks[producer].consumers_left += 1
        # What it re-exported last time may not be so again: its readers go back to the value's
        # producer, and take it from there again if this attempt re-exports it too.
        reverted: set[str] = set()
        for key in [k for k in self.switched if k[0] == name]:
            producer, readers = self.switched.pop(key)
            for reader in readers:
                if self.tasks[reader].sources.get(key[1]) == name:
                    self._switch_source(self.tasks[reader], key[1], producer)
                    reverted.add(reader)
        r = st.result
        r.status = WAITING
        r.cached = False
        r.error = None
        r.warnings = []
        st.hit_manifest = None  # its stored entry may hold the old value: computed again
        st.retries_used = 0
        st.fresh = True
        st.waiting_on = {
            u for u in self._upstream_of(st) if self.tasks[u].result.status not in FINAL_STATES
        }
        st.blocked = any(
            self.tasks[u].result.status in (FAILED, UPSTREAM_FAILED) for u in self._upstream_of(st)
        )
        self._emit_task(st, RETRYING, reason=reason)
        if cascade:
            for child in list(self.downstream[name]):
                cst = self.tasks[child]
                if name not in self._upstream_of(cst) and child not in reverted:
                    continue
                if cst.result.status in FINAL_STATES or cst.current_key is not None:
                    if cst.result.status != CANCELLED:
                        self._rerun(cst, f"reran: {name!r}, which it reads, runs again")
                elif name in self._upstream_of(cst):
                    cst.waiting_on.add(name)
        if not st.waiting_on:
            self._ready.append(st)

    def _unsettled(self, st: TaskState) -> dict[str, Any]:
        return {
            "cell_index": None,
            "cell_id": None,
            "line": None,
            "ename": "InputChangedInPlace",
            "evalue": (
                f"task {st.spec.name!r} was rerun {MAX_RERUNS} times because values it reads "
                "kept changing in place in other tasks; see the run's warnings for the tasks "
                "and the fix"
            ),
            "traceback": [],
            "reason": "input-changed",
        }

    def _upstream_of(self, st: TaskState) -> set[str]:
        return {*st.spec.upstream, *st.sources.values()}

    def _attempt_failed(
        self, st: TaskState, error: dict[str, Any], record: dict[str, Any], now: float
    ) -> None:
        if st.rerun_after is not None:  # void anyway: what it read changed since it started
            self._void_attempt(st, record, st.rerun_after)
            return
        self._end_attempt(st)
        r = st.result
        entry = self._attempt_entry(st, record, FAILED)
        entry["error"] = f"{error.get('ename')}: {error.get('evalue')}"
        entry["reason"] = error.get("reason")
        r.attempt_log.append(entry)
        r.cost = add_costs(e.get("cost") for e in r.attempt_log)
        if record:
            r.worker = record.get("worker")
            r.duration = record.get("duration")
            r.peak_memory = record.get("peak_memory")
        if error.get("reason") in MEMORY_REASONS and st.memory_retries < MAX_MEMORY_RETRIES:
            # Ask the driver for a bigger worker; the answer (MemoryPlacement) decides.
            st.pending_failure = (error, record)
            self._out.append(FindMoreMemory(st.spec.name, st.placement, record.get("memory_limit")))
            return
        self._retry_or_fail(st, error, record, now)

    def _memory_answer(self, event: MemoryPlacement) -> None:
        st = self.tasks[event.task]
        if st.pending_failure is None:
            return
        error, record = st.pending_failure
        st.pending_failure = None
        if event.placement is not None:
            st.memory_retries += 1
            st.placement = event.placement
            reason = f"retried with more memory ({format_bytes(event.memory)})"
            st.result.attempt_log[-1]["retry"] = reason
            self._emit_task(st, RETRYING, reason=reason, error=error)
            self._submit(st)
            return
        self._retry_or_fail(st, error, record, event.now)

    def _retry_or_fail(
        self,
        st: TaskState,
        error: dict[str, Any],
        record: dict[str, Any],
        now: float,
        *,
        retry: bool = True,
    ) -> None:
        r = st.result
        if retry and st.retries_used < st.spec.retries:
            delay = backoff_delay(st.retries_used)
            st.retries_used += 1
            self.retry_at[st.spec.name] = now + delay
            reason = f"retried after {delay:g} s (retry {st.retries_used})"
            r.attempt_log[-1]["retry"] = reason
            self._emit_task(st, RETRYING, reason=reason, error=error)
            return
        r.error = {
            k: error.get(k)
            for k in ("cell_index", "cell_id", "line", "ename", "evalue", "traceback", "reason")
        }
        st.cells = list(record.get("cells") or [])
        r.status = FAILED
        self._emit_task(st, FAILED)
        self._finalize(st)

    # -- deciding ---------------------------------------------------------------------------------
    def _resolve_ready(self) -> None:
        # A work list, not recursion: a long chain of cache hits resolves in one pass.
        while self._ready:
            self._resolve(self._ready.popleft())

    def _resolve(self, st: TaskState) -> None:
        """All upstream tasks are final: skip, take from the cache, or submit."""
        if st.blocked:
            st.result.status = UPSTREAM_FAILED
            self._emit_task(st, UPSTREAM_FAILED)
            self._finalize(st)
            return
        if st.hit_manifest is not None:
            # Its entry was made while a value came from a task that re-exported it: wait for
            # that task, which says whether it does again (`_reexport`).
            wanted = dict(st.hit_manifest.get("sources") or {})
            pending = {
                p
                for n, p in wanted.items()
                if st.sources.get(n) != p
                and p in self.tasks
                and self.tasks[p].result.status not in FINAL_STATES
            }
            if pending:
                st.waiting_on |= pending
                for p in pending:
                    if st.spec.name not in self.downstream[p]:
                        self.downstream[p].append(st.spec.name)
                return
        upstream_changed = any(self.tasks[u].changed for u in self._upstream_of(st))
        # An entry made while a value came from another task (a re-export) serves only a run
        # that hands it from there too.
        same_sources = (
            st.hit_manifest is not None
            and dict(st.hit_manifest.get("sources") or st.spec.inputs) == st.sources
        )
        if st.hit_manifest is not None and not upstream_changed and same_sources:
            manifest = st.hit_manifest
            r = st.result
            r.cached = True
            r.duration = 0.0
            r.outputs = dict(manifest.get("outputs") or {})
            r.peak_memory = manifest.get("peak_memory")
            r.cost_saved = manifest.get("cost")  # what computing it again would have cost
            st.cells = list(manifest.get("cells") or [])
            r.metrics = dict(manifest.get("metrics") or {})
            r.profiles = dict(manifest.get("profiles") or {})
            st.ran_sources = dict(st.sources)
            r.status = CACHED
            r.warnings = []
            # The run that stored it found values it changed in place: re-exported again.
            for change in manifest.get("reexports") or []:
                self._reexport(st, change, executed=False)
            self._emit_task(st, CACHED)
            self._finalize(st)
            return
        # A value another task changed in place comes from the store (or its producer runs
        # again, when the store does not hold it).
        from_store: set[str] = set()
        for name, producer in st.sources.items():
            up = self.tasks[producer]
            stored = bool(up.result.outputs) and all(
                info.get("digest") for info in up.result.outputs.values()
            )
            tainted = name in self.tainted.get(producer, ())
            if stored and (tainted or st.fresh):
                from_store.add(producer)
            elif not stored and (tainted or producer in self.released):
                st.waiting_on.add(producer)
                if up.result.status in FINAL_STATES:
                    reason = f"reran: {st.spec.name!r} needs {name!r} as it made it"
                    self._rerun(up, reason, cascade=False)
        if st.waiting_on:
            return  # resolved again when those producers are done
        st.attempt_from_store = frozenset(from_store)
        st.fresh = False
        self._submit(st)

    def _submit(self, st: TaskState) -> None:
        st.attempt_sources = dict(st.sources)
        st.result.attempts += 1
        attempt = st.result.attempts
        key = attempt_key(st.spec.name, st.result.cache_key, self.run_id, attempt)
        st.current_key = key
        self._in_flight[st.spec.name] = None
        st.running_on = None
        self._out.append(Submit(st.spec.name, key, attempt))

    def _finalize(self, st: TaskState) -> None:
        """A task reached a final state: release what it held and unblock its dependents."""
        self.unfinished -= 1
        failed = st.result.status in (FAILED, UPSTREAM_FAILED)
        for producer in set(st.sources.values()):
            self._consumer_done(producer)
        if st.consumers_left <= 0:
            self._release(st.spec.name)
        name = st.spec.name
        for child in self.downstream[name]:
            cst = self.tasks[child]
            if name not in cst.waiting_on:
                continue
            cst.blocked = cst.blocked or failed
            cst.waiting_on.discard(name)
            if not cst.waiting_on and cst.result.status not in FINAL_STATES:
                self._ready.append(cst)

    def _consumer_done(self, producer: str) -> None:
        up = self.tasks[producer]
        up.consumers_left -= 1
        if up.consumers_left <= 0 and up.result.status in FINAL_STATES:
            self._release(producer)

    def _release(self, name: str) -> None:
        self.released.add(name)
        self._out.append(Release(name))

    # -- records ----------------------------------------------------------------------------------
    def _attempt_entry(
        self, st: TaskState, record: Mapping[str, Any] | None, status: TaskStatus
    ) -> dict[str, Any]:
        record = record or {}
        held = getattr(st.placement, "resources", None) or st.result.resources
        return {
            "attempt": st.result.attempts,
            "status": str(status),
            "worker": record.get("worker"),
            "duration": record.get("duration"),
            "peak_memory": record.get("peak_memory"),
            "memory_limit": record.get("memory_limit"),
            "resources": getattr(st.placement, "resources", None),
            # GPU-seconds count the GPUs this attempt was placed with (else the spec's).
            "cost": attempt_cost(record, held) if record else None,
            # seconds its input-change check took (digesting received values, digest.py)
            "check_seconds": record.get("check_seconds"),
        }

    def _manifest(self, st: TaskState, record: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "task": st.spec.name,
            "version": st.result.version,
            "cache_key": st.result.cache_key,
            "outputs": st.result.outputs,
            "cells": st.cells,
            "duration": record.get("duration"),
            "peak_memory": record.get("peak_memory"),
            "cost": st.result.cost,  # what a later cache hit saves
            "worker": record.get("worker"),
            "run_id": self.run_id,
            "created": iso_now(),
            "metrics": st.result.metrics,
            "metric_names": list(st.spec.metrics),
            "profiles": st.result.profiles,
            # Where each input came from, and values it changed in place without the
            # compiler knowing: a later run that serves it from the cache re-exports them.
            "sources": dict(st.ran_sources),
            "reexports": [
                {k: w[k] for k in ("name", "cell_index", "cell_id", "line")}
                for w in st.result.warnings
            ],
        }

    def _emit_task(
        self,
        st: TaskState,
        status: TaskStatus,
        *,
        worker: str | None = None,
        reason: str | None = None,
        error: Mapping[str, Any] | None = None,
        cache_error: str | None = None,
    ) -> None:
        r = st.result
        final = status in (DONE, FAILED, CACHED)
        self._out.append(
            Emit(
                TaskEvent(
                    run_id=self.run_id,
                    task=r.name,
                    status=status,
                    attempt=r.attempts,
                    duration=r.duration,
                    cache_key=r.cache_key,
                    version=r.version,
                    cached=r.cached,
                    worker=worker or r.worker,
                    resources=r.resources,
                    peak_memory=r.peak_memory,
                    outputs=r.outputs,
                    attempts=r.attempts if final else None,
                    attempt_log=list(r.attempt_log) if final else None,
                    error=error if error is not None else (r.error if status == FAILED else None),
                    reason=reason,
                    cache_error=cache_error,
                    cost=r.cost,
                    cost_saved=r.cost_saved,
                    warnings=list(r.warnings) if final and r.warnings else None,
                )
            )
        )


def _position(task: TaskSpec) -> int:
    """Where the task starts in the notebook (its first cell's index)."""
    return min((c.cell_index for c in task.code), default=0)
