"""The CLI where a shell user meets it: a closed pipe (`kiln runs | head -1`), a compile killed
half-way, and setup code holding characters str.splitlines() would break at, run for real."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.compile.api import compile_notebook
from compiler.runtime import run_pipeline
from tests.nbutil import make_notebook
from tests.test_cli_compile import VENV_BIN, kiln

pytestmark = pytest.mark.timeout(300)


def _kiln_cmd() -> list[str]:
    exe = VENV_BIN / "kiln"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "compiler.cli"]


@pytest.mark.parametrize(
    "args",
    [["runs", "--limit", "50"], ["check", "NB"], ["--help"], ["graph", "NB"]],
    ids=["runs", "check", "help", "graph"],
)
def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path, args):
    """`kiln runs | head -1`: head exits after one line; kiln's next write meets a closed pipe."""
    notebook = make_notebook(
        tmp_path / "pipe.ipynb", [(f"x{i} = {i}", [f"task:t{i}"]) for i in range(40)]
    )
    # Runs to list: recorded without Dask, as a run on another machine would have been.
    from compiler.lineage import RunRecorder, open_store

    spec = compile_notebook(notebook).spec
    with open_store(f"sqlite:///{tmp_path / '.kiln' / 'lineage.db'}") as store:
        for _ in range(30):
            with RunRecorder(store, spec, notebook, {}, heartbeat_s=0) as recorder:
                recorder.fail("recorded for the test")
    argv = [str(notebook) if a == "NB" else a for a in args]
    shell = " ".join([*map(_quote, _kiln_cmd()), *map(_quote, argv)]) + " | head -c 1"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stdout  # head got its byte


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_a_compile_killed_at_any_moment_leaves_the_old_output_or_the_new(tmp_path):
    """The output folder is replaced whole: pipeline.json never without its tasks.py, and never
    a pipeline.json of one version beside a tasks.py of another."""
    out = tmp_path / "build"
    cells = [("import math", ["setup"])] + [
        (f"v{i} = math.sqrt({i})", [f"task:t{i}"]) for i in range(30)
    ]
    first = make_notebook(tmp_path / "first.ipynb", cells)
    assert kiln("compile", str(first), "-o", str(out)).returncode == 0
    second = make_notebook(tmp_path / "second.ipynb", [*cells, ("w = v1 + 1", ["task:last"])])
    seen = set()
    for delay in [0.05 * k for k in range(1, 25)]:
        proc = subprocess.Popen(
            [*_kiln_cmd(), "compile", str(second), "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert sorted(p.name for p in out.iterdir()) == ["pipeline.json", "tasks.py"]
        spec = json.loads((out / "pipeline.json").read_text())
        module = (out / "tasks.py").read_text()
        assert f"version {spec['version']}" in module.splitlines()[0]
        seen.add(spec["name"])
    assert kiln("compile", str(second), "-o", str(out)).returncode == 0
    assert json.loads((out / "pipeline.json").read_text())["name"] == "second"


def test_a_compile_that_fails_leaves_the_old_output_as_it_was(tmp_path):
    out = tmp_path / "build"
    good = make_notebook(tmp_path / "good.ipynb", [("x = 1", ["task:one"])])
    assert kiln("compile", str(good), "-o", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = make_notebook(tmp_path / "bad.ipynb", [("x = 1", ["task:one", "resources:cpu=nan"])])
    proc = kiln("compile", str(bad), "-o", str(out))
    assert proc.returncode == 1 and "cell 0" in proc.stderr and "nothing written" in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"])
def test_setup_code_with_line_breaking_characters_runs(tmp_path, dask_scheduler_address, char):
    """str.splitlines() breaks at these characters, Python does not: the setup slicer cut the
    string and the run failed with 'unterminated string literal (setup, line 1)'."""
    notebook = make_notebook(
        tmp_path / "chars.ipynb",
        [
            (f"SEPARATOR = 'a{char}b'\nimport math", ["setup"]),
            (f"parts = SEPARATOR.split({char!r})", ["task:split"]),
            (f"joined = '|'.join(parts) + '{char}'", ["task:join"]),
        ],
    )
    result = run_pipeline(
        compile_notebook(notebook).spec,
        notebook_path=notebook,
        scheduler=dask_scheduler_address,
        use_cache=False,
    )
    assert result.ok, [t.error for t in result.tasks]
    out = tmp_path / "build"
    assert kiln("compile", str(notebook), "-o", str(out)).returncode == 0
    compile((out / "tasks.py").read_text(encoding="utf-8"), "tasks.py", "exec")
    assert Path(out / "tasks.py").read_text(encoding="utf-8").count(char) >= 2


def test_a_20000_statement_line_compiles_without_waiting_for_ruff(tmp_path):
    """ruff format is quadratic in a line's length (16 s on this line, ~215 s at 100,000
    statements); such a module is written unpolished, and ruff leaves no cache behind."""
    line = "; ".join(f"v{k} = {k}" for k in range(20_000))
    notebook = make_notebook(tmp_path / "long.ipynb", [(line, ["task:long"])])
    out = tmp_path / "build"
    proc = kiln("compile", str(notebook), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    module = (out / "tasks.py").read_text()
    assert "v19999 = 19999" in module
    compile(module, "tasks.py", "exec")
    assert not (tmp_path / ".ruff_cache").exists()


def test_compile_never_replaces_a_file_or_the_users_other_files(tmp_path):
    notebook = make_notebook(tmp_path / "one.ipynb", [("x = 1", ["task:one"])])
    a_file = tmp_path / "build"
    a_file.write_text("my notes")
    proc = kiln("compile", str(notebook), "-o", str(a_file))
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert a_file.read_text() == "my notes"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "README.txt").write_text("keep me")
    assert kiln("compile", str(notebook), "-o", str(shared)).returncode == 0
    assert sorted(p.name for p in shared.iterdir()) == ["README.txt", "pipeline.json", "tasks.py"]
