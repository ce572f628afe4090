"""Faults on real parts: a worker killed under a resource-restricted task (a real LocalCluster
whose workers declare no MEMORY resource), a store that cannot be written, a schedule row whose
pid now belongs to another process, and PostgreSQL's limits on what lineage stores."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.compile.api import compile_notebook
from compiler.lineage import open_store, show_run
from compiler.ops.run import run_spec
from tests.nbutil import make_notebook
from tests.postgres_fixture import postgres_server, postgres_unavailable
from tests.test_cli_compile import kiln

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def plain_cluster():
    """One worker process under a nanny, declaring no resources (as `dask worker` does by
    default): memory requests are placed by the workers' memory limits."""
    from tests.clusters import loopback_cluster

    cluster = loopback_cluster(memory_limit=2 * 1024**3)
    try:
        yield cluster
    finally:
        cluster.close()


def _kills_its_worker_once(marker: Path) -> str:
    # The pause lets the worker report that the task started before the process dies, as a
    # worker lost mid-task has.
    return (
        "import os, pathlib, signal, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.write_text('killed once')\n"
        "    time.sleep(1.5)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "value = len(marker.read_text())\n"
    )


def test_a_memory_restricted_task_finishes_after_its_worker_is_replaced(tmp_path, plain_cluster):
    """The task was pinned to the worker addresses seen at the start; the nanny's new worker
    has another address, so the task stayed `no-worker` and `kiln run` hung. Lineage shows
    the lost attempt and the worker it was lost on."""
    marker = tmp_path / "killed"
    notebook = make_notebook(
        tmp_path / "restricted.ipynb",
        [
            ("n = 3", ["parameters"]),
            (
                _kills_its_worker_once(marker),
                ["task:fragile", "resources:memory=200MiB", "timeout:60s"],
            ),
            ("total = value * n", ["task:after"]),
        ],
        owner="Ana Lima",
    )
    spec = compile_notebook(notebook).spec
    assert spec is not None
    first_worker = next(iter(plain_cluster.scheduler_info["workers"]))
    db = tmp_path / "lineage.db"
    result = run_spec(
        spec,
        notebook_path=notebook,
        scheduler=plain_cluster.scheduler_address,
        lineage_db=f"sqlite:///{db}",
    )
    assert result.ok, [t.error for t in result.tasks]
    fragile = result.task("fragile")
    assert fragile.status == "done" and fragile.attempts == 2
    assert result.lineage_error is None
    with open_store(f"sqlite:///{db}") as store:
        recorded = {t["task"]: t for t in show_run(store, result.run_id)["tasks"]}
    log = recorded["fragile"]["attempt_log"]
    assert recorded["fragile"]["attempts"] == 2
    assert [e["status"] for e in log] == ["failed", "done"]
    assert log[0]["reason"] == "worker_died" and log[0]["worker"] == first_worker
    assert log[1]["worker"] != first_worker
    assert "died while running the task" in log[0]["error"]


