"""Kiln runtime benchmarks: prints figures, asserts nothing about time.

    python tests/benchmarks/run_bench.py [--quick]

1. two independent CPU-heavy branches: `kiln run` cold vs papermill (target <= 0.65x)
2. the same run again, nothing changed (target <= 0.05x papermill)
3. many trivial tasks: Kiln's time per task vs raw Client.submit on the same cluster (<= 2x)
4. a large numpy array passed between two tasks vs raw Dask futures, cache off and on
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PY = sys.executable

BRANCH_SOURCE = """def spin(n):
    total = 0
    for i in range(n):
        total += i % 7
    return total

{name} = spin(LOOPS)
print('{name}', {name})"""


def _version(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def write_notebook(path: Path, cells: list[tuple[str, list[str]]]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for i, (source, tags) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source)
        cell["id"] = f"c{i}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def hand_spec(name: str, tasks: list[dict[str, Any]], parameters: dict[str, Any]) -> dict[str, Any]:
    """The spec the compiler would write, for when compiler.compile.api is not importable."""
    spec_tasks = []
    for index, task in enumerate(tasks):
        inputs = task.get("inputs", {})
        spec_tasks.append(
            {
                "name": task["name"],
                "version": _version(task["source"]),
                "upstream": sorted(set(inputs.values())),
                "inputs": inputs,
                "outputs": task.get("outputs", []),
                "parameters": task.get("parameters", []),
                "cells": [f"c{index + task.get('offset', 0)}"],
                "code": [
                    {
                        "cell_id": f"c{index + task.get('offset', 0)}",
                        "cell_index": index + task.get("offset", 0),
                        "source": task["source"],
                    }
                ],
                "setup": task.get("setup", ""),
                "imports": [],
                "resources": {},
                "retries": 0,
                "timeout": None,
                "cache": True,
                "datasets": {"reads": [], "writes": []},
            }
        )
    return {
        "schema_version": 1,
        "name": name,
        "version": _version([t["version"] for t in spec_tasks]),
        "notebook": {"file": f"{name}.ipynb", "digest": "0" * 64},
        "parameters": parameters,
        "tasks": spec_tasks,
    }


def compile_spec(notebook: Path, fallback: dict[str, Any]) -> tuple[dict[str, Any], str]:
    try:
        from compiler.compile.api import compile_notebook

        result = compile_notebook(notebook)
        if result.ok and result.spec:
            return result.spec, "compiled"
    except Exception:
        pass
    return fallback, "hand-written spec"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_quiet(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")


def kiln_run_command(notebook: Path, spec_file: Path) -> list[str]:
    """`kiln run` through the lead's CLI when it can compile; else the same runtime entry point
    with the spec from a file (no compile step)."""
    try:
        from compiler.compile.api import compile_notebook

        if compile_notebook(notebook).ok:
            return [PY, "-m", "compiler.cli", "run", str(notebook), "--json"]
    except Exception:
        pass
    snippet = (
        "import argparse, json, sys; from compiler.cli.run import add_run_arguments, "
        "run_command; p = argparse.ArgumentParser(); p.add_argument('notebook'); "
        "add_run_arguments(p); a = p.parse_args(sys.argv[2:]); "
        "sys.exit(run_command(a, json.load(open(sys.argv[1])), a.notebook))"
    )
    return [PY, "-c", snippet, str(spec_file), str(notebook), "--json"]


# -- 1 and 2: two CPU-heavy branches -------------------------------------------------------------


def bench_branches(folder: Path, loops: int, repeat: int) -> dict[str, float]:
    notebook = folder / "branches.ipynb"
    cells = [
        (f"LOOPS = {loops}", ["parameters"]),
        (BRANCH_SOURCE.format(name="left"), ["task:left"]),
        (BRANCH_SOURCE.format(name="right"), ["task:right"]),
    ]
    write_notebook(notebook, cells)
    fallback = hand_spec(
        "branches",
        [
            {"name": "left", "source": cells[1][0], "parameters": ["LOOPS"], "offset": 1},
            {"name": "right", "source": cells[2][0], "parameters": ["LOOPS"], "offset": 1},
        ],
        {"LOOPS": loops},
    )
    spec, how = compile_spec(notebook, fallback)
    spec_file = folder / "branches.pipeline.json"
    spec_file.write_text(json.dumps(spec))
    print(f"  branches notebook: {how}, LOOPS={loops}")

    papermill = [
        timed(
            lambda: run_quiet(
                [
                    PY,
                    "-m",
                    "papermill",
                    str(notebook),
                    str(folder / "pm-out.ipynb"),
                    "-k",
                    "python3",
                    "--no-progress-bar",
                ],
                folder,
            )
        )
        for _ in range(repeat)
    ]
    command = kiln_run_command(notebook, spec_file)
    cold, warm = [], []
    for _ in range(repeat):
        shutil.rmtree(folder / ".kiln", ignore_errors=True)
        cold.append(timed(lambda: run_quiet(command, folder)))
        warm.append(timed(lambda: run_quiet(command, folder)))

    from compiler.runtime import run_pipeline

    in_process = timed(lambda: run_pipeline(spec, notebook_path=notebook))
    return {
        "papermill": statistics.median(papermill),
        "kiln_cold": statistics.median(cold),
        "kiln_cached_cli": statistics.median(warm),
        "kiln_cached_api": in_process,
    }


# -- 3 and 4: on one running cluster ---------------------------------------------------------------


def _trivial(i: int) -> int:
    return i + 1


def bench_trivial(folder: Path, address: str, n_tasks: int) -> dict[str, float]:
    from distributed import Client, wait

    from compiler.runtime import run_pipeline

    notebook = folder / "trivial.ipynb"
    sources = [f"value_{i} = {i} + 1" for i in range(n_tasks)]
    write_notebook(notebook, [(s, [f"task:t{i}"]) for i, s in enumerate(sources)])
    spec = hand_spec("trivial", [{"name": f"t{i}", "source": s} for i, s in enumerate(sources)], {})

    with Client(address) as client:
        wait(client.map(_trivial, range(50), pure=False))  # warm up
        raw = []
        for _ in range(3):
            start = time.perf_counter()
            wait([client.submit(_trivial, i, pure=False) for i in range(n_tasks)])
            raw.append(time.perf_counter() - start)
    run_pipeline(spec, notebook_path=notebook, scheduler=address, use_cache=False)  # warm up
    kiln_off = [
        timed(
            lambda: run_pipeline(spec, notebook_path=notebook, scheduler=address, use_cache=False)
        )
        for _ in range(3)
    ]
    kiln_on = []
    for _ in range(2):
        shutil.rmtree(folder / ".kiln", ignore_errors=True)
        kiln_on.append(timed(lambda: run_pipeline(spec, notebook_path=notebook, scheduler=address)))
    return {
        "raw_per_task_ms": 1000 * statistics.median(raw) / n_tasks,
        "kiln_per_task_ms": 1000 * statistics.median(kiln_off) / n_tasks,
        "kiln_cache_per_task_ms": 1000 * statistics.median(kiln_on) / n_tasks,
    }


def _make_array(n: int) -> Any:
    import numpy as np

    return np.ones(n)


def _array_sum(array: Any) -> float:
    return float(array.sum())


def bench_array(folder: Path, address: str, megabytes: int) -> dict[str, float]:
    from distributed import Client

    from compiler.runtime import run_pipeline

    n = megabytes * 1_000_000 // 8
    notebook = folder / "array.ipynb"
    make = f"import numpy as np\narray = np.ones({n})"
    use = "total = float(array.sum())\ntotal"
    write_notebook(notebook, [(make, ["task:make"]), (use, ["task:use"])])
    spec = hand_spec(
        "array",
        [
            {"name": "make", "source": make, "outputs": ["array"]},
            {"name": "use", "source": use, "inputs": {"array": "make"}},
        ],
        {},
    )
    with Client(address) as client:

        def raw_once() -> None:
            made = client.submit(_make_array, n, pure=False)
            client.submit(_array_sum, made, pure=False).result()
            del made

        raw = [timed(raw_once) for _ in range(3)]
    kiln_off = [
        timed(
            lambda: run_pipeline(spec, notebook_path=notebook, scheduler=address, use_cache=False)
        )
        for _ in range(3)
    ]
    kiln_on, kiln_hit = [], []
    for _ in range(2):
        shutil.rmtree(folder / ".kiln", ignore_errors=True)
        kiln_on.append(timed(lambda: run_pipeline(spec, notebook_path=notebook, scheduler=address)))
        kiln_hit.append(
            timed(lambda: run_pipeline(spec, notebook_path=notebook, scheduler=address))
        )
    return {
        "raw_s": statistics.median(raw),
        "kiln_cache_off_s": statistics.median(kiln_off),
        "kiln_cache_on_cold_s": statistics.median(kiln_on),
        "kiln_cache_on_hit_s": statistics.median(kiln_hit),
    }


def ensure_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        run_quiet([PY, "-m", "ipykernel", "install", "--sys-prefix"], REPO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    args = parser.parse_args(argv)
    loops = 3_000_000 if args.quick else 55_000_000  # ~2.5 s per branch here
    n_tasks = 50 if args.quick else 500
    megabytes = 50 if args.quick else 500
    repeat = 1

    ensure_kernel()
    folder = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    print(f"kiln runtime benchmark ({'quick' if args.quick else 'full'}), cpus={os.cpu_count()}")
    try:
        print("1-2. two CPU-heavy branches, kiln run vs papermill")
        branches = bench_branches(folder / "branches", loops, repeat)

        from distributed import LocalCluster

        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
        ) as cluster:
            print(f"3. {n_tasks} trivial independent tasks on a 2-worker LocalCluster")
            trivial = bench_trivial(folder / "trivial", cluster.scheduler_address, n_tasks)
            print(f"4. a {megabytes} MB numpy array passed between two tasks")
            array = bench_array(folder / "array", cluster.scheduler_address, megabytes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    pm = branches["papermill"]
    rows = [
        ("papermill, two branches", f"{pm:.2f} s", "", ""),
        (
            "kiln run, cold",
            f"{branches['kiln_cold']:.2f} s",
            f"{branches['kiln_cold'] / pm:.2f}x papermill",
            "<= 0.65x",
        ),
        (
            "kiln run again (CLI process)",
            f"{branches['kiln_cached_cli']:.2f} s",
            f"{branches['kiln_cached_cli'] / pm:.3f}x papermill",
            "<= 0.05x",
        ),
        (
            "run_pipeline again (in process)",
            f"{branches['kiln_cached_api']:.3f} s",
            f"{branches['kiln_cached_api'] / pm:.3f}x papermill",
            "<= 0.05x",
        ),
        ("raw Client.submit, per task", f"{trivial['raw_per_task_ms']:.2f} ms", "", ""),
        (
            "kiln, per task (cache off)",
            f"{trivial['kiln_per_task_ms']:.2f} ms",
            f"{trivial['kiln_per_task_ms'] / trivial['raw_per_task_ms']:.2f}x raw",
            "<= 2x",
        ),
        (
            "kiln, per task (cache on, cold)",
            f"{trivial['kiln_cache_per_task_ms']:.2f} ms",
            f"{trivial['kiln_cache_per_task_ms'] / trivial['raw_per_task_ms']:.2f}x raw",
            "",
        ),
        (f"raw futures, {megabytes} MB array", f"{array['raw_s']:.2f} s", "", ""),
        (
            "kiln, array, cache off",
            f"{array['kiln_cache_off_s']:.2f} s",
            f"{array['kiln_cache_off_s'] / array['raw_s']:.2f}x raw",
            "",
        ),
        (
            "kiln, array, cache on (cold)",
            f"{array['kiln_cache_on_cold_s']:.2f} s",
            f"{array['kiln_cache_on_cold_s'] / array['raw_s']:.2f}x raw",
            "",
        ),
        (
            "kiln, array, cache hit",
            f"{array['kiln_cache_on_hit_s']:.2f} s",
            f"{array['kiln_cache_on_hit_s'] / array['raw_s']:.2f}x raw",
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print(
        "  ".join(
            h.ljust(w) for h, w in zip(("case", "time", "ratio", "target"), widths, strict=True)
        )
    )
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
