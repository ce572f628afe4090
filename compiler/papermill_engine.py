"""papermill engine `kiln`: `papermill in.ipynb out.ipynb --engine kiln -p k v`.

papermill parameterizes the notebook and owns the output notebook's bookkeeping (the
NotebookExecutionManager: `metadata.papermill`, saving, error banners); Kiln compiles the
notebook papermill hands over and runs it on Dask with the same `run_pipeline` as `kiln run`
(cache, retries and lineage included). compiler/papermill_contract.py maps the run's per-cell
results back onto papermill's notebook.

papermill's options, as this engine treats them:
- `--cwd`: tasks run there (relative paths resolve there; `.kiln/` stays beside the notebook,
  whose folder also provides local imports); stdin or remote notebooks run in the working folder.
- `--execution-timeout`: a limit on each cell; past it the run fails with nbclient's
  CellTimeoutError, as with papermill's default engine.
- `--log-output`, `--stdout-file`, `--stderr-file`, `--request-save-on-cell-execute`: followed
  cell by cell as the workers report each cell (outputs arrive when a cell finishes, not while
  it runs; `--autosave-cell-every` therefore saves at cell boundaries).
- `-k`/the notebook's kernelspec: must name an installed Python kernel (Kiln's workers run
  Python); another language is refused before anything runs.
- `--report-mode`, `--prepare-only`, `-r`/`-y`/`-f` parameters and `--inject-paths` are handled
  by papermill before the engine is called.
- `--start-timeout`: no kernel is started; the wait for a Dask worker has its own limit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
from papermill.engines import Engine
from papermill.exceptions import PapermillException

from compiler import papermill_contract as contract
from compiler.runtime.notebook_output import monitoring_metadata

INJECTED_TAG = contract.INJECTED_TAG

# Engine keyword arguments this engine reads; papermill passes them all (any other is a user's
# `execute_notebook(..., name=value)` and is refused rather than ignored).
KNOWN_OPTIONS = {
    "working_dir",  # a promoted schedule: the bundle's snapshot runs in the live notebook's folder
    "input_path",
    "output_path",
    "start_timeout",
    "execution_timeout",
    "stdout_file",
    "stderr_file",
    "scheduler",
    "timeout",
}


def _papermill_base_dir() -> Path:
    """The folder papermill resolves relative paths from: the working folder when
    execute_notebook was called, before it changed into `--cwd`."""
    from papermill.iorw import papermill_io

    try:
        handler = papermill_io.get_handler("local")
    except PapermillException:
        return Path.cwd()
    base = getattr(handler, "_cwd", None)
    return Path(base) if base else Path.cwd()


def _notebook_path(input_path: Any) -> Path:
    """Where the notebook is (its folder holds `.kiln/` and its local modules). A notebook
    read from stdin, a URL or passed as a NotebookNode has no folder of its own: the working
    folder stands in."""
    if not isinstance(input_path, str | os.PathLike):
        input_path = None
    if not input_path or input_path == "-" or "://" in str(input_path):
        name = Path(str(input_path)).name if input_path and input_path != "-" else ""
        return Path.cwd().resolve() / f"{Path(name).stem or 'stdin'}.ipynb"
    return (_papermill_base_dir() / input_path).resolve()


def _saved_format(path: Path) -> tuple[int, int] | None:
    """(nbformat, nbformat_minor) of the notebook as saved, before papermill upgraded it."""
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        return int(saved.get("nbformat", 4)), int(saved.get("nbformat_minor", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def check_kernel(kernel_name: str | None) -> None:
    """Kiln's workers run Python: the kernel must exist (papermill's default engine raises
    NoSuchKernel for one that does not) and be a Python kernel."""
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager, NoSuchKernel

    if not kernel_name:
        raise ValueError("No kernel name found in notebook and no override provided.")
    # "python" is jupyter_client's alias for the native kernel (its KernelManager maps it).
    name = NATIVE_KERNEL_NAME if kernel_name == "python" else kernel_name
    spec = KernelSpecManager().get_kernel_spec(name)  # NoSuchKernel when missing
    language = (spec.language or "").lower()
    if language != "python":
        raise NoSuchKernel(
            f"{kernel_name} (a {spec.language} kernel: the kiln engine runs Python notebooks; "
            "use papermill's default engine for this one)"
        )


class KilnEngine(Engine):
    """Runs a papermill job as a Kiln pipeline on Dask."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        input_path: str | None = None,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        execution_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - KNOWN_OPTIONS)
        if unknown:
            raise PapermillException(
                f"the kiln engine does not support the option(s) {', '.join(unknown)}"
            )
        check_kernel(kernel_name)
        timeout = execution_timeout or kwargs.get("timeout")
        notebook_path = _notebook_path(input_path)
        run_nb = contract.run_notebook_from(nb_man.nb, _saved_format(notebook_path))
        spec, run_nb = _compile(run_nb, notebook_path)
        follower = _CellFollower(nb_man, run_nb, log_output, stdout_file, stderr_file)
        started = time.time()
        run = None
        if spec is not None and spec["tasks"]:
            scheduler = kwargs.get("scheduler") or os.environ.get("DASK_SCHEDULER_ADDRESS")
            run = _run(
                spec, run_nb, notebook_path, follower, scheduler, timeout, kwargs.get("working_dir")
            )
        results: dict[int, contract.CellResult] = {}
        task_errors: dict[int, dict[str, Any]] = {}
        if run is not None and run.output_notebook:
            with open(run.output_notebook, encoding="utf-8") as f:
                results = contract.cell_results(json.load(f), run_nb)
            task_errors = _errors_outside_cells(run, spec or {}, run_nb, results)
        failed = contract.apply_results(nb_man, run_nb, results, started, time.time(), task_errors)
        if run is not None and spec is not None:
            _show_metrics_cell(nb_man, run, spec)
        if run is not None:
            nb_man.nb.metadata["kiln"] = {
                "run_id": run.run_id,
                "pipeline": run.pipeline,
                "version": run.version,
                "status": run.status,
                "output_notebook": run.output_notebook,
                **monitoring_metadata(run),
            }
        if failed is not None and timeout and _timed_out(run, failed, run_nb):
            _as_nbclient_timeout(nb_man, failed, timeout)


