"""A user's session: write a tagged notebook, `kiln run` it, edit it, run it again."""

from __future__ import annotations

import json

import nbformat
import pytest

from tests.nbutil import make_notebook

pytestmark = pytest.mark.timeout(180)

api = pytest.importorskip("compiler.compile.api")
cli = pytest.importorskip("compiler.cli.main")


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


def _by_task(output_notebook):
    out = nbformat.read(output_notebook, as_version=4)
    return {
        c.metadata["kiln"]["task"]: "".join(o.get("text", "") for o in c.outputs)
        for c in out.cells
        if "kiln" in c.metadata
    }


def test_parameter_defaults_computed_by_code_are_evaluated_once_per_run(
    tmp_path, capsys, dask_scheduler_address
):
    (tmp_path / "offset.txt").write_text("1")
    notebook = make_notebook(
        tmp_path / "dated.ipynb",
        [
            ("import datetime\nimport uuid", ["setup"]),
            (
                "start = datetime.date(2026, 1, 1)\n"
                "run_date = start + datetime.timedelta(days=int(open('offset.txt').read()))\n"
                "batch = uuid.uuid4().hex\n"
                "limit = 10",
                ["parameters"],
            ),
            ("print(run_date.isoformat(), limit)", ["task:stamp"]),
            ("first = batch", ["task:a"]),
            ("second = batch", ["task:b"]),
            ("print('one batch:', first == second)", ["task:compare"]),
        ],
    )
    scheduler = ["--scheduler", dask_scheduler_address]
    code, summary, err = _kiln_run(capsys, notebook, *scheduler)
    assert code == 0, err
    printed = _by_task(summary["output_notebook"])
    assert printed["stamp"] == "2026-01-02 10\n"  # evaluated in the notebook's folder
    assert printed["compare"] == "one batch: True\n"  # every task saw the same value
    assert summary["parameters"]["limit"] == 10

    # A new run draws a new batch (its readers rerun); the date did not change.
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler)
    assert _statuses(summary) == {"stamp": "cached", "a": "done", "b": "done", "compare": "done"}

    # The date's inputs changed: its reader reruns with the new value.
    (tmp_path / "offset.txt").write_text("5")
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler)
    assert _statuses(summary)["stamp"] == "done"
    assert _by_task(summary["output_notebook"])["stamp"] == "2026-01-06 10\n"

    # A value given with -p wins and is not computed (YAML reads it as a date).
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler, "-p", "run_date", "2025-05-05")
    assert code == 0
    assert _by_task(summary["output_notebook"])["stamp"] == "2025-05-05 10\n"


def test_a_failing_parameters_cell_stops_the_run_before_it_starts(
    tmp_path, capsys, dask_scheduler_address
):
    notebook = make_notebook(
        tmp_path / "params.ipynb",
        [
            ("import json", ["setup"]),
            ("n = 3\nconfig = json.load(open('missing.json'))", ["parameters"]),
            ("size = n * len(config)", ["task:size"]),
        ],
    )
    code, summary, err = _kiln_run(capsys, notebook, "--scheduler", dask_scheduler_address)
    assert code == 2 and summary is None
    assert "parameters cell, line 2 failed" in err
    assert "FileNotFoundError" in err and "missing.json" in err


def test_the_output_notebook_is_the_notebook_as_it_was_when_the_run_started(
    tmp_path, capsys, dask_scheduler_address
):
    # The task itself saves an edit to the notebook, as a user would in JupyterLab mid-run.
    notebook = make_notebook(
        tmp_path / "edited.ipynb",
        [
            "# md: # Report",
            (
                "import json\n"
                "nb = json.load(open('edited.ipynb'))\n"
                "nb['cells'][0]['source'] = '# Edited during the run'\n"
                "nb['cells'].append({'cell_type': 'markdown', 'id': 'new', 'metadata': {}, "
                "'source': 'added'})\n"
                "json.dump(nb, open('edited.ipynb', 'w'))\n"
                "print('saved')",
                ["task:save"],
            ),
        ],
    )
    code, summary, err = _kiln_run(capsys, notebook, "--scheduler", dask_scheduler_address)
    assert code == 0, err
    assert "Edited during the run" in notebook.read_text()  # the edit did happen
    out = nbformat.read(summary["output_notebook"], as_version=4)
    assert [c.source for c in out.cells][0] == "# Report"
    assert len(out.cells) == 2
    assert out.cells[1].outputs[0]["text"] == "saved\n"


def test_editing_a_helper_module_beside_the_notebook_reruns_the_tasks_that_import_it(
    tmp_path, capsys, dask_scheduler_address
):
    (tmp_path / "helpers.py").write_text("def scale(x):\n    return x * 2\n")
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("OFFSET = 1\n")
    notebook = make_notebook(
        tmp_path / "uses_helpers.ipynb",
        [
            ("from helpers import scale", ["setup"]),
            ("y = scale(3)\nprint('scaled', y)", ["task:scaled"]),
            ("import mylib\nz = mylib.OFFSET\nprint('offset', z)", ["task:offset"]),
            ("import json\nplain = json.dumps([1])", ["task:plain"]),
        ],
    )
    # The same long-lived cluster for every run, as with `--scheduler` or the server.
    scheduler = ["--scheduler", dask_scheduler_address]
    code, summary, err = _kiln_run(capsys, notebook, *scheduler)
    assert code == 0, err
    assert _by_task(summary["output_notebook"])["scaled"] == "scaled 6\n"

    (tmp_path / "helpers.py").write_text("def scale(x):\n    return x * 3\n")
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler)
    assert _statuses(summary) == {"scaled": "done", "offset": "cached", "plain": "cached"}
    assert _by_task(summary["output_notebook"])["scaled"] == "scaled 9\n"  # not the old code

    (tmp_path / "mylib" / "__init__.py").write_text("OFFSET = 5\n")
    (tmp_path / "mylib" / "__pycache__").mkdir(exist_ok=True)
    code, summary, _ = _kiln_run(capsys, notebook, *scheduler)
    assert _statuses(summary) == {"scaled": "cached", "offset": "done", "plain": "cached"}
    assert _by_task(summary["output_notebook"])["offset"] == "offset 5\n"


def test_an_nbformat_3_notebook_runs_like_any_other(tmp_path, capsys, dask_scheduler_address):
    from nbformat import v3

    old = v3.new_notebook(
        worksheets=[
            v3.new_worksheet(
                cells=[
                    v3.new_code_cell(input="values = [1, 2, 3]", metadata={"tags": ["task:load"]}),
                    v3.new_code_cell(input="print(sum(values))", metadata={"tags": ["task:total"]}),
                ]
            )
        ]
    )
    path = tmp_path / "old.ipynb"
    path.write_text(nbformat.writes(old, version=3))
    code, summary, err = _kiln_run(capsys, path, "--scheduler", dask_scheduler_address)
    assert code == 0, err
    assert _by_task(summary["output_notebook"])["total"] == "6\n"
    again = _kiln_run(capsys, path, "--scheduler", dask_scheduler_address)[1]
    assert set(_statuses(again).values()) == {"cached"}  # the same spec on every read
