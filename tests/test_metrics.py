"""Metrics across runs, checks that fail or flag a run, and drift of inputs (issue 14).

A realistic notebook (tests/notebooks/monitored_wine.ipynb: load the wine CSV, split, train a
logistic regression; a cell tagged `metrics` with check:/warn: tags) is run with `kiln run` on
the session's real LocalCluster and recorded in a real SQLite lineage store in tmp_path; the
tests read what a user reads: exit codes, messages, `kiln metrics`, `kiln drift`, the output
notebook.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest

from compiler.cli.main import main
from compiler.compile.api import compile_notebook
from compiler.compile.emit import validate_spec
from tests.nbutil import make_notebook

pytestmark = pytest.mark.timeout(300)
NOTEBOOKS = Path(__file__).parent / "notebooks"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The notebook and its data in a fresh folder, which is also the current folder: `kiln
    show RUN` and the other run commands find the folder's .kiln/lineage.db as for a user."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    shutil.copy(NOTEBOOKS / "monitored_wine.ipynb", tmp_path)
    shutil.copy(NOTEBOOKS / "data" / "wine.csv", tmp_path / "data")
    return tmp_path


def kiln(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run(capsys, project: Path, scheduler: str, *params: tuple[str, Any]) -> tuple[int, str]:
    argv = ["run", str(project / "monitored_wine.ipynb"), "--scheduler", scheduler]
    for name, value in params:
        argv += ["-p", name, str(value)]
    code, out, err = kiln(capsys, *argv)
    return code, out + err


def set_tags(notebook: Path, cell_id: str, tags: list[str]) -> None:
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if c.get("id") == cell_id)
    cell.metadata["tags"] = tags
    nbformat.write(nb, notebook)


METRICS_CELL = "c7"  # the cell tagged `metrics` in monitored_wine.ipynb
# Its metrics in the order `kiln metrics` lists them: the cell's `accuracy`, `scores`, then the
# train cell's kiln.log_metric calls (a loop over the classes, then train_rows).
DECLARED_ORDER = [
    "accuracy",
    "scores.logreg.f1",
    "recall.class_0",
    "recall.class_1",
    "recall.class_2",
    "train_rows",
]
LOAD_CELL = "c3"


# -- compiling ----------------------------------------------------------------------------------


def test_the_metrics_cell_names_metrics_and_checks_and_is_not_a_task():
    result = compile_notebook(NOTEBOOKS / "monitored_wine.ipynb")
    assert result.ok, [d.render() for d in result.diagnostics]
    spec = result.spec
    validate_spec(spec)
    assert [t["name"] for t in spec["tasks"]] == ["load", "split", "train"]
    assert {(m["name"], m["task"], m["source"]) for m in spec["metrics"]} == {
        ("accuracy", "train", "cell"),
        ("scores", "train", "cell"),
        ("train_rows", "train", "log_metric"),
    }
    train = spec["tasks"][-1]
    assert train["metrics"] == ["accuracy", "scores"]
    assert [
        (c["kind"], c["metric"], c["op"], c["threshold"], c["baseline_offset"])
        for c in spec["checks"]
    ] == [
        ("check", "accuracy", ">=", 0.5, None),
        ("check", "accuracy", ">=", None, -0.25),
        ("warn", "scores.logreg.f1", ">=", 0.8, None),
    ]
    assert spec["drift"] == [
        {"input": "raw", "task": "load", "key": "load.raw", "kind": "artifact", "threshold": 0.3}
    ]
    assert spec["metrics_cell"]["cell_id"] == METRICS_CELL


def test_kale_pipeline_metrics_notebook_compiles_with_its_own_steps_and_lists_its_metrics():
    spec = compile_notebook(NOTEBOOKS / "kale_tagged.ipynb").spec
    assert [t["name"] for t in spec["tasks"]] == ["loaddata", "transform", "train-model"]
    assert spec["metrics"] == [{"name": "peak", "task": "train-model", "source": "cell"}]
    assert spec["tasks"][-1]["metrics"] == ["peak"]
    validate_spec(spec)


def test_kale_pipeline_metrics_that_print_parameters_record_them_as_metrics(
    tmp_path: Path, dask_scheduler_address: str, capsys
):
    """Kale's own examples print pipeline parameters next to a step's result in their
    `pipeline-metrics` cell (Kale reports all of them): the parameters are metrics too, with
    the run's value; one that is not a number is a warning naming the cell and line."""
    notebook = make_notebook(
        tmp_path / "grid_sum.ipynb",
        [
            ("import numpy as np", ["imports"]),
            ("rows = 4\ncols = 3\nlabel = 'grid'", ["pipeline-parameters"]),
            (
                "grid = np.arange(rows * cols, dtype=float).reshape(rows, cols)",
                ["step:make_grid", "limit:memory:1Gi"],
            ),
            ("total = float(grid.sum())", ["prev:make_grid", "step:reduce"]),
            ("print(rows)\nprint(cols)\nprint(total)\nprint(label)", ["pipeline-metrics"]),
        ],
    )
    result = compile_notebook(notebook)
    assert result.ok, [d.render() for d in result.diagnostics]
    spec = result.spec
    validate_spec(spec)
    assert [t["name"] for t in spec["tasks"]] == ["make_grid", "reduce"]
    assert spec["metrics"] == [
        {"name": "rows", "task": None, "source": "parameter"},
        {"name": "cols", "task": None, "source": "parameter"},
        {"name": "total", "task": "reduce", "source": "cell"},
    ]
    warning = next(d for d in result.diagnostics if d.code == "metric-not-a-number")
    assert (warning.cell_index, warning.line) == (4, 4) and "'label'" in warning.message

    argv = ["run", str(notebook), "--scheduler", dask_scheduler_address, "-p", "rows", "5"]
    assert kiln(capsys, *argv)[0] == 0
    history = json.loads(kiln(capsys, "metrics", str(notebook), "--json")[1])
    assert history["metrics"] == ["rows", "cols", "total"]  # as the cell prints them
    assert history["runs"][0]["metrics"] == {"rows": 5.0, "cols": 3.0, "total": 105.0}


