"""Emit the pipeline: `pipeline.json` (plain data any runner executes) and a readable module."""

from __future__ import annotations

import ast
import json
import subprocess
import tempfile
import textwrap
import time
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from compiler.compile.analysis import (
    CAPTURE,
    PYTHON_BODY_CELL_MAGICS,
    CellAnalysis,
    python_line_magic,
)
from compiler.compile.dag import Pipeline, Task, task_policy
from compiler.compile.source_text import source_lines
from compiler.compile.tags import python_name
from compiler.model.diagnostics import CompileError, Diagnostic

SCHEMA_VERSION = 1


@lru_cache(maxsize=1)
def pipeline_schema() -> dict[str, Any]:
    text = resources.files("compiler").joinpath("model/schema/pipeline.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_spec(spec: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `spec` does not follow the documented schema."""
    import jsonschema

    jsonschema.validate(spec, pipeline_schema())


def imported_modules(python_sources: list[str]) -> list[str]:
    """Top-level modules that absolute imports name, in first-seen order (`import a.b`,
    `from a.b import c` -> "a"). A runner digests the ones that are files beside the notebook
    (`helpers.py`) into the cache key; an export pins the installed ones."""
    seen: dict[str, None] = {}
    for source in python_sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    seen.setdefault(alias.name.split(".")[0], None)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                seen.setdefault(node.module.split(".")[0], None)
    return list(seen)


def task_spec(task: Task, metrics: list[str] | None = None) -> dict[str, Any]:
    policy = task_policy(task)
    setup = "\n".join(st.statement.source for st in task.setup)
    spec = {
        "name": task.name,
        "version": task.version,
        "upstream": list(task.upstream),
        "inputs": dict(task.inputs),
        "outputs": list(task.outputs),
        "parameters": list(task.parameters),
        "cells": [a.cell.id for a in task.cells],
        "code": [
            {"cell_id": a.cell.id, "cell_index": a.cell.index, "source": a.cell.source}
            for a in task.cells
        ],
        "setup": setup + "\n" if setup else "",
        "resources": policy["resources"],
        "retries": policy["retries"],
        "timeout": policy["timeout"],
        "cache": policy["cache"],
        "datasets": {"reads": list(task.reads_files), "writes": list(task.writes_files)},
        "imports": imported_modules(
            [st.statement.source for st in task.setup] + [a.python for a in task.cells]
        ),
    }
    if metrics:  # names the metrics cell reads from this task: reported when it finishes
        spec["metrics"] = list(metrics)
    return spec


def pipeline_spec(pipeline: Pipeline) -> dict[str, Any]:
    notebook_file = (pipeline.notebook.path or f"{pipeline.name}.ipynb").replace("\\", "/")
    return {
        "schema_version": SCHEMA_VERSION,
        "name": pipeline.name,
        "version": pipeline.version,
        "notebook": {"file": notebook_file.rsplit("/", 1)[-1], "digest": pipeline.notebook.digest},
        "parameters": {p.name: p.default for p in pipeline.parameters},
        "parameters_source": pipeline.parameters_source,
        "computed_parameters": pipeline.computed_parameters,
        "parameters_setup": pipeline.parameters_setup,
        "tasks": [
            task_spec(t, pipeline.monitoring.task_metrics.get(t.name)) for t in pipeline.tasks
        ],
        **monitoring_spec(pipeline),
        **production_metadata(pipeline.notebook.node),
    }


def monitoring_spec(pipeline: Pipeline) -> dict[str, Any]:
    """`metrics`, `checks`, `drift`, `metrics_cell`: only when the notebook declares any, so
    notebooks without them keep their spec (and its digest) as before."""
    monitoring = pipeline.monitoring
    if not (monitoring.metrics or monitoring.checks or monitoring.drift):
        return {}
    return monitoring.to_spec()


def production_metadata(node: Any) -> dict[str, Any]:
    """`owner` and `budget` from the notebook's metadata `kiln` (written by `kiln owner set`,
    `kiln budget set` and the panel): who answers for the pipeline and what a run may spend.
    Neither is part of the version: naming an owner does not invalidate the cache."""
    kiln = dict((getattr(node, "metadata", None) or {}).get("kiln") or {})
    extra: dict[str, Any] = {}
    owner = kiln.get("owner")
    if isinstance(owner, str) and owner.strip():
        extra["owner"] = {"name": owner.strip()}
        if isinstance(kiln.get("team"), str) and kiln["team"].strip():
            extra["owner"]["team"] = kiln["team"].strip()
    if isinstance(kiln.get("budget"), str) and kiln["budget"].strip():
        extra["budget"] = kiln["budget"].strip()
    return extra


def spec_json(spec: dict[str, Any]) -> str:
    # Insertion order is the documented order; json.dumps keeps it, so output is stable.
    return json.dumps(spec, indent=2, ensure_ascii=False, default=repr) + "\n"


# --- the generated Python module -----------------------------------------------------------------


def function_name(task_name: str) -> str:
    return f"task_{python_name(task_name)}"


def python_module(pipeline: Pipeline) -> str:
    """One function per task: parameters and inputs in, outputs out; setup code at the top."""
    seen: set[int] = set()
    setup_sources: list[str] = []
    # Setup statements in notebook order, each once, as used by any task.
    all_setup = sorted(
        (st for t in pipeline.tasks for st in t.setup),
        key=lambda st: (st.cell.index, st.statement.first_line),
    )
    for st in all_setup:
        if id(st) not in seen:
            seen.add(id(st))
            setup_sources.append(st.statement.source)
    task_code = {id(a): _code_that_parses(a) for t in pipeline.tasks for a in t.cells}
    body_text = "\n".join(setup_sources) + "".join(task_code.values())
    needs_ipython = "get_ipython()" in body_text
    needs_capture = "capture_output()" in body_text

    notebook_file = (pipeline.notebook.path or pipeline.name).replace("\\", "/").rsplit("/")[-1]
    out: list[str] = [
        f'"""Pipeline {pipeline.name!r}, version {pipeline.version}: generated by Kiln from',
        f"{notebook_file}. Recompile instead of editing this file.",
        '"""',
        "",
    ]
    if needs_ipython:
        out += ["from IPython import get_ipython"]
    if needs_capture:
        out += ["from IPython.utils.capture import capture_output"]
    if needs_ipython or needs_capture:
        out += [""]
    if setup_sources:
        out += ["# --- setup ---", *setup_sources, ""]
    params = {p.name: p.default for p in pipeline.parameters}
    out += [f"PARAMETERS = {params!r}", ""]
    out += [f"TASK_ORDER = {[t.name for t in pipeline.tasks]!r}", ""]
    for task in pipeline.tasks:
        out += ["", *_task_function(task, task_code)]
    return polish_with_ruff("\n".join(out).rstrip() + "\n")


def _task_function(task: Task, task_code: dict[int, str]) -> list[str]:
    args = list(task.parameters) + [n for n in task.inputs if n not in task.parameters]
    indices = [str(a.cell.index) for a in task.cells]
    cells = ("cell " if len(indices) == 1 else "cells ") + ", ".join(indices)
    lines = [f"def {function_name(task.name)}({', '.join(args)}):"]
    lines.append(f'    """Task {task.name!r} (notebook {cells}), version {task.version}."""')
    for analysis in task.cells:
        code = _without_display_only_lines(task_code[id(analysis)]).strip("\n")
        if not code.strip():
            continue
        lines.append(f"    # cell {analysis.cell.index}")
        lines.append(textwrap.indent(code, "    "))
    if task.outputs:
        items = ", ".join(f"{n!r}: {n}" for n in task.outputs)
        lines.append(f"    return {{{items}}}")
    else:
        lines.append("    return {}")
    lines.append("")
    return lines


class ModuleError(CompileError):
    """A cell's code cannot become part of tasks.py (the diagnostic names the cell)."""


def _parses_in_a_function(code: str) -> bool:
    try:
        ast.parse("def _task():\n" + textwrap.indent(code.strip("\n") or "pass", "    "))
    except (SyntaxError, RecursionError, MemoryError):
        return False
    return True


def _code_that_parses(analysis: CellAnalysis) -> str:
    """The cell as it goes into its task function: the readable form (module_code) when it
    parses there, else the plain IPython form; a cell that parses in neither (99 indentation
    levels: the function adds one, and Python allows 100) is a compile error at the cell."""
    for code in (module_code(analysis), analysis.python):
        if _parses_in_a_function(_without_display_only_lines(code)):
            return code
    cell = analysis.cell
    raise ModuleError(
        [
            Diagnostic(
                "error",
                "not-a-task-body",
                "the cell's code does not parse inside a task function (too many indentation "
                "levels?); it cannot be compiled into tasks.py",
                cell.index,
                cell.id,
            )
        ]
    )


def module_code(analysis: CellAnalysis) -> str:
    """A cell as plain Python for the generated module: timing magics become the code they
    time and %%capture a `with capture_output()` block, so the module reads (and lints) like
    the notebook's logic; other magics stay IPython calls."""
    magic = analysis.cell_magic
    if magic is not None:
        name, args = magic
        if name in PYTHON_BODY_CELL_MAGICS:
            return f"# %%{name} {args}".rstrip() + "\n" + analysis.body_python
        if name == CAPTURE and analysis.body_python is not analysis.python:
            target = next((a for a in args.split() if not a.startswith("-")), None)
            head = "with capture_output()" + (f" as {target}:" if target else ":")
            return head + "\n" + textwrap.indent(analysis.body_python.strip("\n") or "pass", "    ")
        return analysis.python
    return _inline_timing_magics(analysis.python)


def _inline_timing_magics(python: str) -> str:
    """`get_ipython().run_line_magic('time', 'x = f()')` statements -> `x = f()  # %time`."""
    if "run_line_magic" not in python:
        return python
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return python
    lines = source_lines(python)
    for stmt in reversed(tree.body):
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            code = python_line_magic(stmt.value)
            if code is not None and "\n" not in code and stmt.lineno == stmt.end_lineno:
                indent = lines[stmt.lineno - 1][: stmt.col_offset]
                magic = stmt.value.args[0].value  # type: ignore[attr-defined]
                lines[stmt.lineno - 1] = f"{indent}{code}  # %{magic}"
    return "\n".join(lines)


def _without_display_only_lines(python: str) -> str:
    """Drop statements that only show a value in the notebook (`df.head()` is kept: a call may
    act; a bare `scores` or `X.shape` does nothing outside a notebook)."""
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return python
    lines = source_lines(python)
    for stmt in reversed(tree.body):
        if not (isinstance(stmt, ast.Expr) and _display_only(stmt.value)):
            continue
        first, last = stmt.lineno - 1, (stmt.end_lineno or stmt.lineno) - 1
        shares_a_line = any(
            other is not stmt and other.lineno - 1 <= last and (other.end_lineno or 0) - 1 >= first
            for other in tree.body
        )
        if shares_a_line:
            # `a = 1; a`: drop only the shown expression, keep what shares its line.
            if first != last or stmt.end_col_offset is None:
                continue
            line = lines[first]
            before = line[: stmt.col_offset].rstrip().rstrip(";").rstrip()
            after = line[stmt.end_col_offset :].lstrip().lstrip(";").lstrip()
            shown = line[stmt.col_offset : stmt.end_col_offset]
            kept = "; ".join(part for part in (before, after) if part)
            lines[first] = f"{kept}  # shown in the notebook: {shown}"
            continue
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        shown = " ".join(line.strip() for line in lines[first : last + 1])
        lines[first : last + 1] = [f"{indent}# shown in the notebook: {shown}"]
    return "\n".join(lines)


def _display_only(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Constant):
        return not isinstance(expr.value, str)  # a string may be a docstring-like note
    return not any(
        isinstance(node, ast.Call | ast.Await | ast.Yield | ast.YieldFrom | ast.NamedExpr)
        for node in ast.walk(expr)
    )


# Rules whose findings in notebook code are expected in a generated module: notebook cells keep
# intermediate variables (F841) and define small lambdas or one-letter names (E731, E741).
_ACCEPTED_NOTEBOOK_STYLE = "F841,E731,E741"
# Polishing is cosmetic: a module above 2 MB, with a line above 50,000 characters, or on which
# ruff takes over 20 s in all, is left as it is. ruff format is quadratic in a line's length:
# one line of 5,000 statements (68 KB) 0.7 s, 20,000 (298 KB) 16 s, 100,000 ~215 s (measured).
RUFF_MAX_BYTES = 2_000_000
RUFF_MAX_LINE = 50_000
RUFF_TIME_LIMIT_S = 20.0


def polish_with_ruff(source: str) -> str:
    """Sort imports, format, and mark the accepted notebook-style findings, with ruff.

    ruff is a dependency of Kiln; if its binary cannot run, the module is returned unpolished
    (still valid Python)."""
    try:
        from ruff.__main__ import find_ruff_bin

        ruff = find_ruff_bin()
    except (ImportError, FileNotFoundError):
        return source
    if (
        len(source) > RUFF_MAX_BYTES
        or max(map(len, source_lines(source)), default=0) > RUFF_MAX_LINE
    ):
        return source
    deadline = time.monotonic() + RUFF_TIME_LIMIT_S
    with tempfile.TemporaryDirectory(prefix="kiln-emit-") as tmp:
        path = Path(tmp) / "tasks.py"
        path.write_text(source, encoding="utf-8")
        # --no-cache: ruff would otherwise leave .ruff_cache/ in the current folder (the user's
        # project, the Jupyter server's root); running in the temporary folder keeps it there.
        base = [ruff, "--isolated", "--quiet", "--no-cache"]
        steps = [
            [ruff, "check", *base[1:], "--fix", "--select", "I001,F401", str(path)],
            [ruff, "format", *base[1:], str(path)],
            [
                ruff,
                "check",
                *base[1:],
                "--add-noqa",
                "--select",
                _ACCEPTED_NOTEBOOK_STYLE,
                str(path),
            ],
        ]
        for cmd in steps:
            try:
                done = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=False,
                    cwd=tmp,
                    timeout=max(0.1, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired:
                return source  # a 100,000-statement line took ruff minutes; polish is optional
            if done.returncode not in (0, 1):  # 1: findings left, which is fine here
                return source
        polished = path.read_text(encoding="utf-8")
    # ruff's layout can nest deeper than the input (a chain of 300 lambdas, split over lines
    # and parenthesised, no longer parses: MemoryError); then the plain module it is.
    try:
        ast.parse(polished)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return source
    return polished
