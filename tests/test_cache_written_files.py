"""A task whose written files are missing or changed since its cached run runs again.

Users run Kiln (and papermill --engine kiln) for side effects: a report file, an export. A
second run in the same folder used to serve such a task from the cache even after its file was
deleted, so the file never came back.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.nbutil import make_notebook


def _notebook(folder: Path) -> Path:
    return make_notebook(
        folder / "report.ipynb",
        [
            ("rows = [3, 1, 2]", ["task:load"]),
            (
                "from pathlib import Path\n"
                "Path('summary.txt').write_text(f'total {sum(rows)}\\n')\n"
                "written = True",
                ["task:export"],
            ),
        ],
    )


def _run(notebook: Path, scheduler: str):
    from compiler.compile.api import compile_notebook
    from compiler.runtime import run_pipeline

    spec = compile_notebook(notebook).spec
    assert spec is not None
    assert spec["tasks"][1]["datasets"]["writes"] == ["summary.txt"]
    return run_pipeline(spec, notebook_path=notebook, scheduler=scheduler)


def test_deleted_output_file_makes_its_task_run_again(tmp_path: Path, dask_scheduler_address):
    notebook = _notebook(tmp_path)
    first = _run(notebook, dask_scheduler_address)
    assert [t.status for t in first.tasks] == ["done", "done"]
    assert (tmp_path / "summary.txt").read_text() == "total 6\n"

    unchanged = _run(notebook, dask_scheduler_address)
    assert [t.status for t in unchanged.tasks] == ["cached", "cached"]

    (tmp_path / "summary.txt").unlink()
    again = _run(notebook, dask_scheduler_address)
    assert again.task("load").status == "cached"
    assert again.task("export").status == "done"
    assert "summary.txt" in (again.task("export").cache_note or "")
    assert (tmp_path / "summary.txt").read_text() == "total 6\n"


def test_changed_output_file_makes_its_task_run_again(tmp_path: Path, dask_scheduler_address):
    notebook = _notebook(tmp_path)
    _run(notebook, dask_scheduler_address)
    summary = tmp_path / "summary.txt"
    summary.write_text("edited by hand\n")
    stat = summary.stat()
    os.utime(summary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later save
    again = _run(notebook, dask_scheduler_address)
    assert again.task("export").status == "done"
    assert summary.read_text() == "total 6\n"
