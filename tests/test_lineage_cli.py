"""`kiln runs | show | lineage | diff | rerun` after real runs on Dask, as a user would type them.

Runs are recorded the way `kiln run` records them: a RunRecorder as the run's `on_event`
(`recorded_run` below), into `.kiln/lineage.db` beside the notebook.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.cli.lineage import register
from compiler.lineage import RunRecorder, open_store
from tests.nbutil import make_notebook

pytestmark = pytest.mark.timeout(300)
NOTEBOOKS = Path(__file__).parent / "notebooks"
REPO = Path(__file__).resolve().parents[1]


def recorded_run(
    notebook: Path, scheduler: str, params: dict | None = None, url: str | None = None
):
    """Compile and run a notebook with lineage recording on (what `kiln run` does)."""
    from compiler.compile.api import compile_notebook
    from compiler.runtime import run_pipeline

    compiled = compile_notebook(notebook)
    assert compiled.ok, compiled.diagnostics
    store = open_store(url, notebook)
    with RunRecorder(
        store, compiled.spec, notebook, params, scheduler_address=scheduler
    ) as recorder:
        result = run_pipeline(
            compiled.spec,
            notebook_path=notebook,
            params=params,
            scheduler=scheduler,
            on_event=recorder,
            run_id=recorder.run_id,
        )
        recorder.finish(result)
    store.close()
    assert recorder.errors == []
    return result, compiled.spec


def _parser() -> argparse.ArgumentParser:
    """`kiln`'s own parser once compiler/cli.py registers the lineage commands; until then a
    parser with only them."""
    try:
        from compiler.cli.main import build_parser

        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "lineage" in sub.choices:
            return parser
    except ImportError:
        pass
    parser = argparse.ArgumentParser(prog="kiln")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def kiln(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    args = _parser().parse_args([str(a) for a in argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def copy_project(folder: Path, name: str = "train_two_models.ipynb") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(NOTEBOOKS / name, folder / name)
    shutil.copytree(NOTEBOOKS / "data", folder / "data")
    return folder / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dask_scheduler_address):
    """train_two_models run once; tests here only read it (or add runs of their own)."""
    notebook = copy_project(tmp_path_factory.mktemp("lineage-cli"))
    result, spec = recorded_run(notebook, dask_scheduler_address)
    assert result.status == "succeeded", [t.error for t in result.tasks]
    return notebook, result, spec


def _cells(spec, task):
    return [f"[{c['cell_index']}] {c['cell_id']}" for c in spec["tasks"][task]["code"]]


def test_lineage_of_a_written_file_prints_the_cells_and_parameters_behind_it(
    trained, capsys, monkeypatch
):
    notebook, result, spec = trained
    monkeypatch.chdir(notebook.parent)
    code, out, err = kiln(capsys, "lineage", "metrics.json")
    assert code == 0, err
    print(out)
    metrics = notebook.parent / "metrics.json"
    wine = notebook.parent / "data" / "wine.csv"
    assert out.splitlines()[0] == str(metrics.resolve())
    assert f"written by task evaluate in run {result.run_id}" in out
    assert "parameters: n_trees=50, seed=7, test_size=0.25" in out
    wine_digest = hashlib.sha256(wine.read_bytes()).hexdigest()
    assert f"input files: data/wine.csv (sha256 {wine_digest[:12]})" in out

    # Every task on the way back to the file, with exactly its cells (index and id).
    tasks = {t["name"]: i for i, t in enumerate(spec["tasks"])}
    tree = out[out.index("\nevaluate") :]
    for task in ("evaluate", "train_logreg", "train_forest", "features", "clean", "load"):
        header = re.search(rf"^[\s│├└─]*(?:[\w, ]+ ← )?{task}  done  version (\w+)$", tree, re.M)
        assert header, f"{task} missing from\n{tree}"
        assert spec["tasks"][tasks[task]]["version"].startswith(header.group(1))
        cells_line = tree[header.end() :].splitlines()[1]
        assert cells_line.split("cells: ")[1] == ", ".join(_cells(spec, tasks[task]))
    assert "cells: [16] train-two--16, [17] train-two--17" in tree
    assert "cells: [7] train-two--07, [8] train-two--08" in tree
    assert "parameters: seed=7, test_size=0.25" in tree  # features reads these two
    assert "parameters: n_trees=50, seed=7" in tree  # train_forest
    assert f"reads: data/wine.csv (sha256 {wine_digest[:12]})" in tree
    assert "X_train_s, y_train ← features" in tree

    code, out, _ = kiln(capsys, "lineage", "metrics.json", "--json")
    found = json.loads(out)
    assert found["target"]["digest"] == hashlib.sha256(metrics.read_bytes()).hexdigest()
    assert found["target"]["current_matches"] is True
    assert found["parameters"] == {"n_trees": 50, "seed": 7, "test_size": 0.25}


def test_lineage_of_an_artifact_digest_and_of_task_at_run(trained, capsys, monkeypatch):
    notebook, result, _ = trained
    monkeypatch.chdir(notebook.parent)
    forest = result.task("train_forest").outputs["forest"]["digest"]
    code, out, err = kiln(capsys, "lineage", forest[:10])
    assert code == 0, err
    assert out.startswith(f"artifact {forest}\n")
    assert "forest = sklearn.ensemble._forest.RandomForestClassifier" in out
    assert "cells: [14] train-two--14" in out
    assert "[16]" not in out  # evaluate came after: not part of where the forest came from

    code, out, err = kiln(capsys, "lineage", f"clean@{result.run_id[:7]}")
    assert code == 0, err
    assert out.startswith(f"task clean in run {result.run_id}")
    assert "raw ← load" in out


def test_runs_and_show(trained, capsys, monkeypatch):
    notebook, result, _ = trained
    monkeypatch.chdir(notebook.parent)
    code, out, _ = kiln(capsys, "runs", notebook)
    assert code == 0
    assert re.search(rf"^{result.run_id}\s+\S+ \S+\s+succeeded\s+-\s+train_two_models\s", out, re.M)

    code, out, _ = kiln(capsys, "show", result.run_id[:6])
    assert code == 0
    assert out.startswith(f"run {result.run_id}  succeeded\n")
    assert re.search(r"^train_forest\s+done\s+-\s+1\s+[\d.]+ s", out, re.M)
    assert "evaluate  wrote  metrics.json" in out
    assert "load      reads  data/wine.csv" in out
    # Both sizes, labelled: a fitted forest is ~56 B to sys.getsizeof, its stored pickle KiB.
    assert re.search(r"^\s*output\s+type\s+in memory\s+stored\s+sha256$", out, re.M)
    assert re.search(r"^\s*train_forest\.\w+\s+\S+\s+\d+ B\s+[\d.]+ (KiB|MiB)\s", out, re.M)

    code, out, _ = kiln(capsys, "show", result.run_id, "--json")
    shown = json.loads(out)
    assert shown["scheduler_address"].startswith("tcp://127.0.0.1:")
    assert shown["output_notebook"] == result.output_notebook
    assert {t["task"]: t["status"] for t in shown["tasks"]} == {
        t.name: t.status for t in result.tasks
    }
    assert [o["name"] for o in shown["tasks"][0]["outputs"]] == ["raw"]
    assert shown["tasks"][0]["outputs"][0]["type"] == "pandas.DataFrame"

    assert kiln(capsys, "show", "ffffffffff")[0] == 1
    assert kiln(capsys, "lineage", "no-such-file.csv")[0] == 1
    code, _, err = kiln(capsys, "show", "x", "--lineage-db", "nosuchdb://")
    assert code == 2 and "lineage database" in err


def _scoring_notebook(folder: Path, seeded: bool = True) -> Path:
    """Load, scale, fit, report: every output is a pure function of the inputs (values whose
    pickles are byte-stable: frames, arrays, a linear model), unless `seeded` is False."""
    shutil.copytree(NOTEBOOKS / "data", folder / "data")
    noise = "rng = np.random.default_rng(seed)" if seeded else "rng = np.random.default_rng()"
    return make_notebook(
        folder / "scoring.ipynb",
        [
            (
                "import json\nimport numpy as np\nimport pandas as pd\n"
                "from sklearn.linear_model import LogisticRegression",
                ["setup"],
            ),
            ("C = 1.0\nseed = 3", ["parameters"]),
            ('raw = pd.read_csv("data/wine.csv").dropna()', ["task:load"]),
            (
                'features = raw.drop(columns=["target"])\n'
                "X = ((features - features.mean()) / features.std()).to_numpy()\n"
                f"{noise}\n"
                "X = X + rng.normal(0, 0.01, X.shape)\n"
                'y = raw["target"].to_numpy()',
                ["task:scale"],
            ),
            ("model = LogisticRegression(C=C, max_iter=1000).fit(X, y)", ["task:fit"]),
            (
                'with open("report.json", "w") as f:\n'
                '    json.dump({"accuracy": round(float(model.score(X, y)), 6)}, f)\n'
                'pd.DataFrame(X).describe().round(6).to_csv("summary.csv")',
                ["task:report"],
            ),
        ],
    )


def test_rerun_of_a_deterministic_pipeline_reports_every_digest_equal(
    tmp_path, capsys, monkeypatch, dask_scheduler_address
):
    notebook = _scoring_notebook(tmp_path)
    monkeypatch.chdir(tmp_path)
    first, _ = recorded_run(notebook, dask_scheduler_address)
    code, out, err = kiln(capsys, "rerun", first.run_id[:8], "--scheduler", dask_scheduler_address)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith(f"rerun of run {first.run_id} as run ")
    assert lines[0].endswith(": succeeded")
    assert "DIFFERS" not in out
    compared = [line.split()[:2] for line in lines if line.endswith("equal")]
    assert compared == [
        ["load", "raw"],
        ["scale", "X"],
        ["scale", "y"],
        ["fit", "model"],
        ["report", "report.json"],
        ["report", "summary.csv"],
    ]
    assert lines[-1] == "6 of 6 outputs have the original digest"

    report = json.loads(
        kiln(capsys, "rerun", first.run_id, "--json", "--scheduler", dask_scheduler_address)[1]
    )
    assert report["all_equal"] is True and report["original_run_id"] == first.run_id
    shown = json.loads(kiln(capsys, "show", report["run_id"], "--json")[1])
    assert shown["rerun_of"] == first.run_id
    assert [t["cached"] for t in shown["tasks"]] == [False] * 4  # nothing from the cache


def test_rerun_names_the_outputs_that_differ(tmp_path, capsys, monkeypatch, dask_scheduler_address):
    notebook = _scoring_notebook(tmp_path, seeded=False)
    monkeypatch.chdir(tmp_path)
    first, _ = recorded_run(notebook, dask_scheduler_address)
    code, out, _ = kiln(capsys, "rerun", first.run_id, "--scheduler", dask_scheduler_address)
    assert code == 1
    assert re.search(r"^load\s+raw\s+(\w+)\s+\1\s+equal$", out, re.M)
    assert re.search(r"^scale\s+X\s+\w+\s+\w+\s+DIFFERS$", out, re.M)
    assert re.search(r"^scale\s+y\s+(\w+)\s+\1\s+equal$", out, re.M)
    assert re.search(r"^report\s+summary\.csv\s+\w+\s+\w+\s+DIFFERS$", out, re.M)


def test_diff_after_editing_one_task_and_changing_a_parameter(
    tmp_path, capsys, monkeypatch, dask_scheduler_address
):
    notebook = copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    first, _ = recorded_run(notebook, dask_scheduler_address)
    nb = json.loads(notebook.read_text())
    clean = next(c for c in nb["cells"] if c["id"] == "train-two--07")
    clean["source"] = "".join(clean["source"]).replace(".max()", ".max() * 2")
    notebook.write_text(json.dumps(nb, indent=1))
    second, _ = recorded_run(notebook, dask_scheduler_address, params={"seed": 8})

    code, out, err = kiln(capsys, "diff", first.run_id, second.run_id)
    print(out)
    assert code == 0, err
    assert "code changed: clean\n" in out
    assert "  new versions downstream of it: features, train_logreg, train_forest, evaluate" in out
    assert "parameters: seed: 7 -> 8\n" in out
    assert "input files: unchanged" in out
    assert "  clean.clean " in out and "metrics.json" in out
    assert "load.raw" not in out  # load is untouched: same digest

    diff = json.loads(kiln(capsys, "diff", first.run_id, second.run_id, "--json")[1])
    assert diff["code_changed"] == ["clean"]
    assert diff["parameters"] == [{"name": "seed", "a": 7, "b": 8}]
    assert diff["input_files"] == []

    # The notebook changed, so rerunning the first run as it was is refused.
    code, _, err = kiln(capsys, "rerun", first.run_id)
    assert code == 1
    assert "has changed since run" in err and "tasks changed: clean)" in err
    assert "--current-code" in err


_KILLED_RUN = """
import json, os, sys, logging
from distributed import LocalCluster
from compiler.lineage import RunRecorder, open_store
from compiler.runtime import run_pipeline