@pytest.mark.parametrize(
    "cell, tags, code, words",
    [
        (METRICS_CELL, ["metrics", "check:accuracy"], "bad-tag", "METRIC OP VALUE"),
        (METRICS_CELL, ["metrics", "check:accuracy>>0.8"], "bad-tag", "expected METRIC OP VALUE"),
        (METRICS_CELL, ["metrics", "check:accuracy>="], "bad-tag", "expected METRIC OP VALUE"),
        (METRICS_CELL, ["metrics", "check:accuracy>=basline-1"], "bad-tag", "baseline"),
        (LOAD_CELL, ["task:load", "check:accuracy>=0.8"], "misplaced-check", "metrics"),
        (LOAD_CELL, ["task:load", "drift:nothing<0.2"], "unknown-drift-input", "raw"),
        (LOAD_CELL, ["task:load", "drift:raw<2"], "bad-tag", "(0, 1]"),
    ],
)
def test_a_bad_check_or_drift_tag_is_an_error_naming_the_cell(
    project: Path, capsys, cell: str, tags: list[str], code: str, words: str
):
    notebook = project / "monitored_wine.ipynb"
    set_tags(notebook, cell, tags)
    result = compile_notebook(notebook)
    found = [d for d in result.diagnostics if d.code == code]
    assert found and found[0].severity == "error", [d.render() for d in result.diagnostics]
    assert found[0].cell_id == cell and words in found[0].message
    status, out, _ = kiln(capsys, "check", str(notebook))
    assert status == 1
    assert f"cell {found[0].cell_index}" in out and code in out


def test_a_check_on_a_metric_nothing_produces_is_a_warning(project: Path):
    notebook = project / "monitored_wine.ipynb"
    set_tags(notebook, METRICS_CELL, ["metrics", "check:precision>=0.9"])
    result = compile_notebook(notebook)
    assert result.ok
    warning = next(d for d in result.diagnostics if d.code == "unknown-metric")
    assert warning.cell_id == METRICS_CELL and "precision" in warning.message


def test_log_metric_outside_a_run_is_a_no_op_with_one_notice(capsys, monkeypatch):
    import kiln as kiln_module
    from compiler.runtime import monitor

    monkeypatch.setattr(monitor, "_NOTICE_SHOWN", False)  # as in a fresh kernel
    kiln_module.log_metric("accuracy", 0.9)
    kiln_module.log_metric({"f1": 0.8})
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "kiln.log_metric: not in a Kiln run, nothing recorded (accuracy=0.9); "
        "`kiln run` records metrics\n"
    )


# -- running --------------------------------------------------------------------------------


