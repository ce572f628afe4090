"""Lineage recording overhead and query time.

Run: .venv/bin/python tests/benchmarks/lineage_bench.py [--quick] [--postgres]

1. Recorder alone: a real run of N trivial tasks on a 2-worker LocalCluster is captured (its
   event stream and RunResult), then replayed into a RunRecorder on a fresh SQLite store (and
   PostgreSQL with --postgres): milliseconds of recording per task. Target: <= 2 ms per task.
2. End to end: the same pipeline run with recording off and on (every task forced, so both
   runs compute and store everything); the wall-time difference per task. Noisy on 2 cores:
   read it next to the replay figure, which isolates the recorder.
3. Query: a store holding 10,000 runs (rows generated in bulk), then `kiln lineage` on a file
   the latest run wrote, on an artifact digest prefix and on task@run: the query alone and
   the whole command (open the store, query, render). Target: <= 200 ms.

--quick: 100 tasks, 1,000 runs, one repeat (a smoke test for CI). Prints figures; asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import logging
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compiler.lineage import RunRecorder, lineage, open_store  # noqa: E402
from compiler.lineage.schema import (  # noqa: E402
    artifacts,
    dataset_accesses,
    datasets,
    pipelines,
    runs,
    task_inputs,
    task_outputs,
    task_runs,
)
from compiler.model.clock import utcnow  # noqa: E402
from tests.nbutil import make_notebook  # noqa: E402


def trivial_notebook(folder: Path, n_tasks: int) -> Path:
    """N one-line tasks in chains of ten (each reads the previous one's value)."""
    cells: list[Any] = [("scale = 2", ["parameters"])]
    for i in range(n_tasks):
        source = f"v{i} = scale" if i % 10 == 0 else f"v{i} = v{i - 1} + 1"
        cells.append((source, [f"task:t{i}"]))
    cells.append(("total = " + " + ".join(f"v{i}" for i in range(9, n_tasks, 10)), ["task:sum"]))
    return make_notebook(folder / "trivial.ipynb", cells)


def compile_spec(notebook: Path) -> dict[str, Any]:
    from compiler.compile.api import compile_notebook

    compiled = compile_notebook(notebook)
    assert compiled.ok, [d.render() for d in compiled.diagnostics[:3]]
    spec = compiled.spec
    assert spec is not None
    return spec


def run_once(spec: dict[str, Any], notebook: Path, scheduler: str, on_event: Any) -> Any:
    from compiler.runtime import run_pipeline

    return run_pipeline(
        spec,
        notebook_path=notebook,
        scheduler=scheduler,
        force=[t["name"] for t in spec["tasks"]],
        on_event=on_event,
    )


def replay(
    url: str, spec: dict[str, Any], notebook: Path, events: list, result: Any
) -> tuple[float, float, float]:
    """Seconds (in on_event calls, in start + finish + close, until all was written) for one
    run replayed into a recorder the way run_pipeline drives it."""
    store = open_store(url)
    run_id = uuid.uuid4().hex[:16]
    renamed = [{**e, "run_id": run_id} for e in events]
    result_data = {**result.to_dict(), "run_id": run_id}
    start = time.perf_counter()
    recorder = RunRecorder(store, spec, notebook, None, run_id, heartbeat_s=0)
    recorder.start()
    in_start = time.perf_counter() - start
    in_calls = 0.0
    for event in renamed:
        t0 = time.perf_counter()
        recorder(event)
        in_calls += time.perf_counter() - t0
    t0 = time.perf_counter()
    recorder.finish(result_data)
    recorder.close()
    in_finish = time.perf_counter() - t0
    total = time.perf_counter() - start
    assert not recorder.errors, recorder.errors
    store.close()
    return in_calls, in_start + in_finish, total


def bench_recording(n_tasks: int, repeats: int, postgres_url: str | None) -> None:
    from distributed import LocalCluster

    folder = Path(tempfile.mkdtemp(prefix="kiln-lineage-bench-"))
    notebook = trivial_notebook(folder, n_tasks)
    spec = compile_spec(notebook)
    n = len(spec["tasks"])
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        events: list[dict[str, Any]] = []
        result = run_once(spec, notebook, cluster.scheduler_address, events.append)
        assert result.status == "succeeded"
        print(f"captured a real run: {n} tasks, {len(events)} events")

        targets = [("SQLite", lambda i: f"sqlite:///{folder / f'replay-{i}.db'}")]
        if postgres_url:
            targets.append(("PostgreSQL", lambda i: postgres_url))
        for label, url_for in targets:
            replay(url_for(-1), spec, notebook, events, result)  # warm up: schema, imports
            samples = [replay(url_for(i), spec, notebook, events, result) for i in range(repeats)]
            in_calls, start_finish, total = (
                statistics.median(sample[k] for sample in samples) for k in range(3)
            )
            print(
                f"recorder alone ({label}): {total / n * 1000:.3f} ms per task, everything "
                f"written ({total * 1000:.0f} ms per run, {total / len(events) * 1e6:.0f} us per "
                f"event)  (target <= 2 ms per task)\n"
                f"    of which on the run's thread: on_event {in_calls / len(events) * 1e6:.1f} us "
                f"per event (queued); start + finish + close {start_finish * 1000:.0f} ms per run"
            )

        off, on = [], []
        for i in range(repeats):
            start = time.perf_counter()
            run_once(spec, notebook, cluster.scheduler_address, None)
            off.append(time.perf_counter() - start)
            store = open_store(f"sqlite:///{folder / f'e2e-{i}.db'}")
            start = time.perf_counter()
            with RunRecorder(store, spec, notebook, None, heartbeat_s=0) as recorder:
                run_result = run_once(spec, notebook, cluster.scheduler_address, recorder)
                recorder.finish(run_result)
            on.append(time.perf_counter() - start)
            store.close()
        t_off, t_on = statistics.median(off), statistics.median(on)
        print(
            f"end to end, {n} tasks: recording off {t_off:.2f} s, on {t_on:.2f} s; "
            f"difference {(t_on - t_off) / n * 1000:+.2f} ms per task "
            f"({(t_on / t_off - 1) * 100:+.1f} %)"
        )
    finally:
        cluster.close()


# -- a big store ----------------------------------------------------------------------------------


def _hex(*parts: Any) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def fill_store(url: str, folder: Path, n_runs: int, batch: int = 1000) -> dict[str, Any]:
    """n_runs runs of a six-task chain (outputs, inputs, a file read and a file written each),
    inserted in bulk. Returns targets to query, taken from the last run."""
    from tests.lineage_fixtures import chain_spec

    spec, notebook = chain_spec(folder, 6)
    out_file = folder / "out.txt"
    store = open_store(url)
    now = utcnow()
    with store.writing() as c:
        pipeline_id = c.execute(
            pipelines.insert().returning(pipelines.c.id),
            {
                "name": spec["name"],
                "version": spec["version"],
                "spec_digest": _hex(spec),
                "spec": spec,
                "notebook_path": str(notebook),
                "notebook_digest": spec["notebook"]["digest"],
                "created_at": now,
            },
        ).scalar_one()
        read_id, write_id = (
            c.execute(datasets.insert().returning(datasets.c.id), {"path": str(p)}).scalar_one()
            for p in (folder / "data" / "in.csv", out_file)
        )
    task_names = [t["name"] for t in spec["tasks"]]
    next_task_run_id = 1
    last: dict[str, Any] = {}
    for first in range(0, n_runs, batch):
        run_rows, task_rows, out_rows, in_rows, artifact_rows, access_rows = [], [], [], [], [], []
        for r in range(first, min(first + batch, n_runs)):
            run_id = _hex("run", r)[:16]
            started = now - dt.timedelta(seconds=n_runs - r)
            run_rows.append(
                {
                    "id": run_id,
                    "pipeline_id": pipeline_id,
                    "status": "succeeded",
                    "parameters": {"scale": r % 7},
                    "started_at": started,
                    "ended_at": started,
                    "notebook_path": str(notebook),
                    "host": "bench",
                    "pid": 1,
                }
            )
            for i, name in enumerate(task_names):
                task_run_id = next_task_run_id
                next_task_run_id += 1
                task_rows.append(
                    {
                        "id": task_run_id,
                        "run_id": run_id,
                        "task": name,
                        "version": spec["tasks"][i]["version"],
                        "cache_key": _hex("key", r, i),
                        "status": "done",
                        "cached": False,
                        "attempts": 1,
                        "duration": 0.01,
                    }
                )
                if i < len(task_names) - 1:
                    digest = _hex("artifact", r, i)
                    artifact_rows.append(
                        {"digest": digest, "type": "builtins.int", "size": 28, "created_at": now}
                    )
                    out_rows.append(
                        {"task_run_id": task_run_id, "name": f"x{i}", "artifact_digest": digest}
                    )
                    last[f"x{i}"] = digest
                if i > 0:
                    in_rows.append(
                        {
                            "task_run_id": task_run_id,
                            "name": f"x{i - 1}",
                            "producer_task": task_names[i - 1],
                            "artifact_digest": _hex("artifact", r, i - 1),
                        }
                    )
                if i == 0:
                    access_rows.append(
                        {
                            "task_run_id": task_run_id,
                            "dataset_id": read_id,
                            "direction": "read",
                            "digest": _hex("in.csv"),
                            "recorded_at": started,
                        }
                    )
                if i == len(task_names) - 1:
                    access_rows.append(
                        {
                            "task_run_id": task_run_id,
                            "dataset_id": write_id,
                            "direction": "write",
                            "digest": _hex("out", r),
                            "recorded_at": started,
                        }
                    )
            last["run_id"] = run_id
        with store.writing() as c:
            for table, rows in (
                (runs, run_rows),
                (task_runs, task_rows),
                (artifacts, artifact_rows),
                (task_outputs, out_rows),
                (task_inputs, in_rows),
                (dataset_accesses, access_rows),
            ):
                c.execute(table.insert(), rows)
    if store.dialect == "postgresql":  # ids were given explicitly: move the sequence on
        with store.writing() as c:
            c.exec_driver_sql("SELECT setval('task_runs_id_seq', (SELECT max(id) FROM task_runs))")
            c.exec_driver_sql("ANALYZE")
    store.close()
    out_file.write_text("the latest run's output\n")
    # Make the latest run's recorded write match the file as it is now.
    store = open_store(url)
    from sqlalchemy import update

    from compiler.lineage.run_context import file_digest

    with store.writing() as c:
        c.execute(
            update(dataset_accesses)
            .where(dataset_accesses.c.digest == _hex("out", n_runs - 1))
            .values(digest=file_digest(out_file))
        )
    store.close()
    return {"file": str(out_file), "artifact": last["x3"][:10], "task": f"t4@{last['run_id'][:8]}"}


def bench_queries(url: str, label: str, n_runs: int, repeats: int) -> None:
    from compiler.cli.lineage import register

    folder = Path(tempfile.mkdtemp(prefix="kiln-lineage-query-"))
    start = time.perf_counter()
    targets = fill_store(url, folder, n_runs)
    print(f"{label}: {n_runs} runs generated in {time.perf_counter() - start:.1f} s")
    store = open_store(url)
    parser = argparse.ArgumentParser(prog="kiln")
    register(parser.add_subparsers(dest="command"))
    for kind, target in targets.items():
        lineage(store, target)  # warm the connection pool and the OS cache
        query, command = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            found = lineage(store, target)
            query.append(time.perf_counter() - t0)
            args = parser.parse_args(["lineage", target, "--lineage-db", url])
            t0 = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                code = args.func(args)
            command.append(time.perf_counter() - t0)
            assert code == 0 and found["tree"]["task"]
        print(
            f"  kiln lineage <{kind}> on {n_runs} runs: query {statistics.median(query) * 1000:.1f}"
            f" ms, whole command {statistics.median(command) * 1000:.1f} ms (target <= 200 ms)"
        )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (CI)")
    parser.add_argument("--postgres", action="store_true", help="also on a local PostgreSQL")
    args = parser.parse_args()
    n_tasks, n_runs, repeats = (100, 1000, 1) if args.quick else (500, 10_000, 3)

    postgres_url = None
    if args.postgres:
        from tests.postgres_fixture import postgres_server, postgres_unavailable

        reason = postgres_unavailable()
        if reason:
            print(f"PostgreSQL skipped: {reason}")
        else:
            postgres_url = postgres_server().new_database()

    bench_recording(n_tasks, repeats, postgres_url)
    folder = Path(tempfile.mkdtemp(prefix="kiln-lineage-store-"))
    bench_queries(f"sqlite:///{folder / 'lineage.db'}", "SQLite", n_runs, max(repeats, 5))
    if postgres_url:
        from tests.postgres_fixture import postgres_server

        bench_queries(postgres_server().new_database(), "PostgreSQL", n_runs, max(repeats, 5))


if __name__ == "__main__":
    main()
