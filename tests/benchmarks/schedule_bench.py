"""Scheduled-run latency and the papermill engine's cost: prints figures, asserts nothing.

    python tests/benchmarks/schedule_bench.py [--quick]

1. Due time to first task: a schedule firing every few seconds (cron's sixth field, seconds),
   served by the real `Scheduler.serve` loop with `kiln scheduler`'s default 1 s poll, running
   the notebook through papermill with `--engine kiln`. Measured from the schedule run's due
   time to the earliest `started_at` of its tasks in the lineage store, (a) on an existing Dask
   cluster (the production set-up: `kiln scheduler --scheduler ADDRESS`) and (b) with no
   address, where each run starts its own LocalCluster. Target: under 2 s.
2. papermill's CLI on the two-branch notebook of run_bench.py: `--engine kiln` (cold cache, then
   nothing changed) versus papermill's default engine, measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from run_bench import (  # noqa: E402  (the runner benchmark's notebook and helpers)
    BRANCH_SOURCE,
    PY,
    ensure_kernel,
    run_quiet,
    timed,
    write_notebook,
)
from sqlalchemy import func, select  # noqa: E402

from compiler.lineage.schema import schedule_runs, task_runs  # noqa: E402
from compiler.lineage.store import open_store  # noqa: E402
from compiler.schedule.scheduler import Scheduler, add_schedule, get_schedule  # noqa: E402


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def write_small_pipeline(path: Path) -> None:
    """Three quick tasks: the latency measured is the scheduler's and the engine's, not work."""
    write_notebook(
        path,
        [
            ("rows = 1000", ["parameters"]),
            # cache:off: every scheduled run computes, so its first task really starts.
            ("data = list(range(rows))", ["task:load", "cache:off"]),
            ("total = sum(data)", ["task:total"]),
            ("print(total)", ["task:report"]),
        ],
    )


def due_to_first_task(folder: Path, runs: int, every_s: int, address: str | None) -> list[float]:
    """Serve one schedule until `runs` runs finished; seconds from due time to first task."""
    shutil.rmtree(folder, ignore_errors=True)
    notebook = folder / "small.ipynb"
    write_small_pipeline(notebook)
    store = open_store(None, notebook)  # .kiln/lineage.db beside it, where its runs record
    add_schedule(store, "small", notebook, f"* * * * * */{every_s}", engine="kiln")
    schedule_id = get_schedule(store, "small").id
    scheduler = Scheduler(store, dask_scheduler=address)
    serving = threading.Thread(target=scheduler.serve, kwargs={"poll_seconds": 1.0})
    serving.start()
    try:
        deadline = time.monotonic() + 60 + runs * (every_s + 30)
        while time.monotonic() < deadline:
            with store.reading() as c:
                done = c.execute(
                    select(schedule_runs.c.due_at, schedule_runs.c.kiln_run_id).where(
                        (schedule_runs.c.schedule_id == schedule_id)
                        & (schedule_runs.c.status == "succeeded")
                    )
                ).all()
                failed = c.execute(
                    select(schedule_runs.c.error).where(
                        (schedule_runs.c.schedule_id == schedule_id)
                        & (schedule_runs.c.status == "failed")
                    )
                ).all()
            if failed:
                raise RuntimeError(f"a scheduled run failed: {failed[0].error}")
            if len(done) >= runs:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{runs} scheduled runs did not finish in time")
    finally:
        scheduler.stop()
        serving.join()
    latencies = []
    with store.reading() as c:
        for row in done[:runs]:
            first = c.execute(
                select(func.min(task_runs.c.started_at)).where(
                    task_runs.c.run_id == row.kiln_run_id
                )
            ).scalar_one()
            latencies.append((_utc(first) - _utc(row.due_at)).total_seconds())
    store.engine.dispose()
    return latencies


def papermill_engines(folder: Path, loops: int, repeat: int) -> dict[str, float]:
    notebook = folder / "branches.ipynb"
    write_notebook(
        notebook,
        [
            (f"LOOPS = {loops}", ["parameters"]),
            (BRANCH_SOURCE.format(name="left"), ["task:left"]),
            (BRANCH_SOURCE.format(name="right"), ["task:right"]),
        ],
    )
    base = [PY, "-m", "papermill", str(notebook), str(folder / "out.ipynb"), "--no-progress-bar"]
    default, cold, cached = [], [], []
    for _ in range(repeat):
        default.append(timed(lambda: run_quiet([*base, "-k", "python3"], folder)))
        shutil.rmtree(folder / ".kiln", ignore_errors=True)
        cold.append(timed(lambda: run_quiet([*base, "--engine", "kiln"], folder)))
        cached.append(timed(lambda: run_quiet([*base, "--engine", "kiln"], folder)))
    return {
        "default": statistics.median(default),
        "kiln_cold": statistics.median(cold),
        "kiln_cached": statistics.median(cached),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller branches")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else 3
    loops = 3_000_000 if args.quick else 55_000_000  # run_bench's ~2.5 s per branch
    ensure_kernel()
    folder = Path(tempfile.mkdtemp(prefix="kiln-schedule-bench-"))
    print(f"kiln schedule benchmark ({'quick' if args.quick else 'full'}), cpus={os.cpu_count()}")
    try:
        from distributed import LocalCluster

        print("1. due time -> first task started (poll 1 s, engine kiln)")
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
            on_cluster = due_to_first_task(folder / "cluster", runs, 10, cluster.scheduler_address)
        own_cluster = due_to_first_task(folder / "local", runs, 15, None)
        print("2. papermill CLI on the two-branch notebook: --engine kiln vs default engine")
        engines = papermill_engines(folder / "engines", loops, 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def spread(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    pm = engines["default"]
    rows = [
        (
            "due -> first task, existing cluster",
            f"median {statistics.median(on_cluster):.2f} s",
            f"runs: {spread(on_cluster)} s",
            "target < 2 s",
        ),
        (
            "due -> first task, LocalCluster per run",
            f"median {statistics.median(own_cluster):.2f} s",
            f"runs: {spread(own_cluster)} s",
            "target < 2 s",
        ),
        ("papermill, default engine", f"{pm:.2f} s", "1.00x", ""),
        ("papermill --engine kiln, cold", f"{engines['kiln_cold']:.2f} s",
         f"{engines['kiln_cold'] / pm:.2f}x default", ""),
        ("papermill --engine kiln, nothing changed", f"{engines['kiln_cached']:.2f} s",
         f"{engines['kiln_cached'] / pm:.2f}x default", ""),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, ratio, target in rows:
        print(f"  {name:<{width}}  {value:>14}  {ratio:<28} {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
