"""Recording one run into the lineage store, event by event, as the runtime emits them.

    with RunRecorder(store, spec, notebook_path, params, run_id) as recorder:
        result = run_pipeline(spec, ..., run_id=recorder.run_id, on_event=recorder)
        recorder.finish(result)

The recorder writes the pipeline, the run and one row per task when the run starts (one
transaction), then one short transaction per event that changes something. `waiting` events
(one per task, all at once when the run starts) only carry cache keys; they are batched into
the next write. A recorder never raises into the run: a failing write is logged and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from .openlineage import OpenLineageEmitter, emitter_from_env
from .run_context import file_digest, git_state, run_environment
from .schema import (
    artifacts,
    dataset_accesses,
    datasets,
    pipelines,
    runs,
    task_inputs,
    task_outputs,
    task_runs,
)
from .store import LineageStore, insert_ignoring_duplicates, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
# Task statuses after which a task run no longer changes.
FINAL_TASK_STATUSES = ("done", "cached", "failed", "upstream_failed", "interrupted")
SUMMARY_KEYS = ("shape", "dtype", "dtypes", "columns", "len", "length", "ndim")


def new_run_id() -> str:
    """Same shape as the runtime's run ids: 16 random hex digits, random first."""
    import uuid

    return uuid.uuid4().hex[:16]