def test_a_store_that_cannot_be_written_stops_the_run_before_any_task(tmp_path):
    side_effect = tmp_path / "task-ran"
    notebook = make_notebook(
        tmp_path / "store.ipynb",
        [(f"open({str(side_effect)!r}, 'w').write('x')\nx = 1", ["task:writes"])],
        owner="Ana Lima",
    )
    # Root ignores permission bits, so the store lies below a plain file: nothing can be
    # created there, whoever runs the test.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = blocker / "store"
    proc = kiln("run", str(notebook), "--store", str(store), "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the artifact store {store} cannot be written" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not side_effect.exists()  # checked before the first task, not after the compute


def test_a_lineage_database_that_cannot_be_written_fails_the_run_loudly(tmp_path):
    notebook = make_notebook(tmp_path / "lost.ipynb", [("x = 1", ["task:one"])], owner="Ana Lima")
    folder_not_db = tmp_path / "db-is-a-folder"
    folder_not_db.mkdir()
    proc = kiln(
        "run",
        str(notebook),
        "--workers",
        "1",
        "--lineage-db",
        f"sqlite:///{folder_not_db}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the run's lineage was not recorded" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- schedules: liveness by pid and process start time --------------------------------------------


def _running_row(store, schedule_name: str, pid: int, pid_started_at: float | None) -> None:
    from sqlalchemy import insert

    from compiler.lineage.schema import schedule_runs
    from compiler.schedule.scheduler import get_schedule

    started = dt.datetime(2026, 11, 22, 4, 0, tzinfo=dt.UTC)
    schedule = get_schedule(store, schedule_name)
    row = {
        "schedule_id": schedule.id,
        "due_at": started,
        "status": "running",
        "started_at": started,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_started_at": pid_started_at,
    }
    store.write(lambda c: c.execute(insert(schedule_runs).values(**row)))


def test_a_stale_schedule_row_whose_pid_was_reused_does_not_block_the_schedule(tmp_path):
    from compiler.lineage.run_context import process_started_at
    from compiler.schedule.scheduler import Scheduler, add_schedule, schedule_run_rows

    notebook = make_notebook(
        tmp_path / "nightly.ipynb", [("x = 1", ["task:one"])], owner="Ana Lima"
    )
    t0 = dt.datetime(2026, 11, 22, 5, 59, 30, tzinfo=dt.UTC)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open_store(f"sqlite:///{tmp_path / 'lineage.db'}") as store:
            for name in ("reused", "mine", "alive"):
                add_schedule(store, name, notebook, "* * * * *", now=t0)
            started = process_started_at(other.pid)
            assert started is not None
            # A crashed scheduler's row whose pid now belongs to another process...
            _running_row(store, "reused", other.pid, started - 3600)
            # ...one whose pid is this very scheduler's (a restart got the same pid)...
            _running_row(store, "mine", os.getpid(), started - 7200)
            # ...and one of a scheduler that is still running.
            _running_row(store, "alive", other.pid, started)
            done: list[str] = []
            scheduler = Scheduler(
                store, job=lambda s, due: done.append(s.name) or {"status": "succeeded"}
            )
            actions = {a.schedule: a.action for a in scheduler.tick(t0 + dt.timedelta(seconds=31))}
            scheduler.stop(wait=True)
            assert actions == {"reused": "started", "mine": "started", "alive": "skipped"}
            for name in ("reused", "mine"):
                rows = schedule_run_rows(store, name)
                assert [r["status"] for r in rows] == ["succeeded", "interrupted"], name
                assert "stopped" in rows[1]["error"]
            claimed = schedule_run_rows(store, "reused")[0]
            assert claimed["status"] == "succeeded"
    finally:
        other.kill()
        other.wait()


# -- PostgreSQL's limits ------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> str:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        return postgres_server().new_database()
    except RuntimeError as exc:
        pytest.skip(str(exc))


def test_nan_and_infinite_parameters_are_recorded_on_postgresql(tmp_path, postgres_url):
    """PostgreSQL's json type refuses the bare NaN/Infinity tokens; the whole run's lineage
    was dropped with exit 0. They are stored as text both databases accept."""
    notebook = make_notebook(
        tmp_path / "floats.ipynb",
        [("low = 0.0\nhigh = 1.0", ["parameters"]), ("span = high - low", ["task:span"])],
        owner="Ana Lima",
    )
    spec = compile_notebook(notebook).spec
    result = run_spec(
        spec,
        notebook_path=notebook,
        params={"low": -math.inf, "high": math.nan},
        workers=1,
        lineage_db=postgres_url,
        use_cache=False,
    )
    assert result.lineage_error is None
    with open_store(postgres_url) as store:
        run = show_run(store, result.run_id)
    assert run["parameters"] == {"low": "-Infinity", "high": "NaN"}
    assert [t["task"] for t in run["tasks"]] == ["span"]


def test_an_output_whose_type_name_is_very_long_is_recorded_on_postgresql(tmp_path, postgres_url):
    cls = "C" * 300
    notebook = make_notebook(
        tmp_path / "types.ipynb",
        [(f"class {cls}:\n    pass\nthing = {cls}()", ["task:make"]), ("ok = thing", ["task:use"])],
        owner="Ana Lima",
    )
    result = run_spec(
        compile_notebook(notebook).spec, notebook_path=notebook, workers=1, lineage_db=postgres_url
    )
    assert result.ok and result.lineage_error is None, result.lineage_error
    with open_store(postgres_url) as store:
        run = show_run(store, result.run_id)
    (output,) = next(t for t in run["tasks"] if t["task"] == "make")["outputs"]
    assert output["type"].endswith("C" * 100) and len(output["type"]) == 255


def test_names_postgresql_cannot_store_are_refused_before_anything_runs(tmp_path, postgres_url):
    long_name = "t" * 201
    notebook = make_notebook(
        tmp_path / "long.ipynb",
        [("x = 1", [f"task:{long_name}"]), ("y = x", ["task:ok"])],
        owner="Ana Lima",
    )
    proc = kiln("run", str(notebook), "--lineage-db", postgres_url, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "is 201 characters; at most 100" in proc.stderr and "cell 0" in proc.stderr
    # The schedule of a notebook: its name too, and NaN parameters are stored.
    proc = kiln(
        "schedule",
        "add",
        str(notebook),
        "--cron",
        "0 6 * * *",
        "--name",
        "s" * 300,
        "--lineage-db",
        postgres_url,
    )
    assert proc.returncode == 2 and "use up to 200" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_schedule_add_with_a_nan_parameter_is_stored_on_postgresql(tmp_path, postgres_url):
    notebook = make_notebook(
        tmp_path / "floats.ipynb",
        [("high = 1.0", ["parameters"]), ("span = high * 2", ["task:span"])],
        owner="Ana Lima",
    )
    proc = kiln(
        "schedule",
        "add",
        str(notebook),
        "--cron",
        "0 6 * * *",
        "-p",
        "high",
        "nan",
        "--lineage-db",
        postgres_url,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parameters"] == {"high": "NaN"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--cron", "0 0 31 2 *"], "is never due"),
        (["--cron", "0 0 30 2 *"], "is never due"),
        (["--cron", "0 6 * * *", "--tz", "Europe"], "unknown time zone 'Europe'"),
        (["--cron", "0 6 * * *", "--name", "n" * 300], "use up to 200"),
    ],
)
def test_schedule_add_refuses_bad_input_with_exit_2(tmp_path, args, fragment):
    notebook = make_notebook(tmp_path / "daily.ipynb", [("x = 1", ["task:one"])], owner="Ana Lima")
    db = f"sqlite:///{tmp_path / 'lineage.db'}"
    proc = kiln("schedule", "add", str(notebook), *args, "--lineage-db", db)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_schedule_add_refuses_a_file_that_is_not_a_notebook(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    db = f"sqlite:///{tmp_path / 'lineage.db'}"
    proc = kiln("schedule", "add", str(readme), "--cron", "0 6 * * *", "--lineage-db", db)
    assert proc.returncode == 2 and "not a notebook" in proc.stderr, proc.stderr


def test_an_output_the_store_cannot_take_is_reported_on_the_task(tmp_path):
    """The value still reaches the next task in memory; the task says it was not cached (the
    failure used to be swallowed on the worker)."""
    notebook = make_notebook(
        tmp_path / "lock.ipynb",
        [
            ("import threading\nlock = threading.Lock()", ["task:make"]),
            ("held = lock.locked()", ["task:use"]),
        ],
        owner="Ana Lima",
    )
    db = tmp_path / "lineage.db"
    proc = kiln("run", str(notebook), "--workers", "1", "--lineage-db", f"sqlite:///{db}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "make: done" in proc.stderr and "(not cached: lock: TypeError" in proc.stderr
    with open_store(f"sqlite:///{db}") as store:
        from compiler.lineage import list_runs

        run = show_run(store, list_runs(store)[0]["run_id"])
    make = next(t for t in run["tasks"] if t["task"] == "make")
    assert "cannot pickle" in make["attempt_log"][-1]["cache_error"]
