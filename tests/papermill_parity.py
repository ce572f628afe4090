"""Run papermill's own test notebooks through papermill's default engine and `--engine kiln`, and
compare what a papermill user sees: the exception (its class and message), the injected cell,
and each cell's outputs, `metadata.papermill` status and exception.

Times, cell ids and execution-count values are not compared (they differ between any two runs);
whether a cell has an execution count is. Error tracebacks are not compared (ANSI colours, file
paths and frames differ between an ipykernel and a Dask worker); ename and evalue are, with the
"(FILE, line N)" a SyntaxError's message names dropped (ipykernel compiles a cell under a
temporary file name).

Used by tests/test_papermill_parity.py and tests/benchmarks/papermill_bench.py.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat


def papermill_notebooks_dir() -> Path:
    import papermill

    return Path(papermill.__file__).parent / "tests" / "notebooks"


@dataclass
class Case:
    name: str  # the case's name (a notebook's stem, or stem-variant)
    notebook: str  # path under papermill's tests/notebooks
    parameters: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # execute_notebook keyword arguments
    upgrade: bool = False  # save as nbformat 4.5 with ids first (papermill's *_ids.ipynb)
    files: dict[str, str] = field(default_factory=dict)  # extra files in the working folder
    cwd: str | None = None  # working folder, relative to the notebook's folder


def cases() -> list[Case]:
    """Every notebook papermill ships for its tests, with parameters a user would pass."""
    return [
        Case("binder", "binder.ipynb"),
        Case("blank-vscode", "blank-vscode.ipynb"),
        Case("broken", "broken.ipynb"),
        Case("broken1", "broken1.ipynb"),
        Case("broken1_ids", "broken1.ipynb", upgrade=True),
        Case("broken2", "broken2.ipynb"),
        Case("broken2_ids", "broken2.ipynb", upgrade=True),
        Case(
            "complex_parameters",
            "complex_parameters.ipynb",
            {"msg": "parity", "a": 3.5, "b": ["x", "y"]},
        ),
        Case("gcs-simple_notebook", "gcs/gcs_in/gcs-simple_notebook.ipynb"),
        Case("keyboard_interrupt", "keyboard_interrupt.ipynb", options={"execution_timeout": 2}),
        Case("line_magic_error", "line_magic_error.ipynb"),
        Case("nb_version_4.4", "nb_version_4.4.ipynb", {"var": 7}),
        Case("no_parameters", "no_parameters.ipynb", {"msg": "undeclared"}),
        Case("notimplemented_translator", "notimplemented_translator.ipynb", {"msg": "r"}),
        Case("read_check", "read_check.ipynb", files={"check.txt": "ok"}),
        Case(
            "read_check-cwd",
            "read_check.ipynb",
            files={"data/check.txt": "ok"},
            cwd="data",
        ),
        Case("report_mode_test", "report_mode_test.ipynb", {"a": 3}, {"report_mode": True}),
        Case("result_no_exec", "result_no_exec.ipynb", {"foo": 2}),
        Case("s3-simple_notebook", "s3/s3_in/s3-simple_notebook.ipynb", {"msg": "s3"}),
        Case("simple_execute", "simple_execute.ipynb", {"msg": "Hello"}),
        Case("simple_execute_ids", "simple_execute.ipynb", {"msg": "Hello"}, upgrade=True),
        Case("simple_execute-nan", "simple_execute.ipynb", {"msg": float("nan")}),
        Case("sysexit", "sysexit.ipynb"),
        Case("sysexit0", "sysexit0.ipynb"),
        Case("sysexit1", "sysexit1.ipynb"),
        Case("systemexit", "systemexit.ipynb"),
        Case("test_autosave", "test_autosave.ipynb"),
        Case("test_logging", "test_logging.ipynb"),
        Case("test_notebooknode_io", "test_notebooknode_io.ipynb"),
    ]


def stage(case: Case, root: Path) -> Path:
    """Copy the case's notebook into `root/case.name/` (both engines run in that folder)."""
    folder = root / case.name
    folder.mkdir(parents=True, exist_ok=True)
    source = papermill_notebooks_dir() / case.notebook
    target = folder / Path(case.notebook).name
    if case.upgrade:
        nb = nbformat.read(source, as_version=4)
        nb = nbformat.v4.upgrade(nb)
        for index, cell in enumerate(nb.cells):
            cell["id"] = f"{case.name}-{index}"
        nbformat.write(nb, target)
    else:
        shutil.copyfile(source, target)
    for name, text in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return target


@dataclass
class Outcome:
    exception: str | None  # "ClassName: message", as papermill's CLI would print it
    notebook: dict[str, Any] | None  # the written output notebook
    seconds: float


