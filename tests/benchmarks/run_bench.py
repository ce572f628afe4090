"""Kiln runtime benchmarks: prints figures, asserts nothing about time.

    python tests/benchmarks/run_bench.py [--quick]

1. two independent CPU-heavy branches: `kiln run` cold vs papermill (target <= 0.58x), and
   with `kiln cluster start` already running (<= 0.55x)
2. the same run again, nothing changed (target <= 0.05x papermill)
3. many trivial tasks: Kiln's time per task vs raw Client.submit on the same cluster
   (<= 1.5x cache off, <= 2x cache on)
4. a large numpy array passed between two tasks vs raw Dask futures (cache on cold <= 1.5x,
   cache hit <= 1.2x); the cold run returns before its worker has written the array
   (store_writes.py), so the time until the entry is on disk is printed too

Every figure is printed beside its baseline, measured in the same run. On a shared machine
the ratios move with the load: each case and its baseline are run in turns and the fastest
of each is kept (the least disturbed), never a figure from another run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
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


# Byte-compiled modules, as an installed Kiln has them (pip writes .pyc files on install). A
# checkout run with PYTHONDONTWRITEBYTECODE=1 and no __pycache__ compiles every imported
# module of the CLI from source in every timed process (~0.15-0.25 s of each `kiln run` here),
# a cost no user pays and papermill (installed) does not pay either. Set by `main`.
PYCACHE: Path | None = None


def run_quiet(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    env = {**(env or os.environ), "PYTHONPATH": str(REPO)}
    if PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
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

# The floor of a cold run: a fresh Python that starts a LocalCluster like Kiln's (one
# single-threaded worker process per CPU, dashboard on) and runs the same two functions.
RAW_DASK_COLD = """import logging, os
from distributed import Client, LocalCluster

{source}

if __name__ == "__main__":
    with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        # pure=False: the two calls have equal arguments, and Dask would run one task for both
        # (the same key), where the notebook's two branches are two tasks.
        left = client.submit(spin, {loops}, pure=False)
        right = client.submit(spin, {loops}, pure=False)
        print(left.result(), right.result())