spec = json.load(open(sys.argv[1]))
notebook = sys.argv[2]
cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None,
                       silence_logs=logging.ERROR)
store = open_store(None, notebook)
recorder = RunRecorder(store, spec, notebook, None)

def on_event(event):
    recorder(event)
    if event.get("task") == "slow" and event.get("status") == "running":
        # Events are written by a background thread: wait until "first done" is in the store,
        # so that the kill below lands while only "slow" is running.
        recorder.flush()
        # Not print(): the in-process worker captures sys.stdout while a cell runs.
        os.write(1, f"ready {recorder.run_id}\\n".encode())

recorder.start()
run_pipeline(spec, notebook_path=notebook, scheduler=cluster.scheduler_address,
             on_event=on_event, run_id=recorder.run_id)
"""


def test_a_real_run_killed_with_sigkill_is_shown_interrupted(
    make_pipeline, tmp_path, capsys, monkeypatch
):
    spec, notebook = make_pipeline(
        tasks=[
            {"name": "first", "source": "x = 1", "outputs": ["x"]},
            {"name": "slow", "source": "import time\ntime.sleep(600)", "inputs": {"x": "first"}},
        ]
    )
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path / "spec.json"), str(notebook)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.txt").open("w"),
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        assert line[:1] == ["ready"], (tmp_path / "stderr.txt").read_text()
        run_id = line[1]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    monkeypatch.chdir(tmp_path)
    code, out, _ = kiln(capsys, "runs")
    assert code == 0
    assert re.search(rf"^{run_id}\s+\S+ \S+\s+interrupted\s", out, re.M), out
    shown = json.loads(kiln(capsys, "show", run_id, "--json")[1])
    assert {t["task"]: t["status"] for t in shown["tasks"]} == {
        "first": "done",
        "slow": "interrupted",
    }
    assert f"pid {process.pid}" in shown["error"]


def test_a_real_run_recorded_in_postgresql(tmp_path, capsys, monkeypatch, dask_scheduler_address):
    from tests.postgres_fixture import postgres_server, postgres_unavailable

    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    url = postgres_server().new_database()
    notebook = _scoring_notebook(tmp_path)
    monkeypatch.setenv("KILN_LINEAGE_DB", url)
    first, _ = recorded_run(notebook, dask_scheduler_address)
    assert not (tmp_path / ".kiln" / "lineage.db").exists()  # the team's store, not SQLite

    monkeypatch.chdir(tmp_path)
    code, out, err = kiln(capsys, "lineage", "report.json")
    assert code == 0, err
    assert f"written by task report in run {first.run_id}" in out
    assert "parameters: C=1.0, seed=3" in out
    for cell in ("[3] c3", "[4] c4", "[5] c5", "[2] c2"):
        assert f"cells: {cell}" in out
    monkeypatch.delenv("KILN_LINEAGE_DB")
    code, out, _ = kiln(capsys, "show", first.run_id[:5], "--lineage-db", url)
    assert code == 0 and out.startswith(f"run {first.run_id}  succeeded")


def test_a_renamed_task_keeps_its_lineage(tmp_path, capsys, monkeypatch, dask_scheduler_address):
    """Renaming `task:fit` to `task:fit_model` (the tag on the same cell, as the Pipeline panel
    does): the task's history holds the runs under both names, and `kiln diff` says renamed."""
    from compiler.lineage import diff_runs
    from jupyter_ext.history import task_history

    notebook = make_notebook(
        tmp_path / "sales.ipynb",
        [
            ("import statistics", ["setup"]),
            ("sales = [12.0, 15.5, 9.25, 20.0, 17.75]", ["task:load_sales"]),
            ("trend = statistics.linear_regression(range(len(sales)), sales)", ["task:fit"]),
            ("print(f'slope {trend.slope:.2f}')", ["task:report"]),
        ],
    )
    monkeypatch.chdir(tmp_path)
    first, _ = recorded_run(notebook, dask_scheduler_address)
    nb = json.loads(notebook.read_text())
    fit_cell = nb["cells"][2]
    fit_cell["metadata"]["tags"] = ["task:fit_model"]
    notebook.write_text(json.dumps(nb, indent=1))
    second, _ = recorded_run(notebook, dask_scheduler_address)

    store = open_store(None, notebook)
    try:
        history = task_history(store, tmp_path, notebook, "fit_model", 10, fit_cell["id"])
        assert [(h["run_id"], h["recorded_as"]) for h in history] == [
            (second.run_id, "fit_model"),
            (first.run_id, "fit"),
        ]
        # Same code, same inputs: the renamed task's run reused the first run's result.
        assert [h["task"]["status"] for h in history] == ["cached", "done"]
        # By name alone (no cell: what the panel asked before) the old runs were lost.
        assert len(task_history(store, tmp_path, notebook, "fit_model", 10)) == 1
        # Another task's history is untouched by the rename.
        load = task_history(store, tmp_path, notebook, "load_sales", 10, nb["cells"][1]["id"])
        assert [h["recorded_as"] for h in load] == ["load_sales", "load_sales"]
        diff = diff_runs(store, first.run_id, second.run_id)
    finally:
        store.close()
    assert diff["tasks_renamed"] == [{"a": "fit", "b": "fit_model"}]
    assert diff["tasks_added"] == [] and diff["tasks_removed"] == []

    code, out, err = kiln(capsys, "diff", first.run_id, second.run_id)
    assert code == 0, err
    assert "tasks renamed: fit -> fit_model\n" in out
    assert "tasks added" not in out and "tasks removed" not in out
