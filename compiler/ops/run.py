"""Running a notebook: the one path every face takes (CLI, server, widget, papermill engine,
rerun, the bundle's run.py).

    prepared = prepare_run("train.ipynb", raw_parameters={"n": "3"})   # compile + parameters
    result = run_notebook(prepared, listeners=[progress])              # runtime + lineage

Read top to bottom like papermill's execute_notebook: load and compile (through the compile
cache), check and type the parameters, mint the run id; then run the spec on the runtime with
its listeners: the lineage recorder (unless turned off) and whatever the face passes (progress
display, the server's run record, the widget). Lineage must not stop a run: a store that
cannot be opened is a warning, and the run goes on unrecorded.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from compiler.compile.cache import compiled_spec
from compiler.lineage.alerts import notify_run_end, raise_alert
from compiler.lineage.recorder import RunRecorder
from compiler.lineage.store import LineageStore, open_store
from compiler.model.diagnostics import Diagnostic
from compiler.model.events import Listener
from compiler.model.ids import new_run_id
from compiler.runtime.cache import ArtifactStore
from compiler.runtime.cluster import LocalClusterStart
from compiler.runtime.driver import run_pipeline
from compiler.runtime.parameters import coerce_parameters, resolve_parameters
from compiler.runtime.results import RunResult


class RunRefused(ValueError):
    """The notebook does not compile, or the parameters do not fit it: nothing ran."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None):
        super().__init__(message)
        self.diagnostics = diagnostics or []


@dataclass(frozen=True)
class PreparedRun:
    """What a run needs before it starts, the same whichever face started it."""

    notebook_path: Path
    spec: Mapping[str, Any]
    parameters: Mapping[str, Any]  # typed overrides of the spec's defaults
    run_id: str
    diagnostics: list[Diagnostic] = field(default_factory=list)  # warnings of the compile


