"""Optional OpenLineage events (spec 2-0-2) for each run and task, to a file or an HTTP endpoint.

    KILN_OPENLINEAGE_FILE=/var/log/kiln/lineage.jsonl   one JSON event per line, appended
    KILN_OPENLINEAGE_URL=http://marquez:5000            POSTed to /api/v1/lineage (or its own path)
    KILN_OPENLINEAGE_NAMESPACE=team-a                   job namespace (default "kiln")

The events are plain JSON written here rather than through openlineage-python: Kiln needs two
transports and four event shapes, not the client's dependency tree. Jobs: the pipeline is one
job (`NAME`), each task another (`NAME.TASK`) whose run names the pipeline run as its parent.
Datasets: files read and written (namespace "file", absolute path) and the stored artifacts
tasks pass to each other. HTTP posts go out from a background thread, so a slow or unreachable
endpoint never slows a run; `close()` waits a few seconds for what is queued.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import threading
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from compiler.model.statuses import RunStatus, TaskStatus

log = logging.getLogger(__name__)

ENV_FILE = "KILN_OPENLINEAGE_FILE"
ENV_URL = "KILN_OPENLINEAGE_URL"
ENV_NAMESPACE = "KILN_OPENLINEAGE_NAMESPACE"
PRODUCER = "https://github.com/kiln-dev/nbkiln"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PARENT_FACET_URL = (
    "https://openlineage.io/spec/facets/1-0-1/ParentRunFacet.json#/$defs/ParentRunFacet"
)
ERROR_FACET_URL = (
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
)
KILN_FACET_URL = "https://kiln.dev/schema/openlineage/KilnRunFacet.json"
# A run's metrics and check/drift verdicts, on the pipeline run's COMPLETE/FAIL event.
KILN_METRICS_FACET_URL = "https://kiln.dev/schema/openlineage/KilnMetricsRunFacet.json"
_UUID_NAMESPACE = uuid.UUID("6b696c6e-0000-4000-8000-6c696e656167")  # fixed: stable run UUIDs
# Task statuses that map onto OpenLineage run states; the others (waiting, retrying) are
# Kiln-internal and send nothing.
TASK_EVENT_TYPES: dict[str, str] = {
    TaskStatus.RUNNING: "START",
    TaskStatus.DONE: "COMPLETE",
    TaskStatus.CACHED: "COMPLETE",
    TaskStatus.FAILED: "FAIL",
    TaskStatus.UPSTREAM_FAILED: "ABORT",
    TaskStatus.INTERRUPTED: "ABORT",
    TaskStatus.CANCELLED: "ABORT",
}
RUN_EVENT_TYPES: dict[str, str] = {
    RunStatus.SUCCEEDED: "COMPLETE",
    RunStatus.FAILED: "FAIL",
    RunStatus.INTERRUPTED: "ABORT",
    RunStatus.CANCELLED: "ABORT",
}


def run_uuid(*parts: str) -> str:
    """OpenLineage wants UUID run ids; Kiln's are 16 hex digits, so derive one, stably."""
    return str(uuid.uuid5(_UUID_NAMESPACE, "/".join(parts)))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _facet(schema_url: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **fields}


def file_dataset(path: str) -> dict[str, Any]:
    return {"namespace": "file", "name": path}


def artifact_dataset(store_url: str, digest: str) -> dict[str, Any]:
    parts = urlsplit(store_url)
    if parts.scheme and parts.scheme != "file" and parts.netloc:
        return {
            "namespace": f"{parts.scheme}://{parts.netloc}",
            "name": f"{parts.path.rstrip('/')}/artifacts/{digest}",
        }
    root = parts.path if parts.scheme == "file" else store_url
    return {"namespace": "file", "name": f"{root.rstrip('/')}/artifacts/{digest}"}


def endpoint_for(url: str) -> str:
    """A bare server URL gets OpenLineage's standard path (Marquez and others serve it)."""
    parts = urlsplit(url)
    return url.rstrip("/") + "/api/v1/lineage" if parts.path in ("", "/") else url


