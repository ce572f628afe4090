"""Schedules: cron jobs run through papermill, stored in the lineage database.

Policy tests drive `Scheduler.tick(now)` with a fake clock; the real-time test uses a
seconds-field cron and a running `kiln scheduler` process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from compiler.lineage import open_store
from compiler.schedule.scheduler import (
    ScheduleError,
    Scheduler,
    add_schedule,
    get_schedule,
    list_schedules,
    next_due,
    remove_schedule,
    schedule_run_rows,
    set_paused,
)
from tests.nbutil import make_notebook

BIN = Path(sys.executable).parent
T0 = dt.datetime(2026, 11, 22, 5, 59, 30, tzinfo=dt.UTC)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    return make_notebook(
        tmp_path / "report.ipynb",
        [
            ("rows = 10", ["parameters"]),
            ("values = list(range(rows))", ["task:load"]),
            ("total = sum(values)\nprint('total', total)", ["task:report"]),
        ],
        owner="Ana Lima",
    )


@pytest.fixture
def store(tmp_path: Path):
    s = open_store(f"sqlite:///{tmp_path / 'lineage.db'}")
    yield s
    s.close()


class Job:
    """A stand-in for papermill that the test controls: it blocks until released."""

    def __init__(self) -> None:
        self.calls: list[dt.datetime] = []
        self.release = threading.Event()

    def __call__(self, schedule, due):
        self.calls.append(due)
        self.release.wait(30)
        return {"status": "succeeded", "output_notebook": f"/out/{due:%H%M}.ipynb"}


def test_cron_is_read_in_the_schedule_time_zone():
    after = dt.datetime(2026, 11, 22, 0, 0, tzinfo=dt.UTC)
    assert next_due("0 6 * * *", "UTC", after) == dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
    # 06:00 in Paris is 05:00 UTC in November (CET, UTC+1).
    paris = next_due("0 6 * * *", "Europe/Paris", after)
    assert paris == dt.datetime(2026, 11, 22, 5, 0, tzinfo=dt.UTC)


def test_a_daily_job_runs_once_on_the_night_clocks_go_back():
    def dues(cron, start, end):
        out, due = [], next_due(cron, "America/New_York", start)
        while due < end:
            out.append(f"{due:%d %H:%M}")
            due = next_due(cron, "America/New_York", due)
        return out

    start = dt.datetime(2024, 11, 2, 12, tzinfo=dt.UTC)  # 1:30 happens twice on 3 November
    end = dt.datetime(2024, 11, 4, 12, tzinfo=dt.UTC)
    assert dues("30 1 * * *", start, end) == ["03 05:30", "04 06:30"]
    # An hourly job runs in both 1:30s: each is a different hour.
    hourly = dues("30 * * * *", dt.datetime(2024, 11, 3, 4, tzinfo=dt.UTC), end)
    assert hourly[:4] == ["03 04:30", "03 05:30", "03 06:30", "03 07:30"]


@pytest.mark.parametrize("cron", ["every day", "61 * * * *", "* * *", ""])
def test_invalid_cron_is_refused_with_a_clear_error(store, notebook, cron):
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        add_schedule(store, "bad", notebook, cron)
    assert list_schedules(store) == []


def test_add_list_pause_resume_remove(store, notebook):
    s = add_schedule(
        store,
        "daily",
        notebook,
        "0 6 * * *",
        timezone="Europe/Paris",
        parameters={"rows": 5},
        now=T0,
    )
    assert s.next_due_at == dt.datetime(2026, 11, 23, 5, 0, tzinfo=dt.UTC)
    with pytest.raises(ScheduleError, match="already exists"):
        add_schedule(store, "daily", notebook, "0 7 * * *")
    with pytest.raises(ScheduleError, match="unknown time zone"):
        add_schedule(store, "tz", notebook, "0 7 * * *", timezone="Mars/Olympus")
    assert set_paused(store, "daily", True).paused
    assert not set_paused(store, "daily", False).paused
    remove_schedule(store, "daily")
    with pytest.raises(ScheduleError, match="no schedule named"):
        get_schedule(store, "daily")


def test_due_job_fires_once_and_an_overlapping_run_is_skipped(store, notebook):
    add_schedule(store, "every-minute", notebook, "* * * * *", now=T0)
    job = Job()
    scheduler = Scheduler(store, job=job)
    try:
        first = scheduler.tick(T0 + dt.timedelta(seconds=31))  # 06:00:01
        assert [(a.action, a.due_at.minute) for a in first] == [("started", 0)]
        assert scheduler.tick(T0 + dt.timedelta(seconds=40)) == []  # not due again yet
        # 06:01 is due while the 06:00 run still runs: skipped, and recorded as skipped.
        second = scheduler.tick(T0 + dt.timedelta(seconds=91))
        assert [(a.action, a.reason) for a in second] == [
            ("skipped", "the previous run is still running")
        ]
        job.release.set()
        scheduler.stop(wait=True)
    finally:
        job.release.set()
    rows = schedule_run_rows(store, "every-minute")
    assert [(r["status"], r["due_at"][11:16]) for r in rows] == [
        ("skipped", "06:01"),
        ("succeeded", "06:00"),
    ]
    assert len(job.calls) == 1


def test_a_restarted_scheduler_does_not_run_a_due_time_twice(store, notebook):
    add_schedule(store, "hourly", notebook, "0 * * * *", now=T0)
    job = Job()
    job.release.set()
    due = T0 + dt.timedelta(seconds=35)
    one = Scheduler(store, job=job)
    assert [a.action for a in one.tick(due)] == ["started"]
    one.stop(wait=True)
    # A second scheduler (a restart, or one on another machine) sees the same moment.
    two = Scheduler(store, job=job)
    assert two.tick(due) == []
    two.stop(wait=True)
    assert len(job.calls) == 1
    assert [r["status"] for r in schedule_run_rows(store, "hourly")] == ["succeeded"]


def test_a_second_live_scheduler_reports_no_skip_the_first_one_recorded(store, notebook):
    # The server's scheduler and a `kiln scheduler` process on one database. The next due time
    # comes while the first run still goes: both see it, one records the skip, and the other
    # used to report (and log) a second skip that the database never held.
    from sqlalchemy import insert

    from compiler.lineage.run_context import process_started_at
    from compiler.lineage.schema import schedule_runs

    add_schedule(store, "every-minute-both", notebook, "* * * * *", now=T0)
    schedule = get_schedule(store, "every-minute-both")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # What the other scheduler wrote: its 06:00 run, still going, and the 06:01 skip.
        started = T0 + dt.timedelta(seconds=31)
        rows = [
            {"due_at": T0 + dt.timedelta(seconds=30), "status": "running"},
            {"due_at": T0 + dt.timedelta(seconds=90), "status": "skipped", "finished_at": started},
        ]
        for row in rows:
            row.update(
                schedule_id=schedule.id,
                started_at=started,
                host=socket.gethostname(),
                pid=other.pid,
                pid_started_at=process_started_at(other.pid),
            )
            store.write(lambda c, row=row: c.execute(insert(schedule_runs).values(**row)))
        daemon = Scheduler(store, job=Job())
        try:
            assert daemon.tick(T0 + dt.timedelta(seconds=91)) == []
        finally:
            daemon.stop(wait=True)
    finally:
        other.kill()
        other.wait()
    statuses = [(r["status"], r["due_at"][11:16]) for r in schedule_run_rows(store, schedule.name)]
    assert statuses == [("skipped", "06:01"), ("running", "06:00")]


def _running_row_from(store, schedule_name, host, started, heartbeat):
    """A `running` row left by a scheduler on another machine."""
    from sqlalchemy import insert

    from compiler.lineage.schema import schedule_runs

    schedule = get_schedule(store, schedule_name)
    row = {
        "schedule_id": schedule.id,
        "due_at": started,
        "status": "running",
        "started_at": started,
        "heartbeat_at": heartbeat,
        "host": host,
        "pid": 4242,
    }
    store.write(lambda c: c.execute(insert(schedule_runs).values(**row)))


def test_a_run_left_running_by_a_dead_scheduler_on_another_host_stops_blocking(store, notebook):
    add_schedule(store, "alive", notebook, "* * * * *", now=T0)
    add_schedule(store, "dead", notebook, "* * * * *", now=T0)
    # Another machine's scheduler: one still beating, one silent for an hour (it crashed).
    _running_row_from(store, "alive", "worker-7", T0 - dt.timedelta(hours=1), T0)
    _running_row_from(store, "dead", "worker-9", T0 - dt.timedelta(hours=1), None)
    job = Job()
    job.release.set()
    scheduler = Scheduler(store, job=job)
    actions = {a.schedule: a for a in scheduler.tick(T0 + dt.timedelta(seconds=31))}
    scheduler.stop(wait=True)
    assert actions["alive"].action == "skipped"
    assert actions["alive"].reason == "the previous run is still running"
    assert actions["dead"].action == "started"
    dead_rows = schedule_run_rows(store, "dead")
    assert [r["status"] for r in dead_rows] == ["succeeded", "interrupted"]
    assert "on worker-9 sent no heartbeat since 2026-11-22 04:59:30" in dead_rows[1]["error"]


def test_a_long_run_beats_so_other_hosts_see_it_alive(store, notebook):
    add_schedule(store, "long", notebook, "0 * * * *", now=T0)
    job = Job()
    scheduler = Scheduler(store, job=job)
    try:
        scheduler.tick(T0 + dt.timedelta(seconds=31))
        later = T0 + dt.timedelta(minutes=20)
        scheduler.tick(later)
        with store.reading() as c:
            from sqlalchemy import select

            from compiler.lineage.schema import schedule_runs

            beat = c.execute(select(schedule_runs.c.heartbeat_at)).scalar_one()
        assert beat.replace(tzinfo=dt.UTC) == later
    finally:
        job.release.set()
        scheduler.stop(wait=True)


@pytest.mark.parametrize("policy, expected", [("run_once", ["started"]), ("skip", ["skipped"])])
def test_runs_missed_while_the_scheduler_was_down(store, notebook, policy, expected):
    add_schedule(store, "missed", notebook, "*/10 * * * *", missed=policy, now=T0)
    job = Job()
    job.release.set()
    scheduler = Scheduler(store, job=job)
    actions = scheduler.tick(T0 + dt.timedelta(hours=2))  # 12 due times passed
    scheduler.stop(wait=True)
    assert [a.action for a in actions] == expected
    assert "12" in actions[0].reason
    assert len(job.calls) == (1 if policy == "run_once" else 0)
    # Afterwards the schedule is back on its cron, not replaying the backlog.
    later = get_schedule(store, "missed").next_due_at
    assert later == dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)


def test_paused_schedules_do_not_fire(store, notebook):
    add_schedule(store, "p", notebook, "* * * * *", now=T0)
    set_paused(store, "p", True)
    scheduler = Scheduler(store, job=Job())
    assert scheduler.tick(T0 + dt.timedelta(minutes=5)) == []
    scheduler.stop(wait=False)


def test_kiln_scheduler_runs_papermill_with_the_kiln_engine(tmp_path, notebook):
    """Real time, real processes: a seconds cron, `kiln scheduler`, papermill and Dask."""
    env = dict(os.environ, KILN_LINEAGE_DB=f"sqlite:///{tmp_path / 'lineage.db'}")
    add = subprocess.run(
        [
            str(BIN / "kiln"),
            "schedule",
            "add",
            str(notebook),
            "--cron",
            "* * * * * */10",  # every 10 seconds: croniter reads a sixth field as seconds
            "-p",
            "rows",
            "4",
            "--name",
            "fast",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert add.returncode == 0, add.stderr
    log = (tmp_path / "scheduler.log").open("w")  # a file: an unread pipe could fill up
    proc = subprocess.Popen(
        [str(BIN / "kiln"), "scheduler", "--poll", "0.5"],
        env=env,
        cwd=tmp_path,
        stderr=log,
        text=True,
    )
    try:
        deadline = time.time() + 120
        rows = []
        while time.time() < deadline:
            listing = subprocess.run(
                [str(BIN / "kiln"), "schedule", "runs", "fast", "--json"],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
            )
            rows = json.loads(listing.stdout) if listing.returncode == 0 else []
            if any(r["status"] == "succeeded" for r in rows):
                break
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        log.close()
    done = [r for r in rows if r["status"] == "succeeded"]
    assert done, (rows, (tmp_path / "scheduler.log").read_text()[-3000:])
    output = Path(done[0]["output_notebook"])
    assert output.parent == tmp_path / ".kiln" / "schedules" / "fast"
    nb = nbformat.read(output, as_version=4)
    assert nb.metadata.papermill["parameters"] == {"rows": 4}
    assert nb.metadata.kiln["status"] == "succeeded"
    report = [c for c in nb.cells if "task:report" in c.metadata.get("tags", [])][0]
    assert "total 6" in "".join(o.get("text", "") for o in report.outputs)
    # The run's lineage is in the same database, linked from the schedule's run row.
    show = subprocess.run(
        [str(BIN / "kiln"), "show", done[0]["kiln_run_id"], "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["parameters"] == {"rows": 4}


def test_schedule_cli_errors(tmp_path, notebook):
    env = dict(os.environ, KILN_LINEAGE_DB=f"sqlite:///{tmp_path / 'lineage.db'}")
    bad = subprocess.run(
        [str(BIN / "kiln"), "schedule", "add", str(notebook), "--cron", "nope"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert "invalid cron expression 'nope'" in bad.stderr
    missing = subprocess.run(
        [str(BIN / "kiln"), "schedule", "pause", "ghost"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 1
    assert "no schedule named 'ghost'" in missing.stderr
    # -p values are typed like the notebook's defaults, as `kiln run -p` types them.
    for pair, message in [
        (["rows", "1.5"], "parameter 'rows' is an int; cannot read '1.5'"),
        (["nope", "1"], "unknown parameter 'nope' (this pipeline's parameters: rows)"),
    ]:
        refused = subprocess.run(
            [str(BIN / "kiln"), "schedule", "add", str(notebook), "--cron", "0 6 * * *",
             "-p", *pair],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert refused.returncode == 2 and message in refused.stderr


def test_the_scheduler_keeps_serving_when_its_database_fails_for_a_while(store, notebook, tmp_path):
    add_schedule(store, "often", notebook, "* * * * * *")  # every second
    db = tmp_path / "lineage.db"
    with sqlite3.connect(db) as c:  # the schedules table is gone: every check fails
        c.execute("ALTER TABLE schedules RENAME TO schedules_away")
    job = Job()
    job.release.set()
    scheduler = Scheduler(store, job=job)
    serving = threading.Thread(target=scheduler.serve, kwargs={"poll_seconds": 0.2})
    serving.start()
    try:
        time.sleep(1.0)
        assert serving.is_alive() and job.calls == []
        with sqlite3.connect(db) as c:  # the database is back
            c.execute("ALTER TABLE schedules_away RENAME TO schedules")
        deadline = time.monotonic() + 20
        while not job.calls and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.stop()
        serving.join(10)
    assert job.calls, "the scheduler stopped serving after the database failed"


def test_papermill_jobs_due_together_each_run_in_their_own_folder(store, tmp_path):
    """Two schedules due at once, papermill's default engine, each notebook reading a file by a
    relative path: each kernel starts in its notebook's folder, and the scheduler's process
    (a Jupyter server, say) keeps its working directory."""
    for team in ("north", "south"):
        (tmp_path / team).mkdir()
        (tmp_path / team / "region.txt").write_text(team)
        make_notebook(
            tmp_path / team / "report.ipynb",
            [("print('region', open('region.txt').read())", [])],
            owner=f"{team} team",
        )
        add_schedule(
            store, team, tmp_path / team / "report.ipynb", "0 6 * * *", engine="papermill", now=T0
        )
    here = os.getcwd()
    scheduler = Scheduler(store)
    actions = scheduler.tick(T0 + dt.timedelta(seconds=31))
    assert sorted(a.action for a in actions) == ["started", "started"]
    scheduler.stop(wait=True)
    assert os.getcwd() == here
    for team in ("north", "south"):
        (row,) = schedule_run_rows(store, team)
        assert row["status"] == "succeeded", row
        nb = nbformat.read(row["output_notebook"], as_version=4)
        assert nb.cells[0].outputs[0]["text"] == f"region {team}\n"