def prepare_run(
    notebook_path: str | Path,
    *,
    spec: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    raw_parameters: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> PreparedRun:
    """Compile (unless the caller already has the `spec`) and check the parameters: typed
    `parameters`, or `raw_parameters` as strings typed like papermill (`-p n 3`). Raises
    NotebookLoadError for an unreadable notebook and RunRefused (with the diagnostics) for one
    with errors or for parameters it does not declare."""
    path = Path(notebook_path)
    diagnostics: list[Diagnostic] = []
    if spec is None:
        compiled, diagnostics = compiled_spec(path)
        if compiled is None:
            errors = [d for d in diagnostics if d.severity == "error"]
            raise RunRefused(f"{path.name} does not compile ({len(errors)} error(s))", diagnostics)
        spec = compiled
    try:
        typed = dict(parameters or {})
        if raw_parameters:
            typed.update(coerce_parameters(spec, raw_parameters))
        resolve_parameters(spec, typed)  # unknown names refused before anything starts
    except ValueError as exc:
        raise RunRefused(str(exc), diagnostics) from None
    return PreparedRun(path, spec, typed, run_id or new_run_id(), diagnostics)


class RunOptions(TypedDict, total=False):
    """How a run goes, whichever face asks for it: run_spec's keyword arguments (their
    defaults and meanings are there), taken by run_notebook as they are."""

    on_event: Listener | None
    listeners: Iterable[Listener]
    lineage_db: str | None
    lineage_store: LineageStore | None
    record_lineage: bool
    rerun_of: str | None
    scheduler: str | None
    workers: int | None
    memory_limit: int | str | None
    use_cache: bool
    force: Iterable[str]
    store_url: str | None
    output_notebook: str | Path | None
    working_dir: str | Path | None
    cancel: threading.Event | None
    notebook_json: Mapping[str, Any] | None
    cell_events: bool
    cell_timeout: float | None
    cluster_start: LocalClusterStart | None


def run_notebook(prepared: PreparedRun, **options: Unpack[RunOptions]) -> RunResult:
    """Run a prepared notebook on Dask, recorded in lineage (`lineage_db`: a SQLAlchemy URL;
    default $KILN_LINEAGE_DB, else `.kiln/lineage.db` beside the notebook, or in
    `working_dir`), or in `lineage_store` (an open store the caller closes). Raises what the
    runtime raises before anything runs (ResourceUnavailable, ValueError); task failures are in
    the result. `options`: see run_spec."""
    return run_spec(
        prepared.spec,
        notebook_path=prepared.notebook_path,
        params=prepared.parameters,
        run_id=prepared.run_id,
        **options,
    )


def run_spec(
    spec: Mapping[str, Any],
    *,
    notebook_path: str | Path,
    params: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    on_event: Listener | None = None,
    listeners: Iterable[Listener] = (),
    lineage_db: str | None = None,
    lineage_store: LineageStore | None = None,
    record_lineage: bool = True,
    rerun_of: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: int | str | None = None,
    use_cache: bool = True,
    force: Iterable[str] = (),
    store_url: str | None = None,
    output_notebook: str | Path | None = None,
    working_dir: str | Path | None = None,
    cancel: threading.Event | None = None,
    notebook_json: Mapping[str, Any] | None = None,
    cell_events: bool = False,
    cell_timeout: float | None = None,
    cluster_start: LocalClusterStart | None = None,
) -> RunResult:
    """A compiled spec through the runtime, with the lineage recorder as one more listener.
    `cancel`: see run_pipeline (the server's Cancel sets it). `notebook_json`, `cell_events`,
    `cell_timeout`, `cluster_start`: see runtime.driver.run_pipeline."""
    run_id = run_id or new_run_id()
    notebook = Path(notebook_path).resolve()
    workdir = Path(working_dir).resolve() if working_dir else None
    # Opening the lineage database (and upgrading its schema) takes a while; the run does not
    # wait for it: the recorder opens in a thread while the cluster is reached and the first
    # tasks start, and the events that come before it is open are handed over in order.
    opening = (
        _RecorderOpening(
            lambda: _open_recorder(
                spec,
                notebook,
                params,
                run_id,
                lineage_db=lineage_db,
                lineage_store=lineage_store,
                scheduler=scheduler,
                store_url=store_url,
                working_dir=workdir,
                rerun_of=rerun_of,
            )
        )
        if record_lineage
        else None
    )
    owns_store = lineage_store is None

    def baseline() -> Mapping[str, Any] | None:
        """What relative checks and input drift are judged against: the notebook's pinned or
        last succeeded run (lineage/metrics.py), read from the recorder once it is open."""
        opened = opening.wait() if opening is not None else None
        return opened.baseline() if opened is not None else None

    everyone: list[Listener] = [*([on_event] if on_event else []), *listeners]
    if opening is not None:
        everyone.append(opening)
    try:
        result = run_pipeline(
            spec,
            notebook_path=notebook,
            params=params,
            scheduler=scheduler,
            workers=workers,
            use_cache=use_cache,
            force=force,
            store_url=store_url,
            output_notebook=output_notebook,
            listeners=everyone,
            run_id=run_id,
            memory_limit=memory_limit,
            working_dir=workdir,
            cancel=cancel,
            notebook_json=notebook_json,
            cell_events=cell_events,
            cell_timeout=cell_timeout,
            baseline=baseline,
            cluster_start=cluster_start,
        )
    except BaseException as exc:
        recorder = opening.wait() if opening is not None else None
        if recorder is not None:
            _close_recorder(recorder, None, exc, owns_store)
        raise
    recorder = opening.wait() if opening is not None else None
    lineage_error = opening.error if opening is not None else None
    if recorder is not None:
        _close_recorder(recorder, result, None, owns_store)
        if recorder.errors:
            more = f" (and {len(recorder.errors) - 1} more)" if len(recorder.errors) > 1 else ""
            lineage_error = recorder.errors[0] + more
    # Never a mere warning: `kiln run` fails with it (PostgreSQL once dropped a whole run's
    # lineage and the run still exited 0).
    result.lineage_error = lineage_error
    return result


class _RecorderOpening:
    """A listener that opens the lineage recorder in a thread and hands it every event: those
    that came while it was opening first, in their order (one thread, the run loop, sends
    events; the hand-over holds the lock, so nothing overtakes it)."""

    def __init__(self, open_recorder: Callable[[], tuple[RunRecorder | None, str | None]]):
        self._lock = threading.Lock()
        self._pending: list[Mapping[str, Any]] = []
        self._open = False
        self.recorder: RunRecorder | None = None
        self.error: str | None = None  # why lineage is not recorded, when it is not
        self._thread = threading.Thread(
            target=self._opening, args=(open_recorder,), name="kiln-lineage-open", daemon=True
        )
        self._thread.start()

    def _opening(self, open_recorder: Callable[[], tuple[RunRecorder | None, str | None]]) -> None:
        recorder: RunRecorder | None = None
        error: str | None = "the lineage recorder did not open"
        try:
            recorder, error = open_recorder()
        finally:
            with self._lock:
                self.recorder, self.error = recorder, error
                pending, self._pending = self._pending, []
                if recorder is not None:
                    for event in pending:
                        recorder(event)
                self._open = True

    def __call__(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            if not self._open:
                self._pending.append(event)
                return
        if self.recorder is not None:
            self.recorder(event)

    def wait(self) -> RunRecorder | None:
        self._thread.join()
        return self.recorder


def _open_recorder(
    spec: Mapping[str, Any],
    notebook: Path,
    params: Mapping[str, Any] | None,
    run_id: str,
    *,
    lineage_db: str | None,
    lineage_store: LineageStore | None,
    scheduler: str | None,
    store_url: str | None,
    working_dir: Path | None,
    rerun_of: str | None,
) -> tuple[RunRecorder | None, str | None]:
    """Lineage of every run, whoever started it: the run and its tasks are written before the
    runtime starts (a run that cannot start is recorded failed, with why). Returns the
    recorder, or None and why lineage cannot be recorded."""
    folder = working_dir or notebook.parent
    store = lineage_store
    try:
        if store is None:
            store = open_store(lineage_db, folder / notebook.name)
        recorder = RunRecorder(
            store,
            spec,
            notebook,
            resolve_parameters(spec, params),
            run_id,
            scheduler_address=scheduler,
            store_url=store_url or ArtifactStore.default_for(folder).url,
            working_dir=working_dir,
            rerun_of=rerun_of,
        )
        recorder.start()
        return recorder, None
    except Exception as exc:  # lineage must not stop a run (a bad URL, a damaged database)
        if store is not None and lineage_store is None:
            store.close()
        warnings.warn(f"kiln: lineage not recorded for this run: {exc}", stacklevel=3)
        return None, f"{type(exc).__name__}: {exc}"


def _alert_verdicts(recorder: RunRecorder, result: RunResult) -> None:
    """A failed check or warn raises a `check` alert, a drifted input a `drift` alert, to the
    notebook's routes (each once per run; a failing route never fails the run)."""
    for verdict in result.verdicts:
        if verdict.get("passed"):
            continue
        event = "drift" if verdict.get("kind") == "drift" else "check"
        try:
            raise_alert(recorder.store, event, recorder.run_id, str(verdict.get("message")))
        except Exception as exc:  # alerts must not fail a run that has already been judged
            warnings.warn(f"kiln: the {event} alert was not sent: {exc}", stacklevel=2)


def _close_recorder(
    recorder: RunRecorder, result: RunResult | None, error: BaseException | None, owns_store: bool
) -> None:
    try:
        if result is not None:
            recorder.finish(result)
        elif error is not None:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            recorder.fail(error, status)
    finally:
        recorder.close()
        if result is not None and recorder.budget_failed:
            result.status = "failed"  # over a budget whose policy is "fail"
        # Alerts read the run just written (one small query when the notebook has no route).
        notify_run_end(recorder.store, recorder.run_id)
        if result is not None:
            _alert_verdicts(recorder, result)
        if owns_store:
            recorder.store.close()
