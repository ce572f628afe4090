"""Warm clusters: one cluster serves many runs of many notebooks, and no run sees another's
leftovers; `kiln cluster start|status|stop`; the server's warm cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from compiler.ops.run import prepare_run, run_notebook
from compiler.runtime.warm import WarmCluster
from jupyter_ext.runs import RunManager
from tests.nbutil import make_notebook

REPO = Path(__file__).resolve().parents[1]

MESSY = """import os, sys, time
import matplotlib
matplotlib.rcParams["lines.linewidth"] = 7.5
import matplotlib.pyplot as plt
plt.figure()
os.environ["KILN_LEAK"] = "from the messy notebook"
sys.path.append("/kiln-leak")
secret_{i} = 42
time.sleep(0.4)
os.chdir("/")"""

CAREFUL = """import json, os, sys, time
import matplotlib
import matplotlib.pyplot as plt
time.sleep(0.4)
print(json.dumps({
    "env": os.environ.get("KILN_LEAK"),
    "path": "/kiln-leak" in sys.path,
    "linewidth": matplotlib.rcParams["lines.linewidth"],
    "figures": len(plt.get_fignums()),
    "cwd": os.getcwd(),
    "secret": any(name.startswith("secret_") for name in globals()),
}))"""


def _run(notebook: Path, address: str):
    return run_notebook(
        prepare_run(notebook), scheduler=address, use_cache=False, record_lineage=False
    )


def test_nothing_leaks_between_notebooks_on_a_long_lived_cluster(tmp_path):
    # One worker process, so every careful task runs where messy ones ran before it.
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        _messy_then_careful(cluster.scheduler_address, tmp_path)
    finally:
        cluster.close()


def _messy_then_careful(dask_scheduler_address: str, tmp_path: Path) -> None:
    messy = make_notebook(
        tmp_path / "messy" / "messy.ipynb",
        [(MESSY.format(i=i), [f"task:mess{i}"]) for i in range(4)],
    )
    careful = make_notebook(
        tmp_path / "careful" / "careful.ipynb",
        [(CAREFUL, [f"task:look{i}"]) for i in range(4)],
    )
    first = _run(messy, dask_scheduler_address)
    assert first.ok
    second = _run(careful, dask_scheduler_address)
    assert second.ok
    workers = {t.worker for t in first.tasks}
    assert len(workers) == 1 and {t.worker for t in second.tasks} == workers

    output = nbformat.read(second.output_notebook, as_version=4)
    seen = [
        json.loads(out["text"])
        for cell in output.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out["text"].startswith("{")
    ]
    assert len(seen) == 4
    import matplotlib

    default_width = matplotlib.rcParamsDefault["lines.linewidth"]
    for looked in seen:
        assert looked == {
            "env": None,
            "path": False,
            "linewidth": default_width,
            "figures": 0,
            "cwd": str((tmp_path / "careful").resolve()),
            "secret": False,
        }


def _kiln(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_kiln_cluster_start_serves_kiln_run_until_stopped(dask_scheduler_address, tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DASK_KILN__SCHEDULER_FILE": str(scheduler_file),
    }
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    notebook = make_notebook(
        tmp_path / "nb" / "where.ipynb",
        [("import os\npid = os.getpid()\nprint(pid)", ["task:where"])],
    )
    started = _kiln("cluster", "start", "--workers", "1", "--json", env=env, cwd=tmp_path)
    try:
        assert started.returncode == 0, started.stderr
        status = json.loads(started.stdout)
        assert status["workers"] == 1
        assert json.loads(scheduler_file.read_text())["address"] == status["address"]

        # kiln run finds it with no option at all, twice: no cluster started per run.
        runs = []
        for _ in range(2):
            ran = _kiln("run", str(notebook), "--json", "--no-cache", env=env, cwd=tmp_path)
            assert ran.returncode == 0, ran.stderr
            runs.append(json.loads(ran.stdout))
        assert runs[0]["dashboard"] == runs[1]["dashboard"] == status["dashboard"]
        assert runs[0]["tasks"][0]["worker"] == runs[1]["tasks"][0]["worker"]

        # --scheduler still wins over the running background cluster.
        elsewhere = _kiln(
            "run",
            str(notebook),
            "--json",
            "--scheduler",
            dask_scheduler_address,
            env=env,
            cwd=tmp_path,
        )
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert json.loads(elsewhere.stdout)["dashboard"] != status["dashboard"]

        # So does `kiln scheduler`: its kiln-engine job runs on the background cluster.
        report = make_notebook(
            tmp_path / "nb" / "report.ipynb", [("t = 1 + 1", ["task:t"])], owner="Ana Lima"
        )
        db = f"sqlite:///{tmp_path / 'schedules.db'}"
        added = _kiln(
            "schedule", "add", str(report), "--cron", "* * * * * */2", "--name", "tick",
            "--lineage-db", db, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        time.sleep(2.5)  # a due time has passed
        ticked = _kiln("scheduler", "--once", "--lineage-db", db, env=env, cwd=tmp_path)
        assert ticked.returncode == 0, ticked.stderr
        listed = _kiln(
            "schedule", "runs", "tick", "--json", "--lineage-db", db, env=env, cwd=tmp_path
        )
        rows = [r for r in json.loads(listed.stdout) if r["status"] == "succeeded"]
        assert rows, listed.stdout + ticked.stderr
        beside = f"sqlite:///{report.parent / '.kiln' / 'lineage.db'}"
        shown = _kiln(
            "show", rows[0]["kiln_run_id"], "--json", "--lineage-db", beside, env=env, cwd=tmp_path
        )
        assert json.loads(shown.stdout)["scheduler_address"] == status["address"], shown.stdout

        again = _kiln("cluster", "start", env=env, cwd=tmp_path)
        assert again.returncode == 0 and "already running" in again.stderr
    finally:
        stopped = _kiln("cluster", "stop", "--json", env=env, cwd=tmp_path)
    assert json.loads(stopped.stdout) == {"stopped": True}
    assert not scheduler_file.exists()
    assert _kiln("cluster", "status", env=env, cwd=tmp_path).returncode == 1
    # Named explicitly, a scheduler file nobody answers is a clear refusal, not a traceback.
    refused = _kiln(
        "run", str(notebook), "--scheduler-file", str(scheduler_file), env=env, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "no Dask scheduler answers" in refused.stderr and "Traceback" not in refused.stderr


def _wait_done(manager: RunManager, run_id: str) -> dict:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        record = manager.get(run_id)
        if record is not None and record.done:
            return record.to_dict()
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def test_the_server_reuses_one_warm_cluster_and_restarts_it_when_it_died(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    warm = WarmCluster(workers=1, idle_timeout=600)
    manager = RunManager(tmp_path, cluster=warm)
    try:
        addresses = []
        for name in ("one", "two"):
            notebook = make_notebook(tmp_path / f"{name}.ipynb", [("x = 1", ["task:t"])])
            prepared = prepare_run(notebook)
            record = manager.start(dict(prepared.spec), notebook, options={"use_cache": False})
            run = _wait_done(manager, record.run_id)
            assert run["status"] == "succeeded", run
            started = next(e for e in run["events"] if e.get("status") == "started")
            addresses.append(started["scheduler_address"])
        assert addresses[0] == addresses[1] and warm.starts == 1

        warm._cluster.close()  # the cluster died under the server
        notebook = tmp_path / "one.ipynb"
        record = manager.start(
            dict(prepare_run(notebook).spec), notebook, options={"use_cache": False}
        )
        assert _wait_done(manager, record.run_id)["status"] == "succeeded"
        assert warm.starts == 2
    finally:
        warm.close()


def test_a_warm_cluster_closes_after_its_idle_timeout():
    warm = WarmCluster(workers=1, idle_timeout=0.5)
    try:
        with warm.lease():
            time.sleep(1.0)
            assert warm.running  # held by a run: never closed under it
        deadline = time.monotonic() + 30
        while warm.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not warm.running
    finally:
        warm.close()


def test_the_servers_scheduler_runs_kiln_schedules_on_its_warm_cluster(tmp_path, monkeypatch):
    """A schedule the Jupyter server runs (c.KilnExtension.run_scheduler) goes to the server's
    warm cluster, like a run from the UI, instead of starting a LocalCluster of its own."""
    from compiler.lineage import open_store
    from compiler.schedule.scheduler import add_schedule, schedule_run_rows
    from jupyter_ext.scheduling import SchedulerService
    from jupyter_ext.stores import LineageStores

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    notebook = make_notebook(
        tmp_path / "report.ipynb",
        [("rows = 3", ["parameters"]), ("total = sum(range(rows))", ["task:total"])],
        owner="Ana Lima",
    )
    store = open_store(f"sqlite:///{tmp_path / 'lineage.db'}")
    warm = WarmCluster(workers=1, idle_timeout=600)
    service = SchedulerService(LineageStores(), enabled=True, poll_seconds=0.5, cluster=warm)
    try:
        address = warm.address()
        add_schedule(store, "often", notebook, "* * * * * */2")  # every 2 seconds
        service.watch(store)
        deadline = time.monotonic() + 180
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = [r for r in schedule_run_rows(store, "often") if r["status"] == "succeeded"]
            if rows:
                break
            time.sleep(0.5)
        assert rows, schedule_run_rows(store, "often")
        with open_store(None, notebook) as lineage:  # the run's lineage: beside the notebook
            run = lineage.show_run(rows[0]["kiln_run_id"])
        assert run["scheduler_address"] == address and warm.starts == 1
    finally:
        service.stop()
        warm.close()
        store.close()
