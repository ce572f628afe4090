"""papermill's options with `--engine kiln`: each honoured, or refused with a clear message.

The CLI cases run `papermill` as a user's cron job would (exit status, messages); the others
call papermill.execute_notebook in this process. All use the session's LocalCluster (the
engine reads DASK_SCHEDULER_ADDRESS, as a deployment would set it).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

from tests.nbutil import make_notebook

BIN = Path(sys.executable).parent


def papermill_cli(*args: str, cwd: Path, scheduler: str, stdin: str | None = None):
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": scheduler}
    return subprocess.run(
        [str(BIN / "papermill"), *args, "--engine", "kiln", "--no-progress-bar"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        input=stdin,
        timeout=300,
    )


def execute(notebook: Path, output: Path, scheduler: str, **options: Any) -> Any:
    return papermill.execute_notebook(
        str(notebook),
        str(output),
        engine_name="kiln",
        progress_bar=False,
        scheduler=scheduler,
        **options,
    )


def stdout_of(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """A tagged notebook: parameters, two tasks."""
    return make_notebook(
        tmp_path / "report.ipynb",
        [
            ("region = 'north'\nlimit = 3", ["parameters"]),
            ("rows = list(range(limit))\nprint('rows', len(rows))", ["task:load"]),
            ("print(region, sum(rows))", ["task:summarize"]),
        ],
    )


def test_cli_exit_status_of_a_clean_sys_exit_and_of_a_failure(tmp_path, dask_scheduler_address):
    make_notebook(tmp_path / "stops.ipynb", ["import sys", "sys.exit(0)", "print('not here')"])
    make_notebook(tmp_path / "fails.ipynb", ["x = 1", "raise ValueError(f'bad row {x}')", "y = 2"])
    stops = papermill_cli("stops.ipynb", "o1.ipynb", cwd=tmp_path, scheduler=dask_scheduler_address)
    assert stops.returncode == 0, stops.stderr
    fails = papermill_cli("fails.ipynb", "o2.ipynb", cwd=tmp_path, scheduler=dask_scheduler_address)
    assert fails.returncode == 1
    assert "ValueError: bad row 1" in fails.stderr
    out = nbformat.read(tmp_path / "o2.ipynb", as_version=4)
    statuses = [c.metadata.papermill["status"] for c in out.cells if c.cell_type == "code"]
    assert statuses == ["completed", "failed", "pending"]


def test_cli_syntax_error_runs_the_cells_before_it(tmp_path, dask_scheduler_address):
    make_notebook(tmp_path / "typo.ipynb", ["print('before')", "print 'py2'", "print('after')"])
    proc = papermill_cli("typo.ipynb", "out.ipynb", cwd=tmp_path, scheduler=dask_scheduler_address)
    assert proc.returncode == 1
    assert "SyntaxError" in proc.stderr and "kiln could not compile" not in proc.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert stdout_of(code[0]) == "before\n"
    assert code[1].outputs[0].ename == "SyntaxError"
    assert code[2].metadata.papermill["status"] == "pending"
    assert "papermill-error-cell-tag" in out.cells[0].metadata.tags  # papermill's banner


def test_kiln_run_still_refuses_broken_notebooks_and_unknown_parameters(tmp_path, report):
    make_notebook(tmp_path / "typo.ipynb", ["print 'py2'"])
    kiln = [sys.executable, "-m", "compiler.cli", "run"]
    broken = subprocess.run([*kiln, "typo.ipynb"], capture_output=True, text=True, cwd=tmp_path)
    assert broken.returncode != 0 and "syntax error" in broken.stderr + broken.stdout
    unknown = subprocess.run(
        [*kiln, "report.ipynb", "-p", "colour", "red"], capture_output=True, text=True, cwd=tmp_path
    )
    assert unknown.returncode != 0 and "unknown parameter 'colour'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_undeclared_parameter_is_injected_and_read_by_the_task(tmp_path, dask_scheduler_address):
    make_notebook(
        tmp_path / "nb.ipynb",
        [("limit = 3", ["parameters"]), ("print('owner', owner, limit)", ["task:show"])],
    )
    proc = papermill_cli(
        "nb.ipynb", "out.ipynb", "-p", "owner", "ops", "-p", "limit", "5",
        cwd=tmp_path, scheduler=dask_scheduler_address,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Passed unknown parameter: owner" in proc.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert stdout_of(out.cells[2]) == "owner ops 5\n"


def test_inject_paths_nan_inf_raw_and_yaml_parameters(tmp_path, dask_scheduler_address):
    make_notebook(
        tmp_path / "nb.ipynb",
        [
            ("x = 0.0\ny = 0.0\nlabel = ''\nsizes = []", ["parameters"]),
            ("print(x, y, repr(label), sizes)", ["task:show"]),
            ("import os\nprint(os.path.basename(PAPERMILL_INPUT_PATH))", ["task:paths"]),
        ],
    )
    proc = papermill_cli(
        "nb.ipynb", "out.ipynb", "-p", "x", "nan", "-p", "y", "inf", "-r", "label", "007",
        "-y", "sizes: [1, 2]", "--inject-paths",
        cwd=tmp_path, scheduler=dask_scheduler_address,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    tasks = [c for c in out.cells if "kiln" in c.metadata]
    assert stdout_of(tasks[0]) == "nan inf '007' [1, 2]\n"
    assert stdout_of(tasks[1]) == "nb.ipynb\n"


def test_stdin_notebook_and_stdout_file_and_stderr_file(tmp_path, report, dask_scheduler_address):
    text = report.read_text()
    work = tmp_path / "work"
    work.mkdir()
    proc = papermill_cli(
        "-", "out.ipynb", "-p", "limit", "4", "--stdout-file", "out.txt",
        "--stderr-file", "err.txt",
        cwd=work, scheduler=dask_scheduler_address, stdin=text,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = nbformat.read(work / "out.ipynb", as_version=4)
    assert stdout_of(out.cells[3]) == "north 6\n"
    assert (work / "out.txt").read_text().splitlines() == ["rows 4", "north 6"]
    # click opens --stderr-file lazily: nothing written, no file (the default engine's too).
    assert not (work / "err.txt").exists() or (work / "err.txt").read_text() == ""
    assert (work / ".kiln").is_dir()  # the working folder stands in for the notebook's


def test_cwd_runs_tasks_there_and_keeps_kiln_beside_the_notebook(tmp_path, dask_scheduler_address):
    make_notebook(
        tmp_path / "nbs" / "reader.ipynb",
        ["from pathlib import Path\nprint(Path('input.txt').read_text())"],
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.txt").write_text("from the data folder")
    proc = papermill_cli(
        "nbs/reader.ipynb", "out.ipynb", "--cwd", "data",
        cwd=tmp_path, scheduler=dask_scheduler_address,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert stdout_of(out.cells[0]) == "from the data folder\n"
    assert (tmp_path / "nbs" / ".kiln").is_dir() and not (tmp_path / "data" / ".kiln").exists()


def test_log_output_and_saves_arrive_while_the_run_goes_on(tmp_path, dask_scheduler_address):
    """The second cell waits until the first cell's output has been logged by papermill and
    saved into the output notebook: it could not see either if they came only at the end."""
    output = tmp_path / "out.ipynb"
    seen = tmp_path / "logged.txt"
    make_notebook(
        tmp_path / "slow.ipynb",
        [
            "print('first cell done')",
            "import json, time\n"
            "from pathlib import Path\n"
            "for _ in range(600):\n"
            f"    saved = Path({str(output)!r}).read_text() if Path({str(output)!r}).exists()"
            " else ''\n"
            f"    if Path({str(seen)!r}).exists() and 'first cell done' in saved:\n"
            "        break\n"
            "    time.sleep(0.05)\n"
            f"print('logged', Path({str(seen)!r}).exists(), 'saved', 'first cell done' in saved)",
        ],
    )

    class Witness(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "first cell done" in record.getMessage():
                seen.write_text("yes")

    logger = logging.getLogger("papermill")
    handler = Witness()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        nb = execute(tmp_path / "slow.ipynb", output, dask_scheduler_address, log_output=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert stdout_of(nb.cells[1]) == "logged True saved True\n"


def test_kernel_must_be_an_installed_python_kernel(tmp_path, dask_scheduler_address):
    from jupyter_client.kernelspec import NoSuchKernel

    notebook = make_notebook(tmp_path / "nb.ipynb", ["print(1)"])
    with pytest.raises(NoSuchKernel, match="No such kernel named ir"):
        execute(notebook, tmp_path / "out.ipynb", dask_scheduler_address, kernel_name="ir")
    assert not (tmp_path / ".kiln").exists()  # refused before anything ran
    # "python" is jupyter_client's name for python3, as papermill's default engine takes it.
    nb = execute(notebook, tmp_path / "out.ipynb", dask_scheduler_address, kernel_name="python")
    assert stdout_of(nb.cells[0]) == "1\n"


def test_unknown_engine_option_is_refused(tmp_path, dask_scheduler_address):
    notebook = make_notebook(tmp_path / "nb.ipynb", ["print(1)"])
    with pytest.raises(papermill.PapermillException, match="does not support the option"):
        execute(notebook, tmp_path / "out.ipynb", dask_scheduler_address, kernel_env={"A": "1"})


def test_prepare_only_and_report_mode(tmp_path, report, dask_scheduler_address):
    prepared = execute(
        report, tmp_path / "prepared.ipynb", dask_scheduler_address,
        parameters={"limit": 9}, prepare_only=True,
    )  # fmt: skip
    assert "limit = 9" in prepared.cells[1].source
    assert all(not c.get("outputs") for c in prepared.cells if c.cell_type == "code")
    assert not (tmp_path / ".kiln").exists()  # nothing ran
    shown = execute(report, tmp_path / "shown.ipynb", dask_scheduler_address, report_mode=True)
    assert all(c.metadata.jupyter["source_hidden"] for c in shown.cells if c.cell_type == "code")
    assert stdout_of(shown.cells[1]) == "rows 3\n"


def test_failing_cell_is_blamed_in_a_tagged_notebook(tmp_path, dask_scheduler_address):
    """Several tasks: the failing cell gets its exception, the cells of its task before it are
    completed, the rest of its task and its downstream task stay pending, an independent task
    that ran keeps its outputs."""
    notebook = make_notebook(
        tmp_path / "tasks.ipynb",
        [
            ("rows = [1, 2, 3]", ["task:load"]),
            ("print('loaded', len(rows))", []),
            ("total = sum(rows)\nraise KeyError('region')", []),
            ("print('never')", []),
            ("print('report', total)", ["task:report"]),
            ("other = 41 + 1\nprint('other', other)", ["task:other"]),
        ],
    )
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        execute(notebook, tmp_path / "out.ipynb", dask_scheduler_address)
    assert (failure.value.ename, failure.value.evalue) == ("KeyError", "'region'")
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert [c.metadata.papermill["status"] for c in code] == [
        "completed", "completed", "failed", "pending", "pending", "completed",
    ]  # fmt: skip
    assert stdout_of(code[1]) == "loaded 3\n"
    assert [o.ename for o in code[2].outputs if o.output_type == "error"] == ["KeyError"]
    assert code[3].outputs == [] and code[4].outputs == []
    assert stdout_of(code[5]) == "other 42\n"
    assert failure.value.cell_index == 2  # in the notebook as run, before papermill's banners


def test_kiln_run_keeps_a_pre_4_5_notebook_valid(tmp_path):
    """No cell ids in nbformat < 4.5 (papermill reads such a run notebook as invalid)."""
    from compiler.runtime.notebook_output import read_notebook_json

    source = Path(papermill.__file__).parent / "tests" / "notebooks" / "nb_version_4.4.ipynb"
    (tmp_path / "old.ipynb").write_bytes(source.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "run", "old.ipynb", "-p", "var", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run_nb = next((tmp_path / ".kiln" / "runs").glob("*/old.ipynb"))
    saved = read_notebook_json(run_nb)
    assert saved["nbformat_minor"] == 4 and all("id" not in c for c in saved["cells"])
    nbformat.validate(nbformat.read(run_nb, as_version=4))
    assert "var = 2" in saved["cells"][1]["source"]


def test_notebook_node_input(tmp_path, report, dask_scheduler_address, monkeypatch):
    monkeypatch.chdir(tmp_path)
    node = nbformat.read(report, as_version=4)
    nb = papermill.execute_notebook(
        node, None, engine_name="kiln", progress_bar=False, scheduler=dask_scheduler_address
    )
    assert stdout_of(nb.cells[2]) == "north 3\n"