def spec_digest(spec: Mapping[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()


def artifact_summary(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """shape / dtype / columns / len of an output, from what the runtime reported."""
    summary = dict(info.get("summary") or {})
    summary.update({k: info[k] for k in SUMMARY_KEYS if k in info})
    return summary or None


def error_message(error: Mapping[str, Any] | None) -> str | None:
    if not error:
        return None
    return f"{error.get('ename')}: {error.get('evalue')}"


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
    ):
        self.store = store
        self.spec = spec
        self.notebook_path = Path(notebook_path).resolve()
        self.notebook_dir = self.notebook_path.parent
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
        self.task_status: dict[str, str] = {}
        self.attempt_logs: dict[str, list[dict[str, Any]]] = {}
        self.produced: dict[str, dict[str, str | None]] = {}  # task -> output name -> digest
        self.inputs_recorded: set[str] = set()
        self.reads_recorded: set[str] = set()
        self.pending_cache_keys: dict[str, str] = {}
        self.status = "new"
        self.errors: list[str] = []
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Record the pipeline, the run (status running) and its tasks (waiting)."""
        if self.status != "new":
            return
        if self.mark_stale_runs:
            from .liveness import mark_interrupted

            mark_interrupted(self.store)
        git = git_state(self.notebook_path)
        environment = run_environment()
        now = utcnow()
        notebook = dict(self.spec.get("notebook") or {})
        notebook_digest = notebook.get("digest")
        if not notebook_digest or set(str(notebook_digest)) == {"0"}:
            notebook_digest = file_digest(self.notebook_path)
        pipeline_row = {
            "name": str(self.spec.get("name", "")),
            "version": str(self.spec.get("version", "")),
            "spec_digest": spec_digest(self.spec),
            "spec": dict(self.spec),
            "notebook_path": str(self.notebook_path),
            "notebook_digest": notebook_digest,
            "created_at": now,
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
            **environment,
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

        def write(connection: Connection) -> None:
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
            self.task_run_ids = {
                task: task_run_id
                for task, task_run_id in connection.execute(
                    select(task_runs.c.task, task_runs.c.id).where(
                        task_runs.c.run_id == self.run_id
                    )
                )
            }

        self.store.write(write)
        self.task_status = dict.fromkeys(self.tasks, "waiting")
        self.status = "running"
        if self.heartbeat_s > 0:
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"kiln-lineage-heartbeat-{self.run_id}", daemon=True
            )
            self._heartbeat.start()
        if self.openlineage is not None:
            self.openlineage.run_started(self._ol_run())

    def _beat(self) -> None:
        while not self._heartbeat_stop.wait(self.heartbeat_s):
            try:
                self.store.write(
                    lambda c: c.execute(
                        update(runs)
                        .where(runs.c.id == self.run_id, runs.c.status == "running")
                        .values(heartbeat_at=utcnow())
                    )
                )
            except Exception as exc:  # a missed heartbeat is not worth stopping for
                log.debug("lineage heartbeat failed: %s", exc)

    def finish(self, result: Any) -> None:
        """Reconcile with the runtime's RunResult (or its to_dict()) and close the run."""
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        self._guard(self._finish, data)

    def fail(self, error: BaseException | str, status: str = "failed") -> None:
        """The run ended without a result (it could not start, or it raised)."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._guard(self._end_run, status, message)

    def close(self) -> None:
        """Stop the heartbeat; a run never finished or failed is recorded as failed."""
        if self.status == "running":
            self.fail("the run ended without reporting a result")
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
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
        if exc is not None and self.status == "running":
            interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
            self.fail(exc, "interrupted" if interrupted else "failed")
        self.close()

    # -- events ---------------------------------------------------------------------------------
    def __call__(self, event: Mapping[str, Any]) -> None:
        self._guard(self.record, event)

    def _guard(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # recording must never break the run it records
            if not self.errors:
                log.warning("kiln: lineage not recorded for run %s: %s", self.run_id, exc)
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def record(self, event: Mapping[str, Any]) -> None:
        """Record one runtime event (raises on database errors; `__call__` does not)."""
        if event.get("run_id") not in (None, self.run_id):
            return  # another run's event on a shared callback
        if self.status == "new":
            self.start()
        if event.get("type") == "run":
            self._run_event(event)
        elif event.get("type") == "task":
            self._task_event(event)

    def _run_event(self, event: Mapping[str, Any]) -> None:
        status = event.get("status")
        if status == "started":
            values = {"dashboard": event.get("dashboard"), "heartbeat_at": utcnow()}
            address = event.get("scheduler_address") or event.get("scheduler")
            if address:
                values["scheduler_address"] = address

            def write(connection: Connection) -> None:
                self._flush_cache_keys(connection)
                connection.execute(update(runs).where(runs.c.id == self.run_id).values(**values))

            self.store.write(write)
            self.pending_cache_keys.clear()
        elif status in ("succeeded", "failed"):
            self._end_run(str(status), None, event.get("output_notebook"))

    def _task_event(self, event: Mapping[str, Any]) -> None:
        name = str(event.get("task"))
        if name not in self.task_run_ids:
            return
        status = str(event.get("status"))
        if event.get("cache_key"):
            self.pending_cache_keys[name] = str(event["cache_key"])
        if status == "waiting":
            return  # cache keys go out with the next write
        handler = {
            "running": self._task_running,
            "retrying": self._task_retrying,
            "cached": self._task_finished,
            "done": self._task_finished,
            "failed": self._task_failed,
        }.get(status, self._task_other)

        def write(connection: Connection) -> dict[str, Any] | None:
            self._flush_cache_keys(connection)
            return handler(connection, name, event)

        attempt_entry = self.store.write(write)
        # In-memory state changes only once the transaction committed (a retried transaction
        # must find it as it was).
        self.pending_cache_keys.clear()
        self.task_status[name] = status
        if attempt_entry is not None:
            self.attempt_logs.setdefault(name, []).append(attempt_entry)
        if status in ("running", "cached", "done"):
            self.inputs_recorded.add(name)
            self.reads_recorded.add(name)
        if self.openlineage is not None:
            self.openlineage.task_event(self._ol_run(), self._ol_task(name, event, status))

    def _flush_cache_keys(self, connection: Connection) -> None:
        if not self.pending_cache_keys:
            return
        connection.execute(
            update(task_runs)
            .where(task_runs.c.id == bindparam("task_run_id"))
            .values(cache_key=bindparam("key")),
            [
                {"task_run_id": self.task_run_ids[n], "key": k}
                for n, k in self.pending_cache_keys.items()
            ],
        )

    def _update_task(self, connection: Connection, name: str, **values: Any) -> None:
        connection.execute(
            update(task_runs).where(task_runs.c.id == self.task_run_ids[name]).values(**values)
        )

    def _attempt_log_with(self, name: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
        return [*self.attempt_logs.get(name, []), entry]

    # Each handler writes one event's rows and returns the attempt-log entry it added, if any.
    def _task_running(
        self, connection: Connection, name: str, event: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        values: dict[str, Any] = {"status": "running", "attempts": int(event.get("attempt") or 1)}
        if event.get("worker"):
            values["worker"] = event["worker"]
        if self.task_status.get(name) == "waiting":
            values["started_at"] = utcnow()
        self._update_task(connection, name, **values)
        self._record_inputs(connection, name)
        self._record_reads(connection, name)
        return None

    def _task_retrying(
        self, connection: Connection, name: str, event: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        error = event.get("error") or {}
        entry = {
            "attempt": event.get("attempt"),
            "status": "failed",
            "worker": event.get("worker"),
            "error": error_message(error),
            "cell_index": error.get("cell_index"),
            "line": error.get("line"),
            "reason": error.get("reason"),
            "retry": event.get("reason"),
        }
        self._update_task(
            connection, name, status="retrying", attempt_log=self._attempt_log_with(name, entry)
        )
        return entry

    def _task_finished(
        self, connection: Connection, name: str, event: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        cached = event.get("status") == "cached"
        now = utcnow()
        values: dict[str, Any] = {
            "status": str(event.get("status")),
            "cached": cached,
            "duration": event.get("duration"),
            "peak_memory": event.get("peak_memory"),
            "ended_at": now,
        }
        if self.task_status.get(name) == "waiting":
            values["started_at"] = now
        if event.get("attempt") is not None:
            values["attempts"] = int(event["attempt"])
        if event.get("worker"):
            values["worker"] = event["worker"]
        entry = None
        if not cached:
            entry = {
                "attempt": event.get("attempt"),
                "status": "done",
                "worker": event.get("worker"),
            }
            values["attempt_log"] = self._attempt_log_with(name, entry)
        self._update_task(connection, name, **values)
        self._record_outputs(connection, name, event.get("outputs") or {})
        # A cached task did not run now, but its cache key was made from these inputs.
        self._record_inputs(connection, name)
        self._record_reads(connection, name)
        if not cached:
            self._record_files(connection, name, "write")
        return entry

    def _task_failed(
        self, connection: Connection, name: str, event: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        error = dict(event.get("error") or {})
        entry = {
            "attempt": event.get("attempt"),
            "status": "failed",
            "worker": event.get("worker"),
            "error": error_message(error),
            "cell_index": error.get("cell_index"),
            "line": error.get("line"),
            "reason": error.get("reason"),
        }
        self._update_task(
            connection,
            name,
            status="failed",
            attempts=int(event.get("attempt") or 0),
            worker=event.get("worker"),
            duration=event.get("duration"),
            peak_memory=event.get("peak_memory"),
            ended_at=utcnow(),
            attempt_log=self._attempt_log_with(name, entry),
            error=error or None,
            error_cell_index=error.get("cell_index"),
            error_cell_id=error.get("cell_id"),
            error_line=error.get("line"),
            error_message=error_message(error),
        )
        return entry

    def _task_other(
        self, connection: Connection, name: str, event: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        values: dict[str, Any] = {"status": str(event.get("status"))}
        if values["status"] in FINAL_TASK_STATUSES:
            values["ended_at"] = utcnow()
        self._update_task(connection, name, **values)
        return None

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
                        "type": info.get("type"),
                        "size": info.get("size"),
                        "stored_bytes": info.get("stored_bytes"),
                        "summary": artifact_summary(info),
                        "uri": info.get("uri") or f"{self.store_url}/artifacts/{digest}",
                        "created_at": now,
                    }
                )
        self.produced[name] = produced
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
        if name in self.inputs_recorded:
            return
        rows = [
            {
                "task_run_id": self.task_run_ids[name],
                "name": input_name,
                "producer_task": producer,
                "artifact_digest": self.produced.get(producer, {}).get(input_name),
            }
            for input_name, producer in (self.tasks[name].get("inputs") or {}).items()
        ]
        insert_ignoring_duplicates(connection, task_inputs, rows, ("task_run_id", "name"))

    def _record_reads(self, connection: Connection, name: str) -> None:
        if name in self.reads_recorded:
            return
        self._record_files(connection, name, "read")

    def _record_files(self, connection: Connection, name: str, direction: str) -> None:
        declared = (self.tasks[name].get("datasets") or {}).get(f"{direction}s") or []
        if not declared:
            return
        now = utcnow()
        paths = {str((self.notebook_dir / rel).resolve()) for rel in declared}
        insert_ignoring_duplicates(connection, datasets, [{"path": p} for p in paths], ("path",))
        ids = {
            path: dataset_id
            for path, dataset_id in connection.execute(
                select(datasets.c.path, datasets.c.id).where(datasets.c.path.in_(paths))
            )
        }
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
                for p in sorted(paths)
            ],
        )

    # -- the end -----------------------------------------------------------------------------
    def _end_run(self, status: str, error: str | None, output_notebook: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "ended_at": utcnow()}
        if error:
            values["error"] = error
        if output_notebook:
            values["output_notebook"] = str(output_notebook)

        def write(connection: Connection) -> None:
            self._flush_cache_keys(connection)
            connection.execute(update(runs).where(runs.c.id == self.run_id).values(**values))
            if status != "succeeded":  # tasks that never got to finish
                connection.execute(
                    update(task_runs)
                    .where(
                        task_runs.c.run_id == self.run_id,
                        task_runs.c.status.in_(("waiting", "running", "retrying")),
                    )
                    .values(status="interrupted" if status == "interrupted" else "not_run")
                )

        self.store.write(write)
        self.pending_cache_keys.clear()
        first_end = self.status == "running"
        self.status = status
        if first_end and self.openlineage is not None:
            self.openlineage.run_ended(self._ol_run(), status, error)

    def _finish(self, data: Mapping[str, Any]) -> None:
        """The RunResult is the authority on each task's final state: write it over what the
        events left (they may have been partly lost, e.g. a listener error)."""
        if self.status == "new":
            self.start()
        if data.get("parameters"):
            self.parameters = dict(data["parameters"])
        rows = []
        for task in data.get("tasks") or []:
            name = task.get("name")
            if name not in self.task_run_ids:
                continue
            error = task.get("error") or {}
            rows.append(
                {
                    "task_run_id": self.task_run_ids[name],
                    "status": task.get("status"),
                    "cached": bool(task.get("cached")),
                    "attempts": int(task.get("attempts") or 0),
                    "attempt_log": task.get("attempt_log") or self.attempt_logs.get(name),
                    "worker": task.get("worker"),
                    "duration": task.get("duration"),
                    "peak_memory": task.get("peak_memory"),
                    "cache_key": task.get("cache_key"),
                    "error": error or None,
                    "error_cell_index": error.get("cell_index"),
                    "error_cell_id": error.get("cell_id"),
                    "error_line": error.get("line"),
                    "error_message": error_message(error),
                }
            )
        finals = [t for t in data.get("tasks") or [] if t.get("name") in self.task_run_ids]

        def write(connection: Connection) -> None:
            if rows:
                connection.execute(
                    update(task_runs)
                    .where(task_runs.c.id == bindparam("task_run_id"))
                    .values(
                        {column: bindparam(column) for column in rows[0] if column != "task_run_id"}
                    ),
                    rows,
                )
            for task in finals:  # outputs the events did not bring (normally none)
                if task.get("outputs") and task["name"] not in self.produced:
                    self._record_outputs(connection, task["name"], task["outputs"])
            connection.execute(
                update(runs).where(runs.c.id == self.run_id).values(parameters=self.parameters)
            )

        self.store.write(write)
        self.pending_cache_keys.clear()  # the result carried every cache key
        self._end_run(
            str(data.get("status") or "failed"), None, data.get("output_notebook") or None
        )

    # -- OpenLineage --------------------------------------------------------------------------
    def _ol_run(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": str(self.spec.get("name", "")),
            "version": str(self.spec.get("version", "")),
            "notebook_path": str(self.notebook_path),
            "parameters": self.parameters,
        }

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
                n: self.produced.get(p, {}).get(n) for n, p in (task.get("inputs") or {}).items()
            },
            "outputs": {
                n: (info or {}).get("digest") for n, info in (event.get("outputs") or {}).items()
            },
            "store_url": self.store_url,
            "error": event.get("error"),
        }
