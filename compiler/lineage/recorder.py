"""Recording one run into the lineage store, event by event, as the runtime emits them.

    with RunRecorder(store, spec, notebook_path, params, run_id) as recorder:
        result = run_pipeline(spec, ..., run_id=recorder.run_id, on_event=recorder)
        recorder.finish(result)

`start()` writes the pipeline, the run (status running) and one row per task (waiting) in one
transaction. After that, calling the recorder with an event only queues it: a writer thread
takes whatever has queued up and writes it in one transaction on its own connection, so the
run's event loop never waits for the database, and a burst of events (every task's `waiting`
at start, a wave of cache hits) costs one commit instead of hundreds. The writer also keeps
the run's heartbeat fresh while no event comes. `finish()` and `close()` wait for the queue.

A recorder never raises into the run: a failing write is logged once and counted in `errors`.
`record(event)` is the synchronous, raising form (tests, replays).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from compiler.lineage.metrics import load_baseline, monitoring_summary, record_monitoring
from compiler.lineage.openlineage import OpenLineageEmitter, emitter_from_env
from compiler.lineage.run_context import file_digest, git_state, run_environment
from compiler.lineage.schema import (
    artifacts,
    dataset_accesses,
    datasets,
    pipelines,
    runs,
    settings,
    task_inputs,
    task_outputs,
    task_runs,
)
from compiler.lineage.store import LineageStore, insert_ignoring_duplicates, is_transient
from compiler.model.clock import utcnow
from compiler.model.costs import add_costs, check_budget, money, parse_budget
from compiler.model.hashing import digest
from compiler.model.ids import new_run_id
from compiler.model.statuses import FINAL_STATES, TaskStatus

log = logging.getLogger(__name__)

T = TypeVar("T")
HEARTBEAT_S = 30.0
MAX_BATCH = 2000  # events per transaction
# Task statuses after which a task run no longer changes.
FINAL_TASK_STATUSES = FINAL_STATES | {TaskStatus.INTERRUPTED}
SUMMARY_KEYS = ("shape", "dtype", "dtypes", "columns", "len", "length", "ndim")
_STOP = object()


def spec_digest(spec: Mapping[str, Any]) -> str:
    return digest(spec)


def artifact_summary(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """shape / dtype / columns / len of an output, from what the runtime reported."""
    summary = dict(info.get("summary") or {})
    summary.update({k: info[k] for k in SUMMARY_KEYS if k in info})
    return summary or None


def error_message(error: Mapping[str, Any] | None) -> str | None:
    if not error:
        return None
    return f"{error.get('ename')}: {error.get('evalue')}"


@dataclass
class _RunState:
    """What the recorder knows of the run beyond the database. Copied before each transaction
    and put back if it rolls back, so a retried transaction starts from the same state."""

    status: str = "new"
    task_status: dict[str, str] = field(default_factory=dict)
    attempt_logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    produced: dict[str, dict[str, str | None]] = field(default_factory=dict)
    inputs_recorded: set[str] = field(default_factory=set)
    reads_recorded: set[str] = field(default_factory=set)
    pending_cache_keys: dict[str, str] = field(default_factory=dict)
    dataset_ids: dict[str, int] = field(default_factory=dict)

    def copy(self) -> _RunState:
        return _RunState(
            status=self.status,
            task_status=dict(self.task_status),
            attempt_logs={k: list(v) for k, v in self.attempt_logs.items()},
            produced=dict(self.produced),
            inputs_recorded=set(self.inputs_recorded),
            reads_recorded=set(self.reads_recorded),
            pending_cache_keys=dict(self.pending_cache_keys),
            dataset_ids=dict(self.dataset_ids),
        )


class RunRecorder:
    """Writes one run's lineage; call it with each runtime event (it is an `on_event`)."""

    def __init__(
        self,
        store: LineageStore,
        spec: Mapping[str, Any],
        notebook_path: str | Path,
        params: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        scheduler_address: str | None = None,
        *,
        store_url: str | None = None,
        rerun_of: str | None = None,
        openlineage: OpenLineageEmitter | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        mark_stale_runs: bool = True,
        working_dir: str | Path | None = None,
    ):
        self.store = store
        self.spec = spec
        self.notebook_path = Path(notebook_path).resolve()
        # Where the run's relative file paths point: the notebook's folder unless the run was
        # given another one (an exported bundle run with --workdir).
        self.notebook_dir = (
            Path(working_dir).resolve() if working_dir else self.notebook_path.parent
        )
        self.parameters = {**dict(spec.get("parameters") or {}), **dict(params or {})}
        self.run_id = run_id or new_run_id()
        self.scheduler_address = scheduler_address
        self.store_url = store_url or str(self.notebook_dir / ".kiln")
        self.rerun_of = rerun_of
        self.openlineage = openlineage if openlineage is not None else emitter_from_env()
        self.heartbeat_s = heartbeat_s
        self.mark_stale_runs = mark_stale_runs
        self.tasks: dict[str, Mapping[str, Any]] = {t["name"]: t for t in spec["tasks"]}
        self.task_run_ids: dict[str, int] = {}
        self.state = _RunState()
        self.errors: list[str] = []
        owner = dict(spec.get("owner") or {})
        self.owner: str | None = owner.get("name")
        self.team: str | None = owner.get("team")
        try:
            self.budget = parse_budget(spec.get("budget")) if spec.get("budget") else None
        except ValueError as exc:  # metadata edited by hand: say so, and run without it
            log.warning("kiln: the notebook's budget is ignored: %s", exc)
            self.budget = None
        self.budget_failed = False  # the run went over a budget whose policy is "fail"
        self.monitoring: dict[str, Any] | None = None  # metrics and verdicts, once judged
        self._lock = threading.RLock()  # one transaction at a time on the one connection
        self._connection: Connection | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._last_heartbeat = 0.0
        self._task_updates: dict[tuple[str, ...], Any] = {}

    @property
    def status(self) -> str:
        return self.state.status

    # -- transactions -----------------------------------------------------------------------
    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = self.store.engine.connect()
            self._connection.execution_options(kiln_write=True)
        return self._connection

    def _transaction(self, work: Callable[[Connection], T], attempts: int = 5) -> T:
        """Run `work` in one write transaction on the recorder's connection; retried after a
        deadlock, a lock timeout or a dropped connection."""
        with self._lock:
            before = self.state.copy()
            for attempt in range(attempts):
                connection = self._connect()
                try:
                    with connection.begin():
                        return work(connection)
                except DBAPIError as exc:
                    self.state = before.copy()
                    if exc.connection_invalidated:
                        self._drop_connection()
                    retry = exc.connection_invalidated or is_transient(exc)
                    if not retry or attempt == attempts - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)
                except BaseException:
                    self.state = before
                    raise
            raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                pass
            self._connection = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Record the pipeline, the run (status running) and its tasks (waiting)."""
        if self.state.status != "new":
            return
        if self.mark_stale_runs:
            from compiler.lineage.liveness import mark_interrupted

            mark_interrupted(self.store)
        git = git_state(self.notebook_path)
        now = utcnow()
        notebook = dict(self.spec.get("notebook") or {})
        notebook_digest = notebook.get("digest") or file_digest(self.notebook_path)
        pipeline_row = {
            "name": str(self.spec.get("name", "")),
            "version": str(self.spec.get("version", "")),
            "spec_digest": spec_digest(self.spec),
            "spec": dict(self.spec),
            "notebook_path": str(self.notebook_path),
            "notebook_digest": notebook_digest,
            "created_at": now,
            # Only when set: a run recorded with migrate=False into an older store still fits.
            **_present(owner=self.owner, team=self.team),
        }
        run_row = {
            "id": self.run_id,
            "status": "running",
            "parameters": self.parameters,
            "started_at": now,
            "heartbeat_at": now,
            "scheduler_address": self.scheduler_address,
            "notebook_path": str(self.notebook_path),
            "notebook_digest": notebook_digest,
            "git_commit": git.commit,
            "git_dirty": git.dirty,
            "store_url": self.store_url,
            "rerun_of": self.rerun_of,
            **_present(owner=self.owner, team=self.team),
            **run_environment(),
        }
        task_rows = [
            {
                "run_id": self.run_id,
                "task": name,
                "version": task.get("version"),
                "status": "waiting",
                "cached": False,
                "attempts": 0,
                "resources": dict(task.get("resources") or {}),
            }
            for name, task in self.tasks.items()
        ]

        def write(connection: Connection) -> dict[str, int]:
            insert_ignoring_duplicates(
                connection, pipelines, [pipeline_row], ("spec_digest", "notebook_path")
            )
            pipeline_id = connection.execute(
                select(pipelines.c.id).where(
                    pipelines.c.spec_digest == pipeline_row["spec_digest"],
                    pipelines.c.notebook_path == pipeline_row["notebook_path"],
                )
            ).scalar_one()
            connection.execute(runs.insert(), [{**run_row, "pipeline_id": pipeline_id}])
            if task_rows:
                connection.execute(task_runs.insert(), task_rows)
            query = select(task_runs.c.task, task_runs.c.id).where(
                task_runs.c.run_id == self.run_id
            )
            return {task: task_run_id for task, task_run_id in connection.execute(query)}

        self.task_run_ids = self._transaction(write)
        self.state.task_status = dict.fromkeys(self.tasks, "waiting")
        self.state.status = "running"
        self._last_heartbeat = time.monotonic()
        self._writer = threading.Thread(
            target=self._write_loop, name=f"kiln-lineage-{self.run_id}", daemon=True
        )
        self._writer.start()
        if self.openlineage is not None:
            self.openlineage.run_started(self._ol_run())

    def flush(self) -> None:
        """Wait until every queued event is written (or failed to be)."""
        if self._writer is not None and self._writer.is_alive():
            self._queue.join()

    def finish(self, result: Any) -> None:
        """Reconcile with the runtime's RunResult (or its to_dict()) and close the run."""
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        self.flush()
        self._guard(self._finish, data)

    def fail(self, error: BaseException | str, status: str = "failed") -> None:
        """The run ended without a result (it could not start, or it raised)."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.flush()
        self._guard(self._end_run, status, message, None)

    def close(self) -> None:
        """Write what is queued and stop; a run never finished or failed is recorded failed."""
        self.flush()
        if self.state.status == "running":
            self.fail("the run ended without reporting a result")
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(timeout=30)
            self._writer = None
        with self._lock:
            self._drop_connection()
        if self.openlineage is not None:
            self.openlineage.close()

    def __enter__(self) -> RunRecorder:
        self._guard(self.start)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self.state.status == "running":
            interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
            self.fail(exc, "interrupted" if interrupted else "failed")
        self.close()

    # -- events ---------------------------------------------------------------------------------
    def __call__(self, event: Mapping[str, Any]) -> None:
        """Queue an event for the writer thread (the runtime's `on_event`)."""
        if self.state.status == "new":
            self._guard(self.start)
        if self._writer is None:
            self._guard(self.record, event)  # started without a writer: write it now
            return
        self._queue.put(event)

    def record(self, event: Mapping[str, Any]) -> None:
        """Write one event now (raises on database errors; `__call__` does not)."""
        if self.state.status == "new":
            self.start()
        self._write_batch([event])

    def _guard(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # recording must never break the run it records
            if not self.errors:
                log.warning("kiln: lineage not recorded for run %s: %s", self.run_id, exc)
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.heartbeat_s if self.heartbeat_s > 0 else None)
            except queue.Empty:
                self._guard(self._transaction, self._beat)
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not _STOP]
            if events:
                self._guard(self._write_batch, events)
            for _ in batch:
                self._queue.task_done()
            if len(events) < len(batch):
                return

    def _write_batch(self, events: list[Mapping[str, Any]]) -> None:
        mine = [e for e in events if e.get("run_id") in (None, self.run_id)]

        def write(connection: Connection) -> None:
            for event in mine:
                self._apply(connection, event)
            self._flush_cache_keys(connection)
            if self.heartbeat_s > 0 and time.monotonic() - self._last_heartbeat > self.heartbeat_s:
                self._beat(connection)

        before = self.state.status
        self._transaction(write)
        if self.openlineage is not None:
            for event in mine:
                self._send_openlineage(event)
        self._committed(before)

    def _beat(self, connection: Connection) -> None:
        connection.execute(
            update(runs)
            .where(runs.c.id == self.run_id, runs.c.status == "running")
            .values(heartbeat_at=utcnow())
        )
        self._last_heartbeat = time.monotonic()

    def _apply(self, connection: Connection, event: Mapping[str, Any]) -> None:
        if event.get("type") == "run":
            status = event.get("status")
            if status == "started":
                values = {"dashboard": event.get("dashboard"), "heartbeat_at": utcnow()}
                if event.get("scheduler_address"):
                    values["scheduler_address"] = event["scheduler_address"]
                if event.get("parameters") is not None:
                    # Computed defaults (a date, a uuid) are known once the run has started.
                    self.parameters = {**self.parameters, **dict(event["parameters"])}
                    values["parameters"] = self.parameters
                connection.execute(update(runs).where(runs.c.id == self.run_id).values(values))
            elif status in ("succeeded", "failed", "cancelled"):
                self.monitoring = monitoring_summary(event)  # for OpenLineage's run event
                self._write_end(
                    connection, str(status), event.get("error"), event.get("output_notebook")
                )
            return
        name = str(event.get("task"))
        if event.get("type") != "task" or name not in self.task_run_ids:
            return
        status = str(event.get("status"))
        if event.get("cache_key"):
            self.state.pending_cache_keys[name] = str(event["cache_key"])
        if status == "waiting":
            return  # only a cache key: written with the batch
        handler = {
            "running": self._task_running,
            "retrying": self._task_retrying,
            "cached": self._task_finished,
            "done": self._task_finished,
            "failed": self._task_failed,
        }.get(status, self._task_other)
        handler(connection, name, event)
        self.state.task_status[name] = status

    def _flush_cache_keys(self, connection: Connection) -> None:
        keys = self.state.pending_cache_keys
        if keys:
            rows = [{"_id": self.task_run_ids[n], "cache_key": k} for n, k in keys.items()]
            connection.execute(self._task_update(("cache_key",)), rows)
            keys.clear()

    def _task_update(self, columns: Iterable[str]) -> Any:
        """UPDATE task_runs SET <columns> WHERE id = :_id, built once per column set."""
        key = tuple(sorted(columns))
        statement = self._task_updates.get(key)
        if statement is None:
            statement = (
                update(task_runs)
                .where(task_runs.c.id == bindparam("_id"))
                .values({c: bindparam(c) for c in key})
            )
            self._task_updates[key] = statement
        return statement

    def _update_task(self, connection: Connection, name: str, **values: Any) -> None:
        connection.execute(self._task_update(values), {"_id": self.task_run_ids[name], **values})

    def _log_attempt(self, name: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
        entries = self.state.attempt_logs.setdefault(name, [])
        entries.append(entry)
        return list(entries)

    def _task_running(self, connection: Connection, name: str, event: Mapping[str, Any]) -> None:
        values: dict[str, Any] = {"status": "running", "attempts": int(event.get("attempt") or 1)}
        if event.get("worker"):
            values["worker"] = event["worker"]
        if self.state.task_status.get(name) == "waiting":
            values["started_at"] = utcnow()
        self._update_task(connection, name, **values)
        self._record_inputs(connection, name)
        self._record_reads(connection, name)

    def _task_retrying(self, connection: Connection, name: str, event: Mapping[str, Any]) -> None:
        entry = {**_failed_attempt(event), "retry": event.get("reason")}
        self._update_task(
            connection, name, status="retrying", attempt_log=self._log_attempt(name, entry)
        )

    def _task_finished(self, connection: Connection, name: str, event: Mapping[str, Any]) -> None:
        cached = event.get("status") == "cached"
        now = utcnow()
        values: dict[str, Any] = {
            "status": str(event.get("status")),
            "cached": cached,
            "duration": event.get("duration"),
            "peak_memory": event.get("peak_memory"),
            **_present(cost=event.get("cost"), cost_saved=event.get("cost_saved")),
            "ended_at": now,
        }
        if self.state.task_status.get(name) == "waiting":
            values["started_at"] = now
        if event.get("attempt") is not None:
            values["attempts"] = int(event["attempt"])
        if event.get("worker"):
            values["worker"] = event["worker"]
        if not cached:
            entry = {
                "attempt": event.get("attempt"),
                "status": "done",
                "worker": event.get("worker"),
            }
            if event.get("cache_error"):
                entry["cache_error"] = event["cache_error"]  # outputs the store did not take
            if event.get("warnings"):
                entry["warnings"] = list(event["warnings"])  # values changed in place, the fix
            values["attempt_log"] = self._log_attempt(name, entry)
        elif event.get("warnings"):  # a cache hit re-exports what its run changed in place
            entry = {"status": "cached", "warnings": list(event["warnings"])}
            values["attempt_log"] = self._log_attempt(name, entry)
        self._update_task(connection, name, **values)
        self._record_outputs(connection, name, event.get("outputs") or {})
        # A cached task did not run now, but its cache key was made from these inputs.
        self._record_inputs(connection, name)
        self._record_reads(connection, name)
        if not cached:
            self._record_files(connection, name, "write")

    def _task_failed(self, connection: Connection, name: str, event: Mapping[str, Any]) -> None:
        error = dict(event.get("error") or {})
        entry = _failed_attempt(event)
        self._update_task(
            connection,
            name,
            status="failed",
            attempts=int(event.get("attempt") or 0),
            worker=event.get("worker"),
            duration=event.get("duration"),
            peak_memory=event.get("peak_memory"),
            **_present(cost=event.get("cost")),
            ended_at=utcnow(),
            attempt_log=self._log_attempt(name, entry),
            error=error or None,
            error_cell_index=error.get("cell_index"),
            error_cell_id=error.get("cell_id"),
            error_line=error.get("line"),
            error_message=error_message(error),
        )

    def _task_other(self, connection: Connection, name: str, event: Mapping[str, Any]) -> None:
        status = str(event.get("status"))
        if status in FINAL_TASK_STATUSES:
            self._update_task(connection, name, status=status, ended_at=utcnow())
        else:
            self._update_task(connection, name, status=status)

    # -- artifacts and files ------------------------------------------------------------------
    def _record_outputs(
        self, connection: Connection, name: str, outputs: Mapping[str, Mapping[str, Any]]
    ) -> None:
        now = utcnow()
        produced: dict[str, str | None] = {}
        artifact_rows = []
        for output, info in outputs.items():
            digest = info.get("digest")
            produced[output] = digest
            if digest:
                artifact_rows.append(
                    {
                        "digest": digest,
                        # A type name is description: cut to its column (VARCHAR(255); a
                        # class with a longer name made PostgreSQL refuse the whole run).
                        "type": str(info["type"])[:255] if info.get("type") else None,
                        "size": info.get("size"),
                        "stored_bytes": info.get("stored_bytes"),
                        "summary": artifact_summary(info),
                        "uri": info.get("uri") or f"{self.store_url}/artifacts/{digest}",
                        "created_at": now,
                    }
                )
        self.state.produced[name] = produced
        insert_ignoring_duplicates(connection, artifacts, artifact_rows, ("digest",))
        insert_ignoring_duplicates(
            connection,
            task_outputs,
            [
                {"task_run_id": self.task_run_ids[name], "name": o, "artifact_digest": d}
                for o, d in produced.items()
            ],
            ("task_run_id", "name"),
        )

    def _record_inputs(self, connection: Connection, name: str) -> None:
        """The task consumed its inputs' artifacts: the producers' outputs in this run."""
        if name in self.state.inputs_recorded:
            return
        self.state.inputs_recorded.add(name)
        rows = [
            {
                "task_run_id": self.task_run_ids[name],
                "name": input_name,
                "producer_task": producer,
                "artifact_digest": self.state.produced.get(producer, {}).get(input_name),
            }
            for input_name, producer in (self.tasks[name].get("inputs") or {}).items()
        ]
        insert_ignoring_duplicates(connection, task_inputs, rows, ("task_run_id", "name"))

    def _record_reads(self, connection: Connection, name: str) -> None:
        if name in self.state.reads_recorded:
            return
        self.state.reads_recorded.add(name)
        self._record_files(connection, name, "read")

    def _record_files(self, connection: Connection, name: str, direction: str) -> None:
        declared = (self.tasks[name].get("datasets") or {}).get(f"{direction}s") or []
        if not declared:
            return
        now = utcnow()
        paths = sorted({str((self.notebook_dir / rel).resolve()) for rel in declared})
        ids = self.state.dataset_ids
        new = [p for p in paths if p not in ids]
        if new:
            rows = [{"path": p} for p in new]
            insert_ignoring_duplicates(connection, datasets, rows, ("path",))
            query = select(datasets.c.path, datasets.c.id).where(datasets.c.path.in_(new))
            ids.update({path: dataset_id for path, dataset_id in connection.execute(query)})
        connection.execute(
            dataset_accesses.insert(),
            [
                {
                    "task_run_id": self.task_run_ids[name],
                    "dataset_id": ids[p],
                    "direction": direction,
                    "digest": file_digest(Path(p)),
                    "recorded_at": now,
                }
                for p in paths
            ],
        )

    # -- the end -----------------------------------------------------------------------------
    def _write_end(
        self, connection: Connection, status: str, error: str | None, output_notebook: Any
    ) -> None:
        values: dict[str, Any] = {"status": status, "ended_at": utcnow()}
        if error:
            values["error"] = error
        if output_notebook:
            values["output_notebook"] = str(output_notebook)
        connection.execute(update(runs).where(runs.c.id == self.run_id).values(values))
        if status != "succeeded":  # tasks that never got to finish
            connection.execute(
                update(task_runs)
                .where(
                    task_runs.c.run_id == self.run_id,
                    task_runs.c.status.in_(("waiting", "running", "retrying")),
                )
                .values(status="interrupted" if status == "interrupted" else "not_run")
            )
        self.state.status = status

    def _committed(self, status_before: str, error: str | None = None) -> None:
        """After a commit: tell OpenLineage if that transaction ended the run."""
        ended = status_before == "running" and self.state.status != "running"
        if ended and self.openlineage is not None:
            self.openlineage.run_ended(self._ol_run(), self.state.status, error)

    def _end_run(self, status: str, error: str | None, output_notebook: Any) -> None:
        def write(connection: Connection) -> None:
            self._flush_cache_keys(connection)
            self._write_end(connection, status, error, output_notebook)

        before = self.state.status
        self._transaction(write)
        self._committed(before, error)

    def _finish(self, data: Mapping[str, Any]) -> None:
        """The RunResult is the authority on each task's final state: write it over what the
        events left (they may have been partly lost, e.g. a listener error)."""
        if self.state.status == "new":
            self.start()
        if data.get("parameters"):
            self.parameters = dict(data["parameters"])
        rows = []
        finals = [t for t in data.get("tasks") or [] if t.get("name") in self.task_run_ids]
        for task in finals:
            error = task.get("error") or {}
            rows.append(
                {
                    "_id": self.task_run_ids[task["name"]],
                    "status": task.get("status"),
                    "cached": bool(task.get("cached")),
                    "attempts": int(task.get("attempts") or 0),
                    "attempt_log": task.get("attempt_log")
                    or self.state.attempt_logs.get(task["name"]),
                    "worker": task.get("worker"),
                    "duration": task.get("duration"),
                    "peak_memory": task.get("peak_memory"),
                    "cost": task.get("cost"),
                    "cost_saved": task.get("cost_saved"),
                    "cache_key": task.get("cache_key"),
                    "error": error or None,
                    "error_cell_index": error.get("cell_index"),
                    "error_cell_id": error.get("cell_id"),
                    "error_line": error.get("line"),
                    "error_message": error_message(error),
                }
            )

        def write(connection: Connection) -> None:
            self.state.pending_cache_keys.clear()  # the result carries every cache key
            if rows and not any(r["cost"] or r["cost_saved"] for r in rows):
                for row in rows:  # nothing measured (a replayed result): the columns stay out
                    del row["cost"], row["cost_saved"]
            if rows:
                columns = [c for c in rows[0] if c != "_id"]
                connection.execute(self._task_update(columns), rows)
            for task in finals:  # outputs the events did not bring (normally none)
                if task.get("outputs") and task["name"] not in self.state.produced:
                    self._record_outputs(connection, task["name"], task["outputs"])
            cost, budget = self._run_cost(connection, finals)
            connection.execute(
                update(runs)
                .where(runs.c.id == self.run_id)
                .values(parameters=self.parameters, **_present(cost=cost, budget=budget))
            )
            # The metrics cell's names in its order (the spec also lists literal
            # kiln.log_metric names, which come after them in the order they were logged).
            declared = [
                m["name"] for m in self.spec.get("metrics") or [] if m.get("source") != "log_metric"
            ]
            record_monitoring(connection, self.run_id, data, declared)
            status = str(data.get("status") or "failed")
            error = data.get("error")
            if budget and budget["over"] and budget["policy"] == "fail":
                self.budget_failed = True
                status, error = (
                    "failed",
                    f"over budget: spent {budget['spent']:.2f} of {budget['limit']:g}",
                )
            self._write_end(connection, status, error, data.get("output_notebook") or None)

        before = self.state.status
        self._transaction(write)
        self._committed(before)

    def _run_cost(
        self, connection: Connection, finals: list[Mapping[str, Any]]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The run's totals, what its cache hits saved, money at the stored prices, and the
        spec's budget checked against them."""
        cost = add_costs(t.get("cost") for t in finals)
        saved = add_costs(t.get("cost_saved") for t in finals if t.get("cached"))
        if not (cost or saved or self.budget):
            return None, None
        prices = connection.execute(
            select(settings.c.value).where(settings.c.key == "prices")
        ).scalar()
        prices = dict(prices or {})
        total: dict[str, Any] | None = None
        if cost or saved:
            total = dict(cost or {})
            total["saved"] = saved
            total["money"] = money(cost, prices)
            total["saved_money"] = money(saved, prices)
        return total, check_budget(self.budget, cost, money(cost, prices))

    # -- OpenLineage --------------------------------------------------------------------------
    def _send_openlineage(self, event: Mapping[str, Any]) -> None:
        assert self.openlineage is not None
        name = str(event.get("task"))
        if event.get("type") == "task" and name in self.tasks:
            status = str(event.get("status"))
            self.openlineage.task_event(self._ol_run(), self._ol_task(name, event, status))

    def _ol_run(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": str(self.spec.get("name", "")),
            "version": str(self.spec.get("version", "")),
            "notebook_path": str(self.notebook_path),
            "parameters": self.parameters,
            "monitoring": self.monitoring,
        }

    def baseline(self) -> dict[str, Any] | None:
        """What this run's relative checks and drift are judged against (lineage/metrics.py):
        {run_id, pinned, metrics, profiles}, or None for a notebook's first run."""
        try:
            with self.store.reading() as connection:
                return load_baseline(connection, str(self.notebook_path), exclude=self.run_id)
        except Exception as exc:  # a run is not stopped by a baseline it cannot read
            log.warning("kiln: no baseline for run %s: %s", self.run_id, exc)
            return None

    def _ol_task(self, name: str, event: Mapping[str, Any], status: str) -> dict[str, Any]:
        task = self.tasks[name]
        declared = task.get("datasets") or {}
        return {
            "task": name,
            "status": status,
            "attempt": event.get("attempt"),
            "version": task.get("version"),
            "reads": [str((self.notebook_dir / p).resolve()) for p in declared.get("reads", [])],
            "writes": [str((self.notebook_dir / p).resolve()) for p in declared.get("writes", [])],
            "inputs": {
                n: self.state.produced.get(p, {}).get(n)
                for n, p in (task.get("inputs") or {}).items()
            },
            "outputs": {
                n: (info or {}).get("digest") for n, info in (event.get("outputs") or {}).items()
            },
            "store_url": self.store_url,
            "error": event.get("error"),
        }


def _present(**values: Any) -> dict[str, Any]:
    """The values that are not None (columns newer stores have, left out when unused)."""
    return {k: v for k, v in values.items() if v is not None}


def _failed_attempt(event: Mapping[str, Any]) -> dict[str, Any]:
    """One failed attempt as the attempt log keeps it: where it failed and why."""
    error = event.get("error") or {}
    return {
        "attempt": event.get("attempt"),
        "status": "failed",
        "worker": event.get("worker"),
        "error": error_message(error),
        "cell_index": error.get("cell_index"),
        "line": error.get("line"),
        "reason": error.get("reason"),
    }
