"""1,100 malformed and hostile notebooks (tests/hostile_corpus.py, seed 18) through `kiln check`
and `kiln compile`, as an attacker or a careless user would feed them.

For every notebook: no traceback; exit 0, 1 (diagnostics) or 2 (unreadable) as the case says,
and a non-zero exit names the place (cell index and id, or the field); `kiln compile` writes
nothing on error and, on success, a pipeline.json that follows the JSON Schema (no NaN or
Infinity) and a tasks.py that parses; the working folder holds nothing new (no .ruff_cache);
and no notebook code ran (each notebook's code would leave a marker file).

The corpus goes through the CLI's `main()` in this process (capturing exit code, stdout and
stderr), which takes seconds; a sample of 10 goes through the real `kiln` script.
"""

from __future__ import annotations

import ast
import io
import json
import re
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jsonschema
import pytest

from compiler.cli.main import main
from compiler.compile.emit import pipeline_schema
from tests.hostile_corpus import OK, UNREADABLE, Case, corpus
from tests.test_cli_compile import kiln

SEED = 18
SIZE = 1_100


def run_main(argv: list[str]) -> tuple[int | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code: int | None = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # the finding itself: report it as the traceback a user sees
            err.write(traceback.format_exc())
            code = None
    return code, out.getvalue(), err.getvalue()


def _strict_json(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"pipeline.json holds {token}, which JSON does not allow")

    return json.loads(text, parse_constant=refuse)


def check_case(case: Case, project: Path, argv_prefix: list[str] | None = None) -> list[str]:
    """The problems found with one notebook (empty: it held)."""
    problems: list[str] = []
    notebook = project / case.file_name
    notebook.write_bytes(case.content)
    out = project.parent / "out" / case.name
    runs = {}
    for command in ("check", "compile"):
        argv = [command, str(notebook)] + (["-o", str(out)] if command == "compile" else [])
        if argv_prefix is None:
            code, stdout, stderr = run_main(argv)
        else:
            proc = kiln(*argv)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        runs[command] = code
        said = stdout + stderr
        if "Traceback" in said or code is None:
            problems.append(f"{command}: traceback:\n{said[-1500:]}")
            continue
        if code not in (0, 1, 2):
            problems.append(f"{command}: exit {code}")
        expected = case.exit
        if expected is None:
            if code not in (OK, 1):
                problems.append(f"{command}: exit {code}, expected 0 or 1: {said[-600:]}")
        elif code != expected:
            problems.append(f"{command}: exit {code}, expected {expected}: {said[-600:]}")
        if (
            code not in (0, None)
            and case.places
            and not any(re.search(p, said) for p in case.places)
        ):
            problems.append(f"{command}: exit {code} without naming {case.places}: {said[-600:]}")
        if code == UNREADABLE and said.rstrip().endswith(":"):
            problems.append(f"{command}: empty message: {said!r}")
        if command == "compile":
            if code != 0 and out.exists():
                problems.append("compile: wrote output although it failed")
            if code == 0:
                problems += _check_output(case, out)
    if runs.get("check") != runs.get("compile") and None not in runs.values():
        problems.append(f"check and compile disagree: {runs}")
    return problems


def _check_output(case: Case, out: Path) -> list[str]:
    problems = []
    try:
        spec = _strict_json((out / "pipeline.json").read_text(encoding="utf-8"))
        jsonschema.validate(spec, pipeline_schema())
    except (OSError, ValueError, jsonschema.ValidationError) as exc:
        problems.append(f"compile: pipeline.json not schema-valid: {str(exc)[:300]}")
    try:
        module = (out / "tasks.py").read_text(encoding="utf-8")
        ast.parse(module)
        problems += [f"tasks.py lacks {s!r}" for s in case.module_has if s not in module]
    except (OSError, SyntaxError, ValueError) as exc:
        problems.append(f"compile: tasks.py does not parse: {exc}")
    return problems


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The user's project folder, which is also the current folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _left_behind(project: Path, cases: list[Case]) -> list[str]:
    ours = {c.file_name for c in cases}
    return sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.name not in ours)


def test_a_thousand_hostile_notebooks_give_diagnostics_never_tracebacks(project, tmp_path):
    marker = tmp_path / "notebook-code-ran"
    cases = corpus(SEED, str(marker), SIZE)
    assert len(cases) >= 1_000
    failed = {}
    for case in cases:
        problems = check_case(case, project)
        if problems:
            failed[case.name] = problems
    held = len(cases) - len(failed)
    print(f"\nhostile notebooks: {held}/{len(cases)} held (kiln check + kiln compile)")
    assert not failed, "\n".join(f"{k}: {v}" for k, v in list(failed.items())[:15])
    assert not marker.exists(), "compiling ran notebook code"
    assert _left_behind(project, cases) == []  # no .ruff_cache, no .kiln, no build/
    assert not list((tmp_path / "out").glob(".*"))  # no staging folder left either


def test_the_corpus_is_the_same_for_a_seed(tmp_path):
    one = corpus(SEED, "m", 200)
    two = corpus(SEED, "m", 200)
    assert [(c.name, c.content) for c in one] == [(c.name, c.content) for c in two]
    kinds = {c.name.split("-", 1)[1] for c in corpus(SEED, "m", SIZE)}
    assert len(kinds) >= 40, sorted(kinds)


def test_a_sample_through_the_real_kiln_script(project, tmp_path):
    marker = tmp_path / "notebook-code-ran"
    cases = corpus(SEED, str(marker), SIZE)
    # Ten different kinds, spread over the corpus.
    sample: list[Case] = []
    seen: set[str] = set()
    for case in cases[::7]:
        kind = case.name.split("-", 1)[1].split("-")[0]
        if kind not in seen:
            seen.add(kind)
            sample.append(case)
        if len(sample) == 10:
            break
    failed = {c.name: p for c in sample if (p := check_case(c, project, argv_prefix=[]))}
    assert not failed, failed
    assert not marker.exists()
    assert _left_behind(project, sample) == []


def test_duplicate_cell_ids_compile_to_the_same_spec_every_time(project):
    cases = [c for c in corpus(SEED, "m", 200) if "duplicate-cell-ids" in c.name]
    notebook = project / "dup.ipynb"
    notebook.write_bytes(cases[0].content)
    specs = []
    for n in range(2):
        code, _, err = run_main(["compile", str(notebook), "-o", str(project.parent / f"b{n}")])
        assert code == 0, err
        specs.append(json.loads((project.parent / f"b{n}" / "pipeline.json").read_text()))
    assert specs[0] == specs[1]
    ids = [cell for task in specs[0]["tasks"] for cell in task["cells"]]
    assert len(ids) == len(set(ids))  # each cell still has its own id
