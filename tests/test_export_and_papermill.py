"""`kiln export` bundles and the papermill engine `kiln`, used as a user would from a shell."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).parent / "notebooks"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(400)


def sh(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's folder: the two-models notebook and its data."""
    shutil.copy(NOTEBOOKS / "train_two_models.ipynb", tmp_path)
    shutil.copytree(NOTEBOOKS / "data", tmp_path / "data")
    return tmp_path


def output_digests(run_json: dict) -> dict[str, str]:
    return {
        f"{t['name']}.{name}": out["digest"]
        for t in run_json["tasks"]
        for name, out in t["outputs"].items()
    }


def test_export_writes_a_versioned_bundle_once(project: Path):
    first = sh(str(BIN / "kiln"), "export", "train_two_models.ipynb", "--json", cwd=project)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    bundle = Path(info["path"])
    assert info["created"] is True
    assert bundle == project / "pipelines" / "train_two_models" / info["version"]
    assert sorted(p.name for p in bundle.iterdir()) == [
        "bundle.json",
        "pipeline.json",
        "requirements.txt",
        "run.py",
        "tasks.py",
        "train_two_models.ipynb",
    ]
    spec = json.loads((bundle / "pipeline.json").read_text())
    assert spec["version"] == info["version"]
    requirements = (bundle / "requirements.txt").read_text().splitlines()
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"nbkiln", "pandas", "scikit-learn", "matplotlib"} <= names
    assert "json" not in names  # stdlib is not a requirement
    assert all("==" in line for line in requirements)

    again = sh(str(BIN / "kiln"), "export", "train_two_models.ipynb", cwd=project)
    assert again.returncode == 0
    assert "already exported" in again.stdout
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]


def test_export_refuses_a_broken_notebook(tmp_path: Path):
    shutil.copy(NOTEBOOKS / "error_cycle.ipynb", tmp_path)
    proc = sh(str(BIN / "kiln"), "export", "error_cycle.ipynb", cwd=tmp_path)
    assert proc.returncode == 1
    assert not (tmp_path / "pipelines").exists()


def test_a_bundle_copied_elsewhere_reproduces_the_notebook_run(project: Path, tmp_path_factory):
    run = sh(
        str(BIN / "kiln"), "run", "train_two_models.ipynb", "--json", "--workers", "2", cwd=project
    )
    assert run.returncode == 0, run.stderr
    notebook_run = json.loads(run.stdout)

    exported = json.loads(
        sh(str(BIN / "kiln"), "export", "train_two_models.ipynb", "--json", cwd=project).stdout
    )
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    bundle = elsewhere / "bundle"
    shutil.copytree(exported["path"], bundle)
    shutil.copytree(project / "data", bundle / "data")  # the input file the pipeline reads
    bundle_run = sh(sys.executable, "run.py", "--json", "--workers", "2", cwd=bundle)
    assert bundle_run.returncode == 0, bundle_run.stderr
    result = json.loads(bundle_run.stdout)
    assert result["status"] == "succeeded"
    assert all(not t["cached"] for t in result["tasks"])  # a fresh place: nothing cached
    assert output_digests(result) == output_digests(notebook_run)
    assert (bundle / "metrics.json").exists()
    # The bundle run is recorded like `kiln run`.
    runs = sh(str(BIN / "kiln"), "runs", "--json", cwd=bundle)
    assert runs.returncode == 0, runs.stderr
    assert [r["run_id"] for r in json.loads(runs.stdout)] == [result["run_id"]]


def test_a_bundle_carries_the_helper_modules_its_tasks_import(tmp_path: Path, tmp_path_factory):
    from tests.nbutil import make_notebook

    (tmp_path / "helpers.py").write_text("def scale(x):\n    return x * 2\n")
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "__init__.py").write_text("from .names import NAMES\n")
    (tmp_path / "features" / "names.py").write_text("NAMES = ['a', 'b']\n")
    make_notebook(
        tmp_path / "report.ipynb",
        [
            ("from helpers import scale\nimport features", ["setup"]),
            ("value = scale(21)\ncolumns = features.NAMES\nprint(value, columns)", ["task:make"]),
        ],
    )
    first = json.loads(
        sh(str(BIN / "kiln"), "export", "report.ipynb", "--json", cwd=tmp_path).stdout
    )
    bundle = tmp_path_factory.mktemp("elsewhere") / "bundle"
    shutil.copytree(first["path"], bundle)
    assert sorted(p.name for p in bundle.iterdir()) == [
        "bundle.json",
        "features",
        "helpers.py",
        "pipeline.json",
        "report.ipynb",
        "requirements.txt",
        "run.py",
        "tasks.py",
    ]
    assert "helpers" not in (bundle / "requirements.txt").read_text()
    ran = sh(sys.executable, "run.py", "--json", "--workers", "1", cwd=bundle)
    assert ran.returncode == 0, ran.stderr
    output = nbformat.read(json.loads(ran.stdout)["output_notebook"], as_version=4)
    assert output.cells[1].outputs[0]["text"] == "42 ['a', 'b']\n"

    # An edited helper is a new bundle version; exporting again unchanged is a no-op.
    (tmp_path / "helpers.py").write_text("def scale(x):\n    return x * 3\n")
    second = json.loads(
        sh(str(BIN / "kiln"), "export", "report.ipynb", "--json", cwd=tmp_path).stdout
    )
    assert second["created"] is True and second["version"] != first["version"]
    assert "x * 3" in (Path(second["path"]) / "helpers.py").read_text()
    again = json.loads(
        sh(str(BIN / "kiln"), "export", "report.ipynb", "--json", cwd=tmp_path).stdout
    )
    assert again["created"] is False and again["version"] == second["version"]