def _show_metrics_cell(nb_man: Any, run: Any, spec: Mapping[str, Any]) -> None:
    """The metrics cell gets the run notebook's outputs for it (values, verdicts, and a
    CheckFailed error when a check failed, so that papermill raises as for a failed cell)."""
    where = (spec.get("metrics_cell") or {}).get("cell_id")
    if not where or not run.output_notebook:
        return
    with open(run.output_notebook, encoding="utf-8") as f:
        ran = next((c for c in json.load(f)["cells"] if c.get("id") == where), None)
    cell = next((c for c in nb_man.nb.cells if c.get("id") == where), None)
    if ran is None or cell is None:
        return
    cell.outputs = nbformat.from_dict(ran.get("outputs") or [])
    cell.metadata["kiln"] = ran.get("metadata", {}).get("kiln", {})


def _run(
    spec: dict[str, Any],
    run_nb: contract.RunNotebook,
    notebook_path: Path,
    follower: _CellFollower,
    scheduler: str | None,
    timeout: Any,
    working_dir: str | None = None,
) -> Any:
    from compiler.lineage.defaults import ENV_URL
    from compiler.ops.run import prepare_run, run_notebook

    # As with papermill's default engine, the notebook runs in the working folder (`--cwd`,
    # else the caller's); Kiln's cache, lineage and run notebooks stay in `.kiln/` beside it.
    workdir = Path(working_dir) if working_dir else None
    kiln_dir = (workdir or notebook_path.parent) / ".kiln"
    kiln_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_run(notebook_path, spec=spec)  # the injected values are the defaults
    return run_notebook(
        prepared,
        listeners=[follower],
        scheduler=scheduler,
        working_dir=workdir or Path.cwd(),
        notebook_json=run_nb.nb,
        cell_events=True,  # workers report each cell: saves, --log-output
        cell_timeout=float(timeout) if timeout else None,
        store_url=str(kiln_dir),
        lineage_db=os.environ.get(ENV_URL) or f"sqlite:///{kiln_dir / 'lineage.db'}",
        output_notebook=kiln_dir / "runs" / prepared.run_id / notebook_path.name,
    )


def _compile(
    run_nb: contract.RunNotebook, notebook_path: Path
) -> tuple[dict[str, Any] | None, contract.RunNotebook]:
    """Compile the run notebook; a cell with a syntax error ends it there (papermill runs the
    cells before it). Other compile errors (bad tags, cycles) refuse the run."""
    from compiler.compile.api import compile_notebook_json

    while True:
        result = compile_notebook_json(dict(run_nb.nb), notebook_path.name, str(notebook_path))
        if result.spec is not None:
            return result.spec, run_nb
        errors = [d for d in result.diagnostics if d.severity == "error"]
        broken = sorted(
            d.cell_index for d in errors if d.code == "syntax-error" and d.cell_index is not None
        )
        if broken:
            cell = run_nb.nb["cells"][broken[0]]
            output = contract.syntax_error_output(contract._text(cell.get("source")))
            if output is not None:
                run_nb = run_nb.truncated_before(broken[0], output)
                if not run_nb.nb["cells"]:
                    return None, run_nb
                continue
        shown = "\n".join(d.render() for d in errors)
        raise PapermillException(f"kiln could not compile {notebook_path.name}:\n{shown}")