def test_three_runs_record_three_rows_of_metrics_and_a_failed_check_exits_1(
    project: Path, dask_scheduler_address: str, capsys
):
    runs = [{"C": 1.0}, {"n_features": 2}, {"n_features": 1, "C": 0.001}]
    codes, outputs = [], []
    for params in runs:
        code, output = run(capsys, project, dask_scheduler_address, *params.items())
        codes.append(code)
        outputs.append(output)
    # 1: everything passes. 2: f1 0.76 < 0.8 flags the run. 3: accuracy 0.39 fails two checks.
    assert codes == [0, 0, 1], outputs
    assert "succeeded · flagged" in outputs[1]
    assert "warn failed: scores.logreg.f1 = 0.760044, needs >= 0.8" in outputs[1]
    assert "check failed: accuracy = 0.388889, needs >= 0.5" in outputs[2]
    # The relative check names the baseline (the last succeeded run, here the flagged one).
    assert "needs >= 0.527778 (baseline 0.777778 - 0.25, run " in outputs[2]

    code, out, _ = kiln(capsys, "metrics", str(project / "monitored_wine.ipynb"), "--json")
    assert code == 0
    history = json.loads(out)
    assert [r["status"] for r in history["runs"]] == ["succeeded", "succeeded", "failed"]
    assert [r["flagged"] for r in history["runs"]] == [False, True, False]
    accuracy = [round(r["metrics"]["accuracy"], 4) for r in history["runs"]]
    assert accuracy == [1.0, 0.7778, 0.3889]
    assert [r["parameters"]["n_features"] for r in history["runs"]] == [13, 2, 1]
    # As the notebook declares them: the metrics cell's names (accuracy, then scores flattened),
    # then what kiln.log_metric recorded, in the order the train cell logged it.
    assert history["metrics"] == DECLARED_ORDER
    assert all(list(r["metrics"]) == DECLARED_ORDER for r in history["runs"])
    failed = [v for v in history["runs"][2]["verdicts"] if not v["passed"]]
    assert {(v["kind"], v["subject"]) for v in failed} == {
        ("check", "accuracy"),
        ("warn", "scores.logreg.f1"),
    }
    assert history["baseline"]["run_id"] == history["runs"][1]["run_id"]

    code, out, _ = kiln(capsys, "metrics", str(project / "monitored_wine.ipynb"), "-n", "3")
    lines = out.splitlines()
    assert lines[1].split() == ["run", "started", "status", *DECLARED_ORDER, "verdicts"]
    trends = [line.split()[0] for line in lines[lines.index("trend (oldest -> newest)") + 1 :]]
    assert trends[: len(DECLARED_ORDER)] == DECLARED_ORDER
    assert "succeeded·flagged" in out and "0.7778 (-0.222)" in out and "0.3889 (-0.389)" in out
    assert "check check:accuracy>=0.5 failed" in out
    trend = next(line for line in lines if line.strip().startswith("accuracy "))
    assert "█▅▁" in trend
    row = next(line for line in lines[1:] if line.startswith(history["runs"][1]["run_id"][:12]))
    assert "(baseline)" in row

    # The failed run says why in `kiln show` and in its output notebook.
    failed_run = history["runs"][2]["run_id"]
    code, out, _ = kiln(capsys, "show", failed_run)
    assert "check failed: accuracy = 0.388889" in out
    output = project / ".kiln" / "runs" / failed_run / "monitored_wine.ipynb"
    nb = nbformat.read(output, as_version=4)
    assert nb.metadata.kiln["status"] == "failed"
    assert round(nb.metadata.kiln["metrics"]["accuracy"], 4) == 0.3889
    assert {v["kind"] for v in nb.metadata.kiln["verdicts"] if not v["passed"]} == {"check", "warn"}
    metrics_cell = next(c for c in nb.cells if c.get("id") == METRICS_CELL)
    assert metrics_cell.outputs[-1].output_type == "error"
    assert metrics_cell.outputs[-1].ename == "CheckFailed"


