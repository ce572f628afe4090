"""Metrics benchmarks: prints figures, asserts nothing about time.

    python tests/benchmarks/metrics_bench.py [--quick]

1. Profiling a 1,000,000-row DataFrame input (8 numeric, 2 text columns): the profile the worker
   computes for a CSV or Parquet file a task reads (compiler/runtime/profile.py; for Parquet
   with the file's path, as the worker's reader wrapper passes it), against the task's own
   time (pandas.read_csv / read_parquet of that file plus a groupby, what a `load` task does).
   Target: <= 5 %. Also the drift score of that profile against a shifted one (scipy).
2. `kiln metrics NOTEBOOK -n 1000` over a store holding 1,000 runs of the notebook (8 metrics
   and 3 verdicts each, rows generated in bulk): the query plus the rendered table, in process
   (over sqlite3 as the CLI reads it, and over SQLAlchemy as the Jupyter server does), and the
   whole command as a user types it (a new Python process). Target: <= 200 ms. The new process
   finds Kiln's bytecode compiled, as after `pip install` (a cache folder in the temporary
   directory, so the working tree stays clean); the same without it is printed for comparison.

--quick: 100,000 rows and 200 runs (a smoke test).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def best_of(repeats: int, work, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeats):
        started = clock()
        work()
        times.append(clock() - started)
    return statistics.median(times)


def bench_profile(rows: int, folder: Path, repeats: int) -> None:
    import numpy as np
    import pandas as pd

    from compiler.model.drift import profile_drift
    from compiler.runtime.profile import profile_frame

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({f"x{i}": rng.normal(i, 1 + i, rows) for i in range(8)})
    frame["city"] = rng.choice(["Lyon", "Oslo", "Porto", "Quito", "Riga", "Sofia"], rows)
    frame["segment"] = rng.choice([f"s{i}" for i in range(40)], rows)
    path = folder / "input.csv"
    frame.to_csv(path, index=False)

    def task() -> None:
        data = pd.read_csv(path)
        data.groupby("city")[["x0", "x1"]].mean()

    task_s = best_of(repeats, task)
    data = pd.read_csv(path)
    profile_s = best_of(repeats, lambda: profile_frame(data, "file"))
    profile = profile_frame(data, "file")
    shifted = data.assign(x3=data["x3"] + 2.0)
    other = profile_frame(shifted, "file")
    drift_s = best_of(repeats, lambda: profile_drift(other, profile, 0.2))
    drift = profile_drift(other, profile, 0.2)
    size = len(json.dumps(profile))
    print(f"1. profile of a {rows:,}-row DataFrame (10 columns)")
    print(f"   task (read_csv + groupby)   {task_s * 1000:8.1f} ms")
    share = f"{profile_s / task_s:.1%} of the task; target <= 5%"
    print(f"   profile                     {profile_s * 1000:8.1f} ms  ({share})")
    # CPU time of this process: both are single-threaded, and on a shared machine the wall
    # clock also counts the time other processes held the cores.
    task_cpu = best_of(repeats, task, time.process_time)
    profile_cpu = best_of(repeats, lambda: profile_frame(data, "file"), time.process_time)
    print(
        f"   CPU time: task {task_cpu * 1000:.1f} ms, profile {profile_cpu * 1000:.1f} ms "
        f"({profile_cpu / task_cpu:.1%})"
    )
    # The same frame from Parquet: a much faster read, so the profile is a larger share of it.
    parquet = folder / "input.parquet"
    frame.to_parquet(parquet, index=False)

    def parquet_task() -> None:
        data = pd.read_parquet(parquet)
        data.groupby("city")[["x0", "x1"]].mean()

    pq_cpu = best_of(repeats, parquet_task, time.process_time)
    pq_wall = best_of(repeats, parquet_task)
    pq_data = pd.read_parquet(parquet)

    def pq_profile() -> None:
        profile_frame(pq_data, "file", parquet)  # the path, as the worker's reader passes it

    pq_profile_cpu = best_of(7, pq_profile, time.process_time)  # ~5 ms each
    pq_profile_wall = best_of(7, pq_profile)
    print(
        f"   Parquet: task (read_parquet + groupby) {pq_cpu * 1000:.1f} ms CPU, profile "
        f"{pq_profile_cpu * 1000:.1f} ms ({pq_profile_cpu / pq_cpu:.1%}; target <= 5%)"
    )
    print(
        f"            wall: task {pq_wall * 1000:.1f} ms, profile {pq_profile_wall * 1000:.1f} ms "
        f"({pq_profile_wall / pq_wall:.1%})"
    )
    print(f"   drift score vs a shifted x3 {drift_s * 1000:8.1f} ms  (drifted: {drift['drifted']})")
    print(f"   profile size                {size / 1024:8.1f} KiB of JSON")


def bench_metrics_command(runs: int, folder: Path, repeats: int) -> None:
    from sqlalchemy import insert

    from compiler.cli.metrics import render_metrics
    from compiler.lineage import open_store
    from compiler.lineage.history import metrics_history
    from compiler.lineage.schema import pipelines, run_metrics, run_outcomes, run_verdicts
    from compiler.lineage.schema import runs as runs_table
    from compiler.lineage.sqlite_reader import open_sqlite_reader

    notebook = folder / "model.ipynb"
    notebook.write_text("{}")
    store = open_store(None, notebook)
    store_file = folder / ".kiln" / "lineage.db"
    now = dt.datetime.now(dt.UTC)
    names = ["accuracy", "f1", "precision", "recall", "auc", "loss", "rows", "drifted"]
    with store.writing() as c:
        pipeline_id = c.execute(
            insert(pipelines).values(
                name="model",
                version="0" * 16,
                spec_digest="0" * 64,
                spec={"tasks": []},
                notebook_path=str(notebook.resolve()),
                created_at=now,
            )
        ).inserted_primary_key[0]
        run_rows, metric_rows, verdict_rows, outcome_rows = [], [], [], []
        for i in range(runs):
            run_id = uuid.uuid4().hex[:16]
            started = now - dt.timedelta(minutes=runs - i)
            run_rows.append(
                {
                    "id": run_id,
                    "pipeline_id": pipeline_id,
                    "status": "succeeded" if i % 7 else "failed",
                    "parameters": {"C": i / runs},
                    "started_at": started,
                    "ended_at": started + dt.timedelta(seconds=30),
                    "notebook_path": str(notebook.resolve()),
                }
            )
            for k, name in enumerate(names):
                metric_rows.append(
                    {
                        "run_id": run_id,
                        "name": name,
                        "task": "train",
                        "value": (i * (k + 1)) % 97 / 97,
                        "is_bool": False,
                        "ordinal": k,  # the metrics cell's order, as a run records it
                    }
                )
            for kind in ("check", "warn", "drift"):
                verdict_rows.append(
                    {
                        "run_id": run_id,
                        "kind": kind,
                        "subject": "accuracy" if kind != "drift" else "load.raw",
                        "passed": bool(i % 5),
                        "value": 0.5,
                        "threshold": 0.6,
                        "message": f"{kind} on run {i}",
                        "tag": f"{kind}:accuracy>=0.6",
                        "drifted_columns": ["x3"] if kind == "drift" else None,
                    }
                )
            outcome_rows.append({"run_id": run_id, "flagged": i % 5 == 0, "baseline_run": None})
        c.execute(insert(runs_table), run_rows)
        c.execute(insert(run_metrics), metric_rows)
        c.execute(insert(run_verdicts), verdict_rows)
        c.execute(insert(run_outcomes), outcome_rows)

    reader = open_sqlite_reader(store_file)
    assert reader is not None, "a store at the newest revision is read with sqlite3"

    def shown(source: object, limit: int) -> float:
        return best_of(repeats, lambda: render_metrics(metrics_history(source, notebook, limit)))

    # As after `pip install`: Kiln's modules compiled once, in a cache outside the tree.
    installed = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    installed["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    from_source = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    from_source.pop("PYTHONPYCACHEPREFIX", None)

    def command(*argv: str, env: dict[str, str] = installed) -> float:
        walls = []
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "compiler.cli", *argv],
                capture_output=True,
                text=True,
                cwd=folder,
                env={**env, "PYTHONPATH": str(REPO)},
                check=False,
            )
            if attempt:  # the first one compiles the bytecode (or warms the file cache)
                walls.append(time.perf_counter() - started)
            assert done.returncode == 0, done.stderr
        return statistics.median(walls)

    default_view, every_run = shown(reader, 10), shown(reader, runs)
    every_run_sqlalchemy = shown(store, runs)
    reader.close()
    store.close()
    cli_default = command("metrics", str(notebook))
    cli_all = command("metrics", str(notebook), "-n", str(runs))
    cli_all_source = command("metrics", str(notebook), "-n", str(runs), env=from_source)
    cli_runs = command("runs", str(notebook))  # SQLAlchemy's path, for comparison
    start = best_of(repeats, lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
    sqlalchemy = best_of(
        repeats,
        lambda: subprocess.run([sys.executable, "-c", "import sqlalchemy"], check=True),
    )
    print(
        f"2. kiln metrics on a store holding {runs:,} runs ({len(names)} metrics, 3 verdicts each)"
    )
    print("   query + table + trend lines, in process:")
    print(f"     the last 10 runs (default)  {default_view * 1000:8.1f} ms")
    print(f"     all {runs:,} runs (-n {runs})  {every_run * 1000:8.1f} ms  (sqlite3, the CLI's)")
    print(f"     the same over SQLAlchemy    {every_run_sqlalchemy * 1000:8.1f} ms  (the server's)")
    print("   the command as typed (a new Python process; target <= 200 ms):")
    print(f"     kiln metrics NB             {cli_default * 1000:8.1f} ms")
    print(
        f"     kiln metrics NB -n {runs}    {cli_all * 1000:8.1f} ms  "
        f"({cli_all / 0.2:.0%} of the 200 ms target)"
    )
    print(f"       no bytecode cache         {cli_all_source * 1000:8.1f} ms  (compiled per start)")
    print(f"     kiln runs NB (SQLAlchemy)   {cli_runs * 1000:8.1f} ms  (comparison)")
    print(f"     python -c pass              {start * 1000:8.1f} ms  (the interpreter's start)")
    print(f"     python -c 'import sqlalchemy' {sqlalchemy * 1000:6.1f} ms  (no longer paid here)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows, runs, repeats = (100_000, 200, 1) if args.quick else (1_000_000, 1_000, 3)
    with tempfile.TemporaryDirectory(prefix="kiln-metrics-bench-") as tmp:
        bench_profile(rows, Path(tmp), repeats)
        # A command is ~0.1 s: seven of each, so that a median means something on a shared
        # machine (three swung by 2x between runs).
        bench_metrics_command(runs, Path(tmp), 1 if args.quick else 7)


if __name__ == "__main__":
    main()