"""


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

    papermill_command = [
        PY,
        "-m",
        "papermill",
        str(notebook),
        str(folder / "pm-out.ipynb"),
        "-k",
        "python3",
        "--no-progress-bar",
    ]
    command = kiln_run_command(notebook, spec_file)
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "DASK_KILN__SCHEDULER_FILE": str(scheduler_file)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    raw_script = folder / "raw_dask.py"
    raw_script.write_text(RAW_DASK_COLD.format(source=BRANCH_SOURCE.split("\n\n")[0], loops=loops))
    raw_command = [PY, str(raw_script)]
    # Every program once untimed: byte-compiles what each imports (see PYCACHE).
    for warm_up in (papermill_command, raw_command, command):
        run_quiet(warm_up, folder, env)
    papermill, raw, cold, cached, warm_cluster = [], [], [], [], []
    for _ in range(repeat):
        papermill.append(timed(lambda: run_quiet(papermill_command, folder)))
        raw.append(timed(lambda: run_quiet(raw_command, folder, env)))
        shutil.rmtree(folder / ".kiln", ignore_errors=True)
        cold.append(timed(lambda: run_quiet(command, folder, env)))
        cached.append(timed(lambda: run_quiet(command, folder, env)))
    # The same cold run with `kiln cluster start` already running (it starts no cluster).
    cluster = [PY, "-m", "compiler.cli", "cluster"]
    try:
        run_quiet([*cluster, "start", "--workers", str(os.cpu_count() or 1)], folder, env)
    except RuntimeError:  # a Kiln without `kiln cluster` (a baseline checkout)
        warm_cluster.append(float("nan"))
    else:
        try:
            for _ in range(repeat):
                shutil.rmtree(folder / ".kiln", ignore_errors=True)
                warm_cluster.append(timed(lambda: run_quiet(command, folder, env)))
        finally:
            run_quiet([*cluster, "stop"], folder, env)

    from compiler.runtime import run_pipeline

    in_process = timed(lambda: run_pipeline(spec, notebook_path=notebook))
    return {
        "papermill": min(papermill),
        "raw_dask_cold": min(raw),
        "kiln_cold": min(cold),
        "kiln_warm_cluster": min(warm_cluster),
        "kiln_cached_cli": min(cached),
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

    def raw_once() -> float:
        with Client(address) as client:
            wait(client.map(_trivial, range(50), pure=False))  # warm up
            start = time.perf_counter()
            wait([client.submit(_trivial, i, pure=False) for i in range(n_tasks)])
            return time.perf_counter() - start

    def kiln_once(use_cache: bool) -> float:
        shutil.rmtree(folder / ".kiln", ignore_errors=True)
        return timed(
            lambda: run_pipeline(
                spec, notebook_path=notebook, scheduler=address, use_cache=use_cache
            )
        )

    kiln_once(False)  # warm up the workers' shells
    raw, kiln_off, kiln_on = [], [], []
    for _ in range(5):  # in turns, so a burst of load on the machine hits all three alike
        raw.append(raw_once())
        kiln_off.append(kiln_once(False))
        kiln_on.append(kiln_once(True))
    return {
        "raw_per_task_ms": 1000 * min(raw) / n_tasks,
        "kiln_per_task_ms": 1000 * min(kiln_off) / n_tasks,
        "kiln_cache_per_task_ms": 1000 * min(kiln_on) / n_tasks,
    }


def _make_array(n: int) -> Any:
    import numpy as np

    return np.ones(n)


def _array_sum(array: Any) -> float:
    return float(array.sum())


def bench_array(folder: Path, address: str, megabytes: int) -> dict[str, float]:
    from distributed import Client

    from compiler.runtime import run_pipeline
    from compiler.runtime.store_writes import flush_store_writes

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

    def raw_once() -> float:
        with Client(address) as client:
            start = time.perf_counter()
            made = client.submit(_make_array, n, pure=False)
            client.submit(_array_sum, made, pure=False).result()
            del made
            return time.perf_counter() - start

    checks: list[float] = []

    def kiln(use_cache: bool = True) -> float:
        def once() -> None:
            result = run_pipeline(
                spec, notebook_path=notebook, scheduler=address, use_cache=use_cache
            )
            # What the input-change check (digest.py InputCheck) cost the tasks that ran.
            checks.append(
                sum(
                    e.get("check_seconds") or 0.0
                    for t in result.tasks
                    for e in t.attempt_log
                    if e.get("status") == "done"
                )
            )

        return timed(once)

    def cold_until_stored(flusher: Any) -> tuple[float, float]:
        # The run returns once its tasks are done; the 500 MB output is written by its worker
        # after that (store_writes.py). Also timed: until the entry is on disk.
        start = time.perf_counter()
        kiln()
        returned = time.perf_counter() - start
        flusher.run(flush_store_writes)
        return returned, time.perf_counter() - start

    raw, kiln_off, kiln_on, kiln_stored, kiln_hit, check_off = [], [], [], [], [], []
    with Client(address) as flusher:
        for _ in range(5):
            raw.append(raw_once())
            kiln_off.append(kiln(use_cache=False))
            check_off.append(checks[-1])
            shutil.rmtree(folder / ".kiln", ignore_errors=True)
            returned, stored = cold_until_stored(flusher)
            kiln_on.append(returned)
            kiln_stored.append(stored)
            kiln_hit.append(kiln())
    return {
        "raw_s": min(raw),
        "kiln_cache_off_s": min(kiln_off),
        "kiln_cache_on_cold_s": min(kiln_on),
        "kiln_cache_on_cold_stored_s": min(kiln_stored),
        "kiln_cache_on_hit_s": min(kiln_hit),
        # The check's seconds in the fastest cache-off run.
        "check_s": check_off[kiln_off.index(min(kiln_off))],
    }


def ensure_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        run_quiet([PY, "-m", "ipykernel", "install", "--sys-prefix"], REPO)


def _row(
    case: str, value: float, unit: str, baseline: float | None, base_name: str, target: float | None
) -> tuple[str, ...]:
    shown = f"{value:.3f} {unit}" if value < 1 else f"{value:.2f} {unit}"
    if value != value:  # nan: not measured
        return (case, "n/a", "", "", f"<= {target:g}x" if target else "", "")
    if baseline is None:
        return (case, shown, "", "", "", "")
    ratio = value / baseline
    base = f"{baseline:.2f} {unit} ({base_name})"
    met = "" if target is None else ("yes" if ratio <= target else "NO")
    return (case, shown, base, f"{ratio:.2f}x", f"<= {target:g}x" if target else "", met)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    parser.add_argument(
        "--parts",
        default="branches,trivial,array",
        help="comma-separated cases to run: branches, trivial, array (default: all)",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    loops = 3_000_000 if args.quick else 55_000_000  # ~2.5 s per branch here
    n_tasks = 50 if args.quick else 500
    megabytes = 50 if args.quick else 500
    repeat = 1 if args.quick else 3

    ensure_kernel()
    folder = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    global PYCACHE
    PYCACHE = folder / "pycache"
    print(f"kiln runtime benchmark ({'quick' if args.quick else 'full'}), cpus={os.cpu_count()}")
    rows: list[tuple[str, ...]] = []
    try:
        if "branches" in parts:
            print("1-2. two CPU-heavy branches, kiln run vs papermill")
            b = bench_branches(folder / "branches", loops, repeat)
            pm = b["papermill"]
            rows += [
                _row("papermill, two branches", pm, "s", None, "", None),
                _row("raw Dask, cold (the floor)", b["raw_dask_cold"], "s", pm, "papermill", None),
                _row("kiln run, cold", b["kiln_cold"], "s", pm, "papermill", 0.58),
                _row(
                    "kiln run, kiln cluster running",
                    b["kiln_warm_cluster"],
                    "s",
                    pm,
                    "papermill",
                    0.55,
                ),
                _row("kiln run again (CLI)", b["kiln_cached_cli"], "s", pm, "papermill", 0.05),
                _row("run_pipeline again", b["kiln_cached_api"], "s", pm, "papermill", 0.05),
            ]
        if parts & {"trivial", "array"}:
            from distributed import LocalCluster

            with LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.CRITICAL,
            ) as cluster:
                if "trivial" in parts:
                    print(f"3. {n_tasks} trivial independent tasks on a 2-worker LocalCluster")
                    t = bench_trivial(folder / "trivial", cluster.scheduler_address, n_tasks)
                    raw = t["raw_per_task_ms"]
                    rows += [
                        _row("raw Client.submit, per task", raw, "ms", None, "", None),
                        _row(
                            "kiln per task, cache off",
                            t["kiln_per_task_ms"],
                            "ms",
                            raw,
                            "raw submit",
                            1.5,
                        ),
                        _row(
                            "kiln per task, cache on",
                            t["kiln_cache_per_task_ms"],
                            "ms",
                            raw,
                            "raw submit",
                            2.0,
                        ),
                    ]
                if "array" in parts:
                    print(f"4. a {megabytes} MB numpy array passed between two tasks")
                    a = bench_array(folder / "array", cluster.scheduler_address, megabytes)
                    raw = a["raw_s"]
                    rows += [
                        _row(f"raw futures, {megabytes} MB array", raw, "s", None, "", None),
                        _row(
                            "kiln array, cache off",
                            a["kiln_cache_off_s"],
                            "s",
                            raw,
                            "raw futures",
                            None,
                        ),
                        _row(
                            "  of which input-change check",
                            a["check_s"],
                            "s",
                            a["kiln_cache_off_s"],
                            "kiln cache off",
                            0.05,
                        ),
                        _row(
                            "kiln array, cache on, cold",
                            a["kiln_cache_on_cold_s"],
                            "s",
                            raw,
                            "raw futures",
                            1.5,
                        ),
                        _row(
                            "  until its entry is on disk",
                            a["kiln_cache_on_cold_stored_s"],
                            "s",
                            raw,
                            "raw futures",
                            None,
                        ),
                        _row(
                            "kiln array, cache hit",
                            a["kiln_cache_on_hit_s"],
                            "s",
                            raw,
                            "raw futures",
                            1.2,
                        ),
                    ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    header = ("case", "time", "baseline", "ratio", "target", "met")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