def test_a_pinned_baseline_is_what_relative_checks_compare_with(
    project: Path, dask_scheduler_address: str, capsys
):
    notebook = project / "monitored_wine.ipynb"
    set_tags(notebook, METRICS_CELL, ["metrics", "check:accuracy>=baseline-0.1"])
    assert run(capsys, project, dask_scheduler_address, ("n_features", 2))[0] == 0  # 0.778
    history = json.loads(kiln(capsys, "metrics", str(notebook), "--json")[1])
    weak = history["runs"][0]["run_id"]
    assert run(capsys, project, dask_scheduler_address)[0] == 0  # 1.0 >= 0.778 - 0.1
    # Against the last succeeded run (1.0), 0.778 would fail; against the pinned one it passes.
    code, out, _ = kiln(capsys, "baseline", "set", weak[:8])
    assert code == 0 and weak in out
    code, output = run(capsys, project, dask_scheduler_address, ("n_features", 2), ("seed", 0))
    assert code == 0, output
    history = json.loads(kiln(capsys, "metrics", str(notebook), "--json")[1])
    last = history["runs"][-1]
    assert last["baseline_run"] == weak and history["baseline"] == {"run_id": weak, "pinned": True}
    assert last["verdicts"][0]["baseline_value"] == pytest.approx(0.7778, abs=1e-4)
    # A worse run fails against the pinned baseline, and the message names it.
    code, output = run(capsys, project, dask_scheduler_address, ("n_features", 1))
    assert code == 1 and "baseline 0.777778 - 0.1, run " + weak in output


def test_a_shifted_column_in_an_input_file_is_drift_and_an_unchanged_file_is_not(
    project: Path, dask_scheduler_address: str, capsys
):
    import pandas as pd

    notebook = project / "monitored_wine.ipynb"
    assert run(capsys, project, dask_scheduler_address)[0] == 0
    code, output = run(capsys, project, dask_scheduler_address, ("seed", 1))  # same file
    assert code == 0 and "drifted" not in output and "flagged" not in output
    history = json.loads(kiln(capsys, "metrics", str(notebook), "--json")[1])
    second = history["runs"][-1]["run_id"]
    code, out, _ = kiln(capsys, "drift", second, "--json")
    found = {i["input"]: i for i in json.loads(out)["inputs"]}
    assert found["data/wine.csv"]["drifted"] == [] and found["load.raw"]["drifted"] == []
    assert found["data/wine.csv"]["max_score"] == 0

    frame = pd.read_csv(project / "data" / "wine.csv")
    frame["alcohol"] = frame["alcohol"] + 1.5  # a unit change upstream, say
    frame.to_csv(project / "data" / "wine.csv", index=False)
    code, output = run(capsys, project, dask_scheduler_address, ("seed", 1))
    assert "succeeded · flagged" in output
    assert "input data/wine.csv drifted against run " + second in output
    assert "alcohol" in output
    history = json.loads(kiln(capsys, "metrics", str(notebook), "--json")[1])
    third = history["runs"][-1]
    assert third["flagged"] is True
    drift = {v["subject"]: v for v in third["verdicts"] if v["kind"] == "drift"}
    assert drift["data/wine.csv"]["drifted_columns"] == ["alcohol"]
    assert drift["load.raw"]["drifted_columns"] == ["alcohol"]
    assert drift["load.raw"]["threshold"] == 0.3  # drift:raw<0.3 on the load cell
    code, out, _ = kiln(capsys, "drift", third["run_id"][:10])
    assert code == 0
    assert "data/wine.csv: DRIFTED (1 column(s))" in out
    alcohol = next(line for line in out.splitlines() if line.strip().startswith("alcohol"))
    assert float(alcohol.split()[1]) > 0.5 and "ks" in alcohol
    code, out, _ = kiln(capsys, "diff", second, third["run_id"])
    assert "inputs drifted: data/wine.csv (alcohol" in out
    assert "input files: data/wine.csv" in out


def test_metric_values_that_are_not_numbers_are_warnings_naming_the_cell(
    tmp_path: Path, dask_scheduler_address: str, capsys
):
    notebook = make_notebook(
        tmp_path / "labels.ipynb",
        [
            ("import kiln", ["setup"]),
            (
                "best = 'forest'\nscore = 0.9\nkiln.log_metric('model', best)\n"
                "kiln.log_metric({'depth': 3, 'ok': True})",
                ["task:fit"],
            ),
            ("best\nscore", ["metrics", "check:score>=0.5", "check:ok==1"]),
        ],
    )
    code, out, err = kiln(capsys, "run", str(notebook), "--scheduler", dask_scheduler_address)
    assert code == 0, err
    assert "task 'fit', cell 1: metric model (str) is not a number or boolean" in err
    assert "metrics cell (cell 2): best (str) from task 'fit' is not a number or boolean" in err
    history = json.loads(kiln(capsys, "metrics", str(notebook), "--json")[1])
    assert history["runs"][0]["metrics"] == {"depth": 3.0, "ok": True, "score": 0.9}