def run_engine(
    case: Case, notebook: Path, output: Path, engine: str | None, **engine_kwargs: Any
) -> Outcome:
    """papermill.execute_notebook in this process, as `papermill IN OUT -p ...` would call it."""
    import papermill

    options = dict(case.options)
    cwd = str(notebook.parent / case.cwd) if case.cwd else None
    started = time.perf_counter()
    exception = None
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=dict(case.parameters),
            engine_name=engine,
            progress_bar=False,
            cwd=cwd,
            **options,
            **engine_kwargs,
        )
    except Exception as exc:
        exception = describe_exception(exc)
    seconds = time.perf_counter() - started
    written = json.loads(output.read_text()) if output.exists() else None
    return Outcome(exception, written, seconds)


def describe_exception(exc: BaseException) -> str:
    """The exception as compared: a cell's failure by its cell, ename and evalue (its
    traceback text differs between a kernel and a worker); any other by class and message."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        evalue = _SYNTAX_FILE.sub("", str(exc.evalue))
        return f"PapermillExecutionError at cell {exc.cell_index}: {exc.ename}: {evalue}"
    return f"{type(exc).__name__}: {normalize_text(str(exc))}"


_SYNTAX_FILE = re.compile(r" \([^()]*, line \d+\)$")
_IN_COUNT = re.compile(r"In \[(\d+|None)\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def normalize_text(text: str) -> str:
    text = _ANSI.sub("", text)
    return _IN_COUNT.sub("In [N]", text)


def _output_view(output: dict[str, Any]) -> dict[str, Any]:
    kind = output.get("output_type")
    if kind == "stream":
        return {"stream": output.get("name"), "text": _joined(output.get("text"))}
    if kind == "error":
        return {
            "error": output.get("ename"),
            "evalue": _SYNTAX_FILE.sub("", output.get("evalue", "")),
        }
    data = output.get("data", {})
    return {kind: {mime: _joined(v) for mime, v in data.items() if mime.startswith("text/")}}


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _merged_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive writes to one stream as one output (a notebook renders them so)."""
    merged: list[dict[str, Any]] = []
    for view in outputs:
        if merged and "stream" in view and merged[-1].get("stream") == view["stream"]:
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + view["text"]}
        else:
            merged.append(view)
    return merged


def notebook_view(nb: dict[str, Any] | None) -> Any:
    """What is compared: per cell, its type, source, outputs, papermill status and exception."""
    if nb is None:
        return None
    cells = []
    for cell in nb.get("cells", []):
        papermill = cell.get("metadata", {}).get("papermill", {})
        view: dict[str, Any] = {
            "type": cell.get("cell_type"),
            "source": normalize_text(_joined(cell.get("source", ""))),
            "tags": cell.get("metadata", {}).get("tags", []),
            "status": papermill.get("status"),
            "exception": papermill.get("exception"),
            "timed": papermill.get("start_time") is not None,
        }
        if cell.get("cell_type") == "code":
            view["counted"] = cell.get("execution_count") is not None
            view["outputs"] = _merged_streams([_output_view(o) for o in cell.get("outputs", [])])
            view["hidden"] = cell.get("metadata", {}).get("jupyter", {}).get("source_hidden")
        cells.append(view)
    meta = nb.get("metadata", {}).get("papermill", {})
    return {
        "nbformat": (nb.get("nbformat"), nb.get("nbformat_minor")),
        "exception": meta.get("exception"),
        "parameters": json.dumps(meta.get("parameters"), sort_keys=True, default=repr),
        "cells": cells,
    }


def compare(default: Outcome, kiln: Outcome) -> list[str]:
    """The differences a user would notice, as lines; empty when the runs agree."""
    diffs: list[str] = []
    if default.exception != kiln.exception:
        diffs.append(f"exception: papermill {default.exception!r} / kiln {kiln.exception!r}")
    a, b = notebook_view(default.notebook), notebook_view(kiln.notebook)
    if a is None or b is None:
        if (a is None) != (b is None):
            diffs.append(
                f"output notebook written: papermill {a is not None} / kiln {b is not None}"
            )
        return diffs
    for key in ("nbformat", "exception", "parameters"):
        if a[key] != b[key]:
            diffs.append(f"metadata {key}: papermill {a[key]!r} / kiln {b[key]!r}")
    if len(a["cells"]) != len(b["cells"]):
        diffs.append(f"cells: papermill {len(a['cells'])} / kiln {len(b['cells'])}")
    for index, (ca, cb) in enumerate(zip(a["cells"], b["cells"], strict=False)):
        for key in sorted(set(ca) | set(cb)):
            if ca.get(key) != cb.get(key):
                diffs.append(
                    f"cell {index} {key}: papermill {ca.get(key)!r} / kiln {cb.get(key)!r}"
                )
    return diffs
