"""`kiln check`, `kiln compile` and `kiln graph` as a user runs them from a shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from compiler.compile.emit import pipeline_schema
from tests.nbutil import make_notebook

NOTEBOOKS = Path(__file__).parent / "notebooks"
VENV_BIN = Path(sys.executable).parent


def kiln(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = VENV_BIN / "kiln"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "compiler.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_compile_writes_spec_and_module(tmp_path):
    out = tmp_path / "build"
    proc = kiln("compile", str(NOTEBOOKS / "train_two_models.ipynb"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "6 task(s)" in proc.stdout
    spec = json.loads((out / "pipeline.json").read_text())
    jsonschema.validate(spec, pipeline_schema())
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.json", "tasks.py"]
    umask = os.umask(0)
    os.umask(umask)
    for written in out.iterdir():  # readable by the team, like any file the user writes
        assert written.stat().st_mode & 0o777 == 0o666 & ~umask, written
    # The module is readable Python that ruff accepts with its default rules...
    ruff = subprocess.run(
        [str(VENV_BIN / "ruff"), "check", "--isolated", str(out / "tasks.py")],
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout
    source = (out / "tasks.py").read_text()
    assert "def task_train_forest(n_trees, seed, X_train, y_train):" in source
    assert 'return {"logreg": logreg}' in source
    assert "# shown in the notebook: scores" in source  # display-only lines are not code
    # ... that imports cleanly and whose functions run the notebook's code.
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tasks', {str(out / 'tasks.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.TASK_ORDER)\n"
        "print(sorted(m.task_load()['raw'].columns)[:2])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=NOTEBOOKS, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "'load', 'clean', 'features'" in run.stdout
    assert "['alcalinity_of_ash', 'alcohol']" in run.stdout


def test_compile_of_magics_notebook_gives_a_module_ruff_accepts(tmp_path):
    proc = kiln("compile", str(NOTEBOOKS / "magics.ipynb"), "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    source = (tmp_path / "tasks.py").read_text()
    assert "from IPython import get_ipython" in source
    ruff = subprocess.run(
        [str(VENV_BIN / "ruff"), "check", "--isolated", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout


def test_compile_with_errors_writes_nothing(tmp_path):
    out = tmp_path / "build"
    proc = kiln("compile", str(NOTEBOOKS / "error_undefined.ipynb"), "-o", str(out))
    assert proc.returncode == 1
    assert "cell 2, line 1, col 9" in proc.stderr
    assert "nothing written" in proc.stderr
    assert not out.exists()


def test_compile_keeps_the_previous_output_when_the_new_notebook_is_broken(tmp_path):
    nb = tmp_path / "nb.ipynb"
    shutil.copy(NOTEBOOKS / "mutation_chain.ipynb", nb)
    out = tmp_path / "build"
    assert kiln("compile", str(nb), "-o", str(out)).returncode == 0
    before = (out / "pipeline.json").read_text()
    shutil.copy(NOTEBOOKS / "error_cycle.ipynb", nb)
    assert kiln("compile", str(nb), "-o", str(out)).returncode == 1
    assert (out / "pipeline.json").read_text() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "notebook, code",
    [
        ("train_two_models", 0),
        ("error_cycle", 1),
        ("error_syntax", 1),
        ("not_a_notebook", 2),
        ("does_not_exist", 2),
    ],
)
def test_check_exit_codes(notebook, code):
    proc = kiln("check", str(NOTEBOOKS / f"{notebook}.ipynb"))
    assert proc.returncode == code, proc.stdout + proc.stderr


def test_check_prints_positions_and_a_summary():
    proc = kiln("check", str(NOTEBOOKS / "error_unknown_after.ipynb"))
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(
        "error: cell 0 (id error-unkn-00): task 'first' is after 'nowhere', which is not a task "
        "(tasks: first, second) [unknown-after]"
    )
    assert lines[1].endswith(
        "warning: cell 1 (id error-unkn-01): unknown tag 'retires:3' [unknown-tag]"
    )
    assert lines[-1].endswith("2 task(s), 1 error(s), 1 warning(s)")


def test_check_json_lists_diagnostics():
    proc = kiln("check", "--json", str(NOTEBOOKS / "error_syntax.ipynb"))
    diags = json.loads(proc.stdout)
    assert diags == [
        {
            "severity": "error",
            "code": "syntax-error",
            "message": "task 'second': syntax error: invalid syntax",
            "cell_index": 1,
            "cell_id": "error-synt-01",
            "line": 1,
            "col": 8,
        }
    ]


def test_unreadable_notebook_message():
    proc = kiln("check", str(NOTEBOOKS / "not_a_notebook.ipynb"))
    assert proc.returncode == 2
    assert "not a notebook: invalid JSON" in proc.stderr


def test_graph_mermaid_and_dot():
    proc = kiln("graph", str(NOTEBOOKS / "train_two_models.ipynb"))
    assert proc.returncode == 0
    assert proc.stdout.startswith("flowchart TD\n")
    assert "t_features -->|X_train, y_train| t_train_forest" in proc.stdout
    dot = kiln("graph", "--format", "dot", str(NOTEBOOKS / "kale_tagged.ipynb")).stdout
    assert '"transform" -> "train-model" [label="scaled"];' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_graph_svg():
    proc = kiln("graph", "--format", "svg", str(NOTEBOOKS / "kale_tagged.ipynb"))
    assert proc.returncode == 0 and "<svg" in proc.stdout


def test_svg_without_graphviz_says_how_to_get_it():
    # Only the venv on PATH: no `dot` there, whatever the machine has installed.
    env = dict(os.environ, PATH=str(VENV_BIN))
    proc = subprocess.run(
        [str(VENV_BIN / "kiln"), "graph", "--format", "svg", str(NOTEBOOKS / "kale_tagged.ipynb")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert "Graphviz" in proc.stderr


def test_kiln_run_from_the_shell_exits_with_the_runs_status_and_all_its_output(tmp_path):
    # The console script ends `kiln run` without interpreter teardown: the exit code and every
    # line of output must still come through, for a run that fails as for one that succeeds.
    good = make_notebook(
        tmp_path / "good.ipynb",
        [("values = list(range(5))", ["task:make"]), ("print(sum(values))", ["task:total"])],
    )
    bad = make_notebook(tmp_path / "bad.ipynb", [("1 / 0", ["task:boom"])])
    ok = kiln("run", str(good), "--json", "--workers", "1", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)  # the whole JSON document, flushed
    assert [t["status"] for t in summary["tasks"]] == ["done", "done"]
    assert "kiln: run" in ok.stderr and "succeeded" in ok.stderr

    failed = kiln("run", str(bad), "--workers", "1", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stdout.rstrip().splitlines()[-2].endswith(": failed")
    assert "ZeroDivisionError" in failed.stderr


def test_a_shown_value_sharing_its_line_keeps_the_statements_beside_it(tmp_path):
    nb = make_notebook(
        tmp_path / "semicolons.ipynb",
        [("a = 1; a", ["task:first"]), ("b = a + 1; b; c = b * 2\nc", ["task:second"])],
    )
    out = tmp_path / "build"
    assert kiln("compile", str(nb), "-o", str(out)).returncode == 0
    namespace: dict = {}
    exec((out / "tasks.py").read_text(), namespace)
    assert namespace["task_first"]() == {"a": 1}  # `a = 1` survived, `a` alone did not
    assert namespace["task_second"](1) == {}