class OpenLineageEmitter:
    """Builds OpenLineage run events from Kiln's and sends them to a file and/or a URL."""

    def __init__(
        self,
        *,
        file: str | Path | None = None,
        url: str | None = None,
        namespace: str = "kiln",
        timeout_s: float = 5.0,
    ):
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.file = Path(file) if file else None
        self.url = endpoint_for(url) if url else None
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self.sent = 0
        self.failures = 0
        self._started_tasks: set[tuple[str, str]] = set()

    # -- what the recorder calls --------------------------------------------------------------
    def run_started(self, run: Mapping[str, Any]) -> None:
        self.emit(self._event("START", self._pipeline_run(run), self._job(run), [], []))

    def run_ended(self, run: Mapping[str, Any], status: str, error: str | None) -> None:
        event_type = RUN_EVENT_TYPES.get(status, "OTHER")
        run_part = self._pipeline_run(run)
        if run.get("monitoring"):
            run_part["facets"]["kilnMetrics"] = _facet(KILN_METRICS_FACET_URL, **run["monitoring"])
        if error:
            run_part["facets"]["errorMessage"] = _facet(
                ERROR_FACET_URL, message=error, programmingLanguage="python"
            )
        self.emit(self._event(event_type, run_part, self._job(run), [], []))

    def task_event(self, run: Mapping[str, Any], task: Mapping[str, Any]) -> None:
        event_type = TASK_EVENT_TYPES.get(str(task["status"]))
        if event_type is None:
            return
        key = (str(run["run_id"]), str(task["task"]))
        if event_type == "START":
            if key in self._started_tasks:
                return  # a retry's new attempt: still the same OpenLineage run
            self._started_tasks.add(key)
        store_url = str(task.get("store_url") or "")
        inputs = [file_dataset(p) for p in task.get("reads") or []]
        inputs += [artifact_dataset(store_url, d) for d in (task.get("inputs") or {}).values() if d]
        outputs: list[dict[str, Any]] = []
        if event_type == "COMPLETE":
            if task["status"] == "done":
                outputs += [file_dataset(p) for p in task.get("writes") or []]
            outputs += [
                artifact_dataset(store_url, d) for d in (task.get("outputs") or {}).values() if d
            ]
        run_part: dict[str, Any] = {
            "runId": run_uuid(key[0], key[1]),
            "facets": {
                "parent": _facet(
                    PARENT_FACET_URL,
                    run={"runId": run_uuid(key[0])},
                    job={"namespace": self.namespace, "name": str(run["pipeline"])},
                ),
                "kiln": _facet(
                    KILN_FACET_URL,
                    runId=key[0],
                    task=key[1],
                    version=task.get("version"),
                    status=task["status"],
                    attempt=task.get("attempt"),
                ),
            },
        }
        error = task.get("error") or {}
        if event_type == "FAIL" and error:
            run_part["facets"]["errorMessage"] = _facet(
                ERROR_FACET_URL,
                message=f"{error.get('ename')}: {error.get('evalue')}",
                programmingLanguage="python",
                stackTrace="".join(error.get("traceback") or []),
            )
        job = {"namespace": self.namespace, "name": f"{run['pipeline']}.{task['task']}"}
        self.emit(self._event(event_type, run_part, job, inputs, outputs))

    # -- building ---------------------------------------------------------------------------
    def _pipeline_run(self, run: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "runId": run_uuid(str(run["run_id"])),
            "facets": {
                "kiln": _facet(
                    KILN_FACET_URL,
                    runId=run["run_id"],
                    version=run.get("version"),
                    notebook=run.get("notebook_path"),
                    parameters=run.get("parameters"),
                )
            },
        }

    def _job(self, run: Mapping[str, Any]) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": str(run["pipeline"])}

    def _event(
        self,
        event_type: str,
        run: dict[str, Any],
        job: dict[str, Any],
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
    ) -> dict[str, Any]:
        return {
            "eventType": event_type,
            "eventTime": _now(),
            "run": run,
            "job": job,
            "inputs": inputs,
            "outputs": outputs,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
        }

    # -- sending ----------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=repr, sort_keys=True)
        if self.file is not None:
            try:
                with self._lock:
                    self.file.parent.mkdir(parents=True, exist_ok=True)
                    with self.file.open("a", encoding="utf-8") as f:
                        f.write(line + "\n")
                self.sent += 1
            except OSError as exc:
                self._failed(exc)
        if self.url is not None:
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_loop, name="kiln-openlineage", daemon=True
                )
                self._sender.start()
            self._queue.put(event)

    def _send_loop(self) -> None:
        while (event := self._queue.get()) is not None:
            assert self.url is not None
            request = urllib.request.Request(
                self.url,
                data=json.dumps(event, default=repr).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.sent += 1
            except Exception as exc:  # the endpoint's trouble is not the run's
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self.failures:
            log.warning("kiln: OpenLineage event not delivered: %s", exc)
        self.failures += 1

    def close(self) -> None:
        if self._sender is not None:
            self._queue.put(None)
            self._sender.join(timeout=self.timeout_s)
            self._sender = None


def emitter_from_env(environ: Mapping[str, str] | None = None) -> OpenLineageEmitter | None:
    """An emitter when KILN_OPENLINEAGE_FILE or KILN_OPENLINEAGE_URL is set, else None."""
    env = os.environ if environ is None else environ
    file, url = env.get(ENV_FILE), env.get(ENV_URL)
    if not file and not url:
        return None
    return OpenLineageEmitter(file=file, url=url, namespace=env.get(ENV_NAMESPACE) or "kiln")