def test_the_papermill_engine_raises_when_a_check_fails(project: Path, dask_scheduler_address: str):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as failed:
        papermill.execute_notebook(
            str(project / "monitored_wine.ipynb"),
            str(project / "out.ipynb"),
            parameters={"n_features": 1, "C": 0.001},
            engine_name="kiln",
            scheduler=dask_scheduler_address,
            progress_bar=False,
        )
    assert "accuracy = 0.388889, needs >= 0.5" in str(failed.value)
    out = nbformat.read(project / "out.ipynb", as_version=4)
    assert out.metadata.kiln["status"] == "failed"
    assert round(out.metadata.kiln["metrics"]["accuracy"], 4) == 0.3889


def test_openlineage_run_events_carry_metrics_and_verdicts(
    project: Path, dask_scheduler_address: str, capsys, monkeypatch
):
    events = project / "openlineage.jsonl"
    monkeypatch.setenv("KILN_OPENLINEAGE_FILE", str(events))
    assert run(capsys, project, dask_scheduler_address, ("n_features", 2))[0] == 0
    sent = [json.loads(line) for line in events.read_text().splitlines()]
    complete = [
        e for e in sent if e["eventType"] == "COMPLETE" and e["job"]["name"] == "monitored_wine"
    ]
    facet = complete[-1]["run"]["facets"]["kilnMetrics"]
    assert round(facet["metrics"]["accuracy"], 4) == 0.7778
    assert {v["kind"] for v in facet["verdicts"]} == {"check", "warn"}
    assert facet["flagged"] is True


def test_profiles_are_bounded_and_score_drift_per_column():
    import numpy as np
    import pandas as pd

    from compiler.model.drift import profile_drift
    from compiler.runtime.profile import SAMPLE_SIZE, profile_frame

    rng = np.random.default_rng(3)
    rows = 50_000
    before = pd.DataFrame(
        {
            "amount": rng.normal(100, 15, rows),
            "country": rng.choice(["FR", "DE", "NO"], rows, p=[0.5, 0.3, 0.2]),
            "clicks": rng.poisson(3, rows),
        }
    )
    before.loc[::10, "amount"] = np.nan
    after = before.assign(country=rng.choice(["FR", "DE", "NO"], rows, p=[0.2, 0.3, 0.5]))
    base, now = profile_frame(before, "file"), profile_frame(after, "file")
    amount = base["columns"]["amount"]
    assert amount["nulls"] == rows // 10 and amount["count"] == rows - rows // 10
    assert abs(amount["mean"] - 100) < 1 and abs(amount["std"] - 15) < 1
    assert len(amount["sample"]) <= SAMPLE_SIZE
    assert base["columns"]["country"]["type"] == "category"
    assert len(json.dumps(base)) < 30_000  # bounded whatever the row count

    same = profile_drift(profile_frame(before, "file"), base, 0.2)
    assert same["drifted"] == [] and same["max_score"] == 0
    moved = profile_drift(now, base, 0.2)
    assert moved["drifted"] == ["country"]
    assert moved["columns"]["country"]["test"] == "cramer_v"
    assert moved["columns"]["amount"]["test"] == "ks" and moved["columns"]["amount"]["score"] < 0.2
    dropped = profile_drift(profile_frame(before.drop(columns=["clicks"]), "file"), base, 0.2)
    assert dropped["columns"]["clicks"]["test"] == "column gone" and dropped["drifted"] == []


def test_a_scheduled_run_whose_check_fails_is_failed(project: Path, dask_scheduler_address: str):
    import datetime as dt

    from compiler.schedule.scheduler import Schedule, run_job

    due = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
    nightly = Schedule(
        1,
        "nightly",
        str(project / "monitored_wine.ipynb"),
        "0 6 * * *",
        "UTC",
        {"n_features": 1, "C": 0.001},
        "kiln",
        "run_once",
        False,
        due,
    )
    record = run_job(nightly, due, dask_scheduler=dask_scheduler_address)
    assert record["status"] == "failed"
    assert "CheckFailed" in record["error"] and "accuracy = 0.388889" in record["error"]
    assert record["kiln_run_id"]
