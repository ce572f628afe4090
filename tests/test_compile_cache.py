"""`kiln run` keeps compiled specs by notebook content: a rerun skips the analysis, an edit never
runs stale code, and warnings and errors show every time."""

from __future__ import annotations

import json

import compiler.cli.main as cli
from compiler.compile.api import compile_notebook
from compiler.compile.cache import CACHE_FOLDER, compiled_spec
from tests.nbutil import make_notebook


def _notebook(folder, body="total = sum(values)"):
    return make_notebook(
        folder / "report.ipynb",
        [
            ("import random", ["setup"]),
            ("values = [random.random() for _ in range(3)]", ["task:sample"]),
            (body, ["task:total"]),
        ],
    )


def _entries(folder):
    return sorted((folder / CACHE_FOLDER).glob("*.json"))


def test_an_unchanged_notebook_compiles_once_and_gives_the_same_spec(tmp_path):
    notebook = _notebook(tmp_path)
    spec, diagnostics = compiled_spec(notebook)
    assert spec == compile_notebook(notebook).spec
    [entry] = _entries(tmp_path)
    assert json.loads(entry.read_text())["spec"] == spec

    cached_spec, cached_diagnostics = compiled_spec(notebook)
    assert cached_spec == spec
    assert cached_diagnostics == diagnostics  # the unseeded-randomness warning comes back too
    assert [d.code for d in cached_diagnostics] == ["unseeded-random"]


def test_an_edit_recompiles_and_keeps_one_entry_per_notebook(tmp_path):
    notebook = _notebook(tmp_path)
    before, _ = compiled_spec(notebook)
    _notebook(tmp_path, "total = sum(values) * 2")
    after, _ = compiled_spec(notebook)
    assert after["tasks"][1]["version"] != before["tasks"][1]["version"]
    assert after["tasks"][1]["code"][0]["source"] == "total = sum(values) * 2"
    assert len(_entries(tmp_path)) == 1


def test_a_notebook_with_errors_is_never_cached(tmp_path, capsys):
    notebook = make_notebook(tmp_path / "broken.ipynb", [("y = x + 1", ["task:use"])])
    for _ in range(2):
        spec, diagnostics = compiled_spec(notebook)
        assert spec is None
        assert [d.code for d in diagnostics if d.severity == "error"] == ["undefined-name"]
        assert cli.main(["run", str(notebook)]) == 1
        assert "cell 0, line 1" in capsys.readouterr().err
    assert _entries(tmp_path) == []


def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path):
    notebook = _notebook(tmp_path)
    spec, _ = compiled_spec(notebook)
    [entry] = _entries(tmp_path)
    entry.write_text('{"spec": [1, 2')
    assert compiled_spec(notebook)[0] == spec
    assert json.loads(entry.read_text())["spec"] == spec


def test_an_unreadable_notebook_is_still_refused(tmp_path, capsys):
    path = tmp_path / "notes.ipynb"
    path.write_text("not json")
    assert cli.main(["run", str(path)]) == 2
    assert "not a notebook" in capsys.readouterr().err