def _errors_outside_cells(
    run: Any,
    spec: dict[str, Any],
    run_nb: contract.RunNotebook,
    results: dict[int, contract.CellResult],
) -> dict[int, dict[str, Any]]:
    """A failed task whose failure no cell shows (its worker died, it was stopped past its
    timeout in code that cannot be interrupted): blamed on its first cell that did not finish."""
    errors: dict[int, dict[str, Any]] = {}
    by_name = {t["name"]: t for t in spec.get("tasks", [])}
    for task in run.tasks:
        if task.status != "failed" or not task.error:
            continue
        cells = [run_nb.origin[c["cell_index"]] for c in by_name[task.name].get("code", [])]
        if any(results.get(i) and results[i].status == "error" for i in cells):
            continue
        blamed = next((i for i in cells if not results.get(i) or results[i].status != "ok"), None)
        if blamed is not None:
            errors[blamed] = {
                "output_type": "error",
                "ename": task.error.get("ename") or "Error",
                "evalue": task.error.get("evalue") or "",
                "traceback": list(task.error.get("traceback") or []),
            }
    return errors


def _as_nbclient_timeout(nb_man: Any, index: int, timeout: Any) -> None:
    """What papermill's default engine leaves at a cell past --execution-timeout: nbclient
    interrupts the kernel (the cell shows a KeyboardInterrupt and stays `completed`) and raises
    CellTimeoutError, which papermill passes on."""
    from nbclient.exceptions import CellTimeoutError

    cell = nb_man.nb.cells[index]
    cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"]
    cell.outputs.append(
        contract.as_node(
            {
                "output_type": "error",
                "ename": "KeyboardInterrupt",
                "evalue": "",
                "traceback": [f"KeyboardInterrupt: the cell ran past {timeout:g} s"],
            }
        )
    )
    cell.metadata.papermill.update(status="completed", exception=False)
    nb_man.nb.metadata.papermill["exception"] = None
    raise CellTimeoutError.error_from_timeout_and_cell("Cell execution timed out", timeout, cell)


def _timed_out(run: Any, failed: int, run_nb: contract.RunNotebook) -> bool:
    cell_index = next((i for i, o in enumerate(run_nb.origin) if o == failed), None)
    for task in getattr(run, "tasks", []):
        error = task.error or {}
        if error.get("reason") == "timeout" and error.get("cell_index") in (None, cell_index):
            return True
    return False


class _CellFollower:
    """Follows the run cell by cell (the workers' "cell" events): papermill's cell_start and
    cell_complete (which save the output notebook), --log-output, --stdout-file/--stderr-file."""

    def __init__(
        self,
        nb_man: Any,
        run_nb: contract.RunNotebook,
        log_output: bool,
        stdout_file: Any,
        stderr_file: Any,
    ):
        self.nb_man = nb_man
        self.run_nb = run_nb
        self.log_output = log_output
        self.stdout_file = stdout_file
        self.stderr_file = stderr_file
        self.logger = logging.getLogger("papermill")

    def __call__(self, event: Mapping[str, Any]) -> None:
        if event.get("type") != "cell":
            return
        record = event.get("cell") or {}
        run_index = record.get("cell_index")
        if not isinstance(run_index, int) or run_index >= len(self.run_nb.origin):
            return
        index = self.run_nb.origin[run_index]
        cell = self.nb_man.nb.cells[index]
        if event.get("status") == "running":
            self.nb_man.cell_start(cell, index)
            return
        cell.outputs = [contract.as_node(o) for o in record.get("outputs") or []]
        for output in cell.outputs:
            self._log(output)
        if record.get("status") == "error":
            self.nb_man.cell_exception(cell, index)
        self.nb_man.cell_complete(cell, index)

    def _log(self, output: dict[str, Any]) -> None:
        """As papermill's PapermillNotebookClient.log_output_message."""
        if output.get("output_type") == "stream":
            content = contract._text(output.get("text"))
            if output.get("name") == "stdout":
                if self.log_output:
                    self.logger.info(content)
                if self.stdout_file:
                    self.stdout_file.write(content)
                    self.stdout_file.flush()
            elif output.get("name") == "stderr":
                if self.log_output:
                    self.logger.warning(content)
                if self.stderr_file:
                    self.stderr_file.write(content)
                    self.stderr_file.flush()
        elif self.log_output and "text/plain" in (output.get("data") or {}):
            self.logger.info(contract._text(output["data"]["text/plain"]))
