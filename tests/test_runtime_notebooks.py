"""A user's session: write a tagged notebook, `kiln run` it, edit it, run it again."""

from __future__ import annotations

import json

import nbformat
import pytest

from tests.nbutil import make_notebook

pytestmark = pytest.mark.timeout(180)

api = pytest.importorskip("compiler.api")
cli = pytest.importorskip("compiler.cli")


def _sales_notebook(
    folder, scale_source="%time doubled = sales.amount * factor\nint(doubled.sum())"
):
    return make_notebook(
        folder / "sales.ipynb",
        [
            "# md: # Sales report",
            ("import pandas as pd", ["setup"]),
            ("factor = 2", ["parameters"]),
            ("sales = pd.read_csv('sales.csv')\nprint(len(sales), 'rows')", ["task:load"]),
            (scale_source, ["task:scale"]),
            ("top = int(doubled.max())\ntop", ["task:top"]),
            ("count = len(sales)\ncount", ["task:count"]),
            ("sales.describe()", ["skip"]),
        ],
    )


def _kiln_run(capsys, notebook, *options):
    code = cli.main(["run", str(notebook), "--json", *options])
    captured = capsys.readouterr()
    summary = json.loads(captured.out) if captured.out.strip() else None
    return code, summary, captured.err


def _statuses(summary):
    return {t["name"]: t["status"] for t in summary["tasks"]}


def test_run_edit_and_rerun_a_notebook(tmp_path, capsys, dask_scheduler_address):
    (tmp_path / "sales.csv").write_text("amount\n3\n4\n5\n")
    notebook = _sales_notebook(tmp_path)
    scheduler = ["--scheduler", dask_scheduler_address]

    code, summary, err = _kiln_run(capsys, notebook, *scheduler, "-p", "factor", "10")
    assert code == 0, err
    assert set(_statuses(summary).values()) == {"done"}
    out = nbformat.read(summary["output_notebook"], as_version=4)
    nbformat.validate(out)
    by_id = {c.get("id"): c for c in out.cells}
    assert by_id["c3"].outputs[0]["text"] == "3 rows\n"
    assert "Wall time" in by_id["c4"].outputs[0]["text"]
    assert by_id["c4"].outputs[-1]["data"]["text/plain"] == "120"
    assert by_id["c5"].outputs[0]["data"]["text/plain"] == "50"
    assert by_id["c5"].metadata.kiln["task"] == "top"
    assert by_id["c7"].outputs == [] and "kiln" not in by_id["c7"].metadata  # skip cell
    assert out.metadata.kiln["parameters"] == {"factor": 10}

    # Nothing changed: nothing runs.
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler, "-p", "factor", "10")
    assert code == 0 and set(_statuses(summary).values()) == {"cached"}

    # Edit one task: it and its downstream rerun, nothing upstream or beside it.
    notebook = _sales_notebook(tmp_path, "doubled = sales.amount * factor * 2\nint(doubled.sum())")
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler, "-p", "factor", "10")
    assert _statuses(summary) == {
        "load": "cached",
        "scale": "done",
        "top": "done",
        "count": "cached",
    }

    # New data in the CSV: its reader and everything after it rerun.
    (tmp_path / "sales.csv").write_text("amount\n3\n4\n5\n6\n")
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler, "-p", "factor", "10")
    assert set(_statuses(summary).values()) == {"done"}


def test_a_failing_notebook_exits_1_and_points_at_the_cell(
    tmp_path, capsys, dask_scheduler_address
):
    notebook = make_notebook(
        tmp_path / "broken.ipynb",
        [
            ("values = [1, 2, 3]", ["task:make"]),
            ("print('averaging')\nmean = sum(values) / (len(values) - 3)", ["task:average"]),
            ("size = len(values)", ["task:size"]),
        ],
    )
    code, summary, err = _kiln_run(capsys, notebook, "--scheduler", dask_scheduler_address)
    assert code == 1
    assert _statuses(summary) == {"make": "done", "average": "failed", "size": "done"}
    error = summary["tasks"][1]["error"]
    assert (error["cell_index"], error["line"], error["ename"]) == (1, 2, "ZeroDivisionError")
    assert "average: FAILED" in err
