"""Every magic a kernel accepts behaves in a Kiln task as it does in a kernel.

One notebook, one task per magic, `%matplotlib inline` in its setup cell (as in many real
notebooks: it ran in every task and failed them all with "Implement enable_gui in a
subclass"), compiled and run on the session's real LocalCluster as `kiln run` does; each test
reads its task's cell in the output notebook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.nbutil import make_notebook

TASKS: dict[str, str] = {
    "inline": "fig, ax = plt.subplots()\nax.plot([1, 3, 2])\nplt.show()\nx_inline = 1",
    "agg": "%matplotlib agg\nimport matplotlib\nprint(matplotlib.get_backend())\nx_agg = 1",
    # No reset here: the executor puts %config back after each task, so a later figure test
    # (test_runtime.py) sees PNG again, as in a fresh kernel.
    "config": "%config InlineBackend.figure_formats = ['svg']\nplt.plot([1, 2])\nplt.show()",
    "env": "%env KILN_MAGIC_DEMO=42\nimport os\nprint(os.environ['KILN_MAGIC_DEMO'])",
    "cd": "import os\nos.makedirs('sub', exist_ok=True)\n%cd sub\nprint(os.getcwd())",
    "autoreload": "%load_ext autoreload\n%autoreload 2\nimport helper\nprint(helper.VALUE)",
    "time": "%time total = sum(range(10))\n%timeit -n1 -r1 sum(range(10))\nprint(total)",
    "capture": "%%capture captured\nprint('hidden from the notebook')",
    "writefile": "%%writefile written.txt\nhello from writefile",
    "bash": '%%bash\necho "from bash in $(basename $PWD)"',
    "gui": "%matplotlib qt",
}


@pytest.fixture(scope="module")
def magic_run(tmp_path_factory: pytest.TempPathFactory, dask_scheduler_address: str) -> Any:
    from compiler.compile.api import compile_notebook
    from compiler.runtime import run_pipeline

    folder = tmp_path_factory.mktemp("magics")
    (folder / "helper.py").write_text("VALUE = 'from helper'\n")
    cells: list[Any] = [("%matplotlib inline\nimport matplotlib.pyplot as plt", ["setup"])]
    cells += [(source, [f"task:{name}"]) for name, source in TASKS.items()]
    notebook = make_notebook(folder / "magics.ipynb", cells)
    result = compile_notebook(notebook)
    assert result.spec is not None, [d.render() for d in result.diagnostics]
    run = run_pipeline(
        result.spec, notebook_path=notebook, scheduler=dask_scheduler_address, use_cache=False
    )
    nb = nbformat.read(run.output_notebook, as_version=4)
    by_task = {c.metadata["kiln"]["task"]: c for c in nb.cells if "kiln" in c.metadata}
    return folder, run, by_task


def _text(cell: Any, name: str = "stdout") -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == name)


def _status(run: Any, task: str) -> str:
    return str(run.task(task).status)


def test_matplotlib_inline_in_setup_shows_figures(magic_run):
    _, run, cells = magic_run
    assert _status(run, "inline") == "done"
    assert [o.output_type for o in cells["inline"].outputs] == ["display_data"]
    assert cells["inline"].outputs[0].data["image/png"]


def test_matplotlib_other_backend(magic_run):
    _, run, cells = magic_run
    assert _status(run, "agg") == "done"
    assert _text(cells["agg"]).strip().lower() == "agg"


def test_matplotlib_gui_backend_fails_the_task_clearly(magic_run):
    # A worker has no display. Without Qt installed this is the kernel's own ImportError; with
    # it, Kiln's shell refuses the event loop with a message saying why.
    _, run, cells = magic_run
    assert _status(run, "gui") == "failed"
    error = run.task("gui").error
    assert "Qt binding" in error["evalue"] or "without one" in error["evalue"]
    assert "enable_gui" not in error["evalue"]


def test_config_magic(magic_run):
    _, run, cells = magic_run
    assert _status(run, "config") == "done"
    assert "image/svg+xml" in cells["config"].outputs[0].data


def _inline_figure_formats() -> list[str] | None:
    """On a worker: the figure formats the next task's figures get, or None if no task has
    drawn one there."""
    from matplotlib_inline.config import InlineBackend

    return sorted(InlineBackend.instance().figure_formats) if InlineBackend.initialized() else None


def test_config_magic_ends_with_its_task(magic_run, dask_scheduler_address):
    # The svg task ran on one of the cluster's workers; every worker draws PNG again after it,
    # as the next notebook's fresh kernel would.
    from distributed import Client

    with Client(dask_scheduler_address) as client:
        formats = client.run(_inline_figure_formats)
    assert formats and all(f in (None, ["png"]) for f in formats.values()), formats
    assert any(f == ["png"] for f in formats.values())


def test_env_magic_sets_the_variable_for_the_task_only(magic_run):
    _, run, cells = magic_run
    assert _text(cells["env"]) == "env: KILN_MAGIC_DEMO=42\n42\n"
    assert "KILN_MAGIC_DEMO" not in os.environ


def test_cd_magic(magic_run):
    folder, run, cells = magic_run
    assert _text(cells["cd"]).splitlines() == [str(folder / "sub")] * 2


def test_autoreload_extension(magic_run):
    _, run, cells = magic_run
    assert _status(run, "autoreload") == "done"
    assert _text(cells["autoreload"]) == "from helper\n"


def test_time_and_timeit(magic_run):
    _, run, cells = magic_run
    shown = _text(cells["time"])
    assert "Wall time:" in shown and "per loop" in shown and shown.endswith("45\n")


def test_capture_cell_magic_hides_output(magic_run):
    _, run, cells = magic_run
    assert _status(run, "capture") == "done"
    assert cells["capture"].outputs == []


def test_writefile_cell_magic(magic_run):
    folder, run, cells = magic_run
    assert (folder / "written.txt").read_text() == "hello from writefile\n"
    assert _text(cells["writefile"]) == "Writing written.txt\n"


def test_bash_cell_magic_runs_in_the_notebook_folder(magic_run):
    folder, run, cells = magic_run
    assert _text(cells["bash"]) == f"from bash in {Path(folder).name}\n"


def test_each_notebook_configures_logging_and_warnings_afresh(tmp_path, dask_scheduler_address):
    """A worker serves notebook after notebook; a kernel is new for each. Three runs on two
    workers put two on one worker: each still shows its log line and its warning (a later
    logging.basicConfig() was a no-op writing into an earlier task's outputs, and a warning
    shown once per process was not shown again)."""
    from compiler.compile.api import compile_notebook
    from compiler.runtime import run_pipeline

    notebook = make_notebook(
        tmp_path / "logs.ipynb",
        [
            (
                "import logging, warnings\n"
                "logging.basicConfig(level=logging.INFO)\n"
                "logging.getLogger('job').info('job started')\n"
                "warnings.warn('deprecated input')",
                ["task:job"],
            )
        ],
    )
    spec = compile_notebook(notebook).spec
    for _ in range(3):
        run = run_pipeline(
            spec, notebook_path=notebook, scheduler=dask_scheduler_address, use_cache=False
        )
        cell = nbformat.read(run.output_notebook, as_version=4).cells[0]
        shown = _text(cell, "stderr")
        assert "INFO:job:job started" in shown and "deprecated input" in shown
