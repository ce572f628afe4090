"""Needless ordering: the share of ordered task pairs that no recorded value flow requires.

Run: .venv/bin/python tests/benchmarks/ordering_bench.py [NOTEBOOK ...]

Each notebook (default: tests/notebooks/*.ipynb and the notebooks papermill ships with its own
tests) is compiled with every code cell its own task, and executed top to bottom in one IPython
namespace that logs every read and write of a name (functions defined in the notebook read
through it too, at call time) and digests every value before and after each cell. A recorded
flow is (cell that last bound or changed a value, cell that reads it), plus (earlier reader,
cell that changes that value in place). The compiled DAG orders a pair when one task is an
ancestor of the other; the pair is needless when the closure of the recorded flows does not
order it. Also printed: flows the DAG misses (a missed flow is a wrong pipeline, target 0).
Target: needless ordering <= 10 % over all notebooks.

Each notebook runs in a subprocess, in a temporary copy of its folder (the run may write files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def default_notebooks() -> list[Path]:
    found = sorted((ROOT / "tests" / "notebooks").glob("*.ipynb"))
    try:
        import papermill

        found += sorted((Path(papermill.__file__).parent / "tests" / "notebooks").glob("*.ipynb"))
    except ImportError:
        pass
    return found


# --- recording (runs in the subprocess) ------------------------------------------------------


def _digest(value: Any) -> str | None:
    import pickle
    import types

    if isinstance(value, types.ModuleType | types.FunctionType | type):
        return None
    if type(value).__module__.startswith("matplotlib"):
        return None  # figures and axes pickle differently after each draw: no stable digest
    try:
        return hashlib.sha1(pickle.dumps(value, protocol=5)).hexdigest()
    except Exception:
        return None


def record(notebook: Path) -> dict[str, Any]:
    """Execute the notebook's code cells in one namespace; return the flows between cells."""
    import nbformat
    from IPython.core.interactiveshell import InteractiveShell

    nb = nbformat.read(notebook, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    log: list[tuple[str, str]] = []

    class LoggingNamespace(dict):
        def __getitem__(self, key: str) -> Any:
            log.append(("read", key))
            return dict.__getitem__(self, key)

        def __setitem__(self, key: str, value: Any) -> None:
            log.append(("write", key))
            dict.__setitem__(self, key, value)

        def __delitem__(self, key: str) -> None:
            log.append(("write", key))
            dict.__delitem__(self, key)

    ns = LoggingNamespace()
    shell = InteractiveShell(user_ns=ns)
    shell.displayhook.cache_size = 0
    baseline = set(ns)
    flows: set[tuple[int, int]] = set()
    why: dict[str, str] = {}  # "writer->reader": the name, for reading a missed flow
    last_writer: dict[str, int] = {}
    readers_since: dict[str, set[int]] = {}
    executed = 0
    for index, source in enumerate(sources):
        if not source.strip():
            continue
        before = {k: (id(v), _digest(v)) for k, v in dict.items(ns) if k not in baseline}
        log.clear()
        result = shell.run_cell(source, store_history=False, silent=False)
        events = list(log)
        after = {k: (id(v), _digest(v)) for k, v in dict.items(ns) if k not in baseline}
        local: set[str] = set()
        rebound: set[str] = set()
        for kind, name in events:
            if name in baseline or name.startswith("_"):
                continue
            if kind == "write":
                local.add(name)
                rebound.add(name)
            elif name not in local and name in last_writer:
                flows.add((last_writer[name], index))
                why.setdefault(f"{last_writer[name]}->{index}", f"reads {name}")
                readers_since.setdefault(name, set()).add(index)
        changed = {
            k
            for k, (ident, digest) in after.items()
            if k in before and k not in rebound and before[k][0] == ident and digest != before[k][1]
        }
        for name in changed:
            # Changed in place: the cell needed the earlier value, and earlier readers of
            # it had to run first.
            if name in last_writer:
                flows.add((last_writer[name], index))
                why.setdefault(f"{last_writer[name]}->{index}", f"changes {name}")
            for reader in readers_since.get(name, ()):
                if reader != index:
                    flows.add((reader, index))
                    why.setdefault(f"{reader}->{index}", f"changes {name} read before")
        for name in rebound | changed:
            last_writer[name] = index
            readers_since[name] = set()
        executed = index + 1
        if not result.success:
            break
    return {"flows": sorted(flows), "why": why, "executed": executed, "cells": len(sources)}


# --- comparing (runs in the parent) ----------------------------------------------------------


def retagged(notebook: Path, folder: Path) -> tuple[Path, dict[str, int]]:
    """A copy of the notebook with each non-empty code cell a task of its own."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    task_of: dict[str, int] = {}
    code_index = -1
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code_index += 1
        tags = [f"task:c{code_index}"]
        cell.metadata["tags"] = tags
        task_of[f"c{code_index}"] = code_index
    out = folder / notebook.name
    nbformat.write(nb, out)
    return out, task_of


def closure(edges: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    children: dict[int, set[int]] = {}
    for a, b in edges:
        children.setdefault(a, set()).add(b)
    pairs: set[tuple[int, int]] = set()
    for start in list(children):
        stack, seen = list(children[start]), set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            pairs.add((start, node))
            stack.extend(children.get(node, ()))
    return pairs


def measure(notebook: Path) -> dict[str, Any]:
    from compiler.compile.api import compile_notebook

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(notebook.parent, work, ignore=shutil.ignore_patterns("*.ipynb"))
        try:
            copy, task_of = retagged(notebook, work)
        except Exception as exc:  # not a notebook (tests/notebooks has one on purpose)
            return {"notebook": notebook.name, "skipped": f"not readable: {exc}"[:80]}
        result = compile_notebook(copy)
        errors = [d.render() for d in result.diagnostics if d.severity == "error"]
        if errors:
            return {"notebook": notebook.name, "skipped": errors[0]}
        proc = subprocess.run(
            [sys.executable, __file__, "--record", str(copy)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"notebook": notebook.name, "skipped": "could not record: " + proc.stderr[-200:]}
    recorded = json.loads(proc.stdout.strip().splitlines()[-1])
    executed = recorded["executed"]
    edges = [
        (task_of[up], task_of[t.name])
        for t in result.pipeline.tasks
        for up in t.upstream
        if task_of[t.name] < executed and task_of[up] < executed
    ]
    compiled = closure(edges)
    required = closure(tuple(f) for f in recorded["flows"])
    missed = sorted(set(map(tuple, recorded["flows"])) - compiled)
    return {
        "notebook": notebook.name,
        "ordered": len(compiled),
        "needless": len(compiled - required),
        "missed": [f"{a}->{b} ({recorded['why'].get(f'{a}->{b}', '?')})" for a, b in missed],
        "executed": executed,
        "cells": recorded["cells"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.record:
        print(json.dumps(record(args.record)))
        return
    rows = [measure(nb) for nb in (args.notebooks or default_notebooks())]
    total_ordered = total_needless = total_missed = 0
    print(f"{'notebook':<34} {'cells':>5} {'ordered':>7} {'needless':>8} {'missed':>6}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['notebook']:<34} skipped: {row['skipped'][:70]}")
            continue
        total_ordered += row["ordered"]
        total_needless += row["needless"]
        total_missed += len(row["missed"])
        ran = f"{row['executed']}/{row['cells']}"
        print(
            f"{row['notebook']:<34} {ran:>5} {row['ordered']:>7} {row['needless']:>8} "
            f"{len(row['missed']):>6}"
            + (f"\n    missed: {'; '.join(row['missed'][:6])}" if row["missed"] else "")
        )
    share = total_needless / total_ordered if total_ordered else 0.0
    print(
        f"total: {total_needless} of {total_ordered} ordered task pairs needless "
        f"({share:.1%}; target <= 10 %), {total_missed} recorded flows missed (target 0)"
    )


if __name__ == "__main__":
    main()