def test_a_bundle_runs_against_a_working_folder_that_holds_the_data(
    project: Path, tmp_path_factory
):
    exported = json.loads(
        sh(str(BIN / "kiln"), "export", "train_two_models.ipynb", "--json", cwd=project).stdout
    )
    bundle = tmp_path_factory.mktemp("opt") / "bundle"
    shutil.copytree(exported["path"], bundle)
    data_home = tmp_path_factory.mktemp("srv")
    shutil.copytree(project / "data", data_home / "data")
    run_py = str(bundle / "run.py")

    missing = sh(sys.executable, run_py, "--workdir", str(data_home / "nope"), cwd=data_home)
    assert missing.returncode == 2 and "no such folder" in missing.stderr

    ran = sh(sys.executable, run_py, "--workdir", str(data_home), "--json", cwd=bundle)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    # Files the tasks write, the cache, lineage and the output notebook are in the working
    # folder; the bundle is left as exported.
    assert (data_home / "metrics.json").exists()
    assert Path(result["output_notebook"]).is_relative_to(data_home / ".kiln")
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        p.name for p in Path(exported["path"]).iterdir()
    )
    runs = sh(str(BIN / "kiln"), "runs", "--json", cwd=data_home)
    assert [r["run_id"] for r in json.loads(runs.stdout)] == [result["run_id"]]
    again = sh(sys.executable, run_py, "--workdir", str(data_home), "--json", cwd=data_home)
    assert {t["status"] for t in json.loads(again.stdout)["tasks"]} == {"cached"}


def test_the_bundle_snapshot_is_the_notebook_that_was_compiled(tmp_path: Path):
    from compiler.compile.api import compile_notebook
    from compiler.ops.export import export_bundle
    from tests.nbutil import make_notebook

    notebook = make_notebook(tmp_path / "report.ipynb", [("total = 1 + 1", ["task:add"])])
    compiled = compile_notebook(notebook)
    # Saved again between compiling and exporting (JupyterLab's autosave, a colleague's push).
    make_notebook(notebook, [("total = 40 + 2", ["task:add"])])
    exported = export_bundle(compiled, notebook)
    snapshot = nbformat.read(exported.path / "report.ipynb", as_version=4)
    assert snapshot.cells[0].source == "total = 1 + 1"
    assert compile_notebook(exported.path / "report.ipynb").spec["version"] == exported.version


def test_papermill_cli_with_the_kiln_engine(project: Path):
    proc = sh(
        str(BIN / "papermill"),
        "train_two_models.ipynb",
        "out.ipynb",
        "--engine",
        "kiln",
        "-p",
        "n_trees",
        "20",
        "--no-progress-bar",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr
    out = nbformat.read(project / "out.ipynb", as_version=4)
    nbformat.validate(out)
    assert out.metadata.papermill["parameters"] == {"n_trees": 20}
    assert out.metadata.kiln["status"] == "succeeded"
    by_tag = {tuple(c.metadata.get("tags", [])[:1]): c for c in out.cells if c.cell_type == "code"}
    load = by_tag[("task:load",)]
    assert load.metadata.papermill["status"] == "completed"
    assert load.metadata.papermill["duration"] is not None
    assert load.metadata.kiln["task"] == "load"
    assert any("178 rows" in "".join(o.get("text", "")) for o in load.outputs)
    forest = by_tag[("task:train_forest",)]
    assert forest.metadata.kiln["status"] == "done"
    # The run used the injected value: its recorded parameters say so.
    show = sh(str(BIN / "kiln"), "show", out.metadata.kiln["run_id"], "--json", cwd=project)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["parameters"]["n_trees"] == 20


def test_papermill_engine_reports_a_failing_cell(tmp_path: Path):
    from tests.nbutil import make_notebook

    make_notebook(
        tmp_path / "fails.ipynb",
        [
            ("x = 1", ["task:ok"]),
            ("y = x + 1\nraise ValueError('bad input row')", ["task:broken"]),
        ],
    )
    proc = sh(
        str(BIN / "papermill"),
        "fails.ipynb",
        "out.ipynb",
        "--engine",
        "kiln",
        "--no-progress-bar",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "bad input row" in proc.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    broken = [c for c in out.cells if "task:broken" in c.metadata.get("tags", [])][0]
    assert broken.metadata.papermill["status"] == "failed"
    assert any(o.output_type == "error" and o.ename == "ValueError" for o in broken.outputs)
