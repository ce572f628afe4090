"""`kiln run` with no cluster running: the run's own cluster starts while a changed notebook
compiles (its worker processes forked from a preloaded fork server), an unchanged notebook whose
tasks are all cached never touches Dask, and a notebook with errors is refused at once without
leaving worker processes behind.

Each run is a real `kiln` process (python -m compiler.cli) on a real LocalCluster it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from tests.nbutil import make_notebook

REPO = Path(__file__).resolve().parents[1]

# What the unchanged second run prints after its summary: whether this process imported Dask.
_RUN_AND_TELL = (
    "import sys\n"
    "from compiler.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print('imported distributed:', 'distributed' in sys.modules, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _env(tmp_path: Path, marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    env.update(
        PYTHONPATH=str(REPO),
        # No `kiln cluster start` of this machine's user is found: the run starts its own.
        DASK_KILN__SCHEDULER_FILE=str(tmp_path / "no-cluster.json"),
        KILN_TEST_MARKER=marker,  # inherited by every process the run starts
    )
    return env


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("KILN_TEST_MARKER") == marker:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _no_processes_left(marker: str, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while _processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _sales_notebook(folder: Path) -> Path:
    return make_notebook(
        folder / "sales.ipynb",
        [
            ("region = 'north'", ["parameters"]),
            ("prices = [3.5, 4.0, 2.25]\nunits = [10, 4, 8]", ["task:load"]),
            ("revenue = sum(p * u for p, u in zip(prices, units))\nrevenue", ["task:revenue"]),
            ("print(region, 'sold', sum(units))", ["task:report"]),
        ],
    )


def test_a_changed_notebook_runs_on_its_own_cluster_and_an_unchanged_one_needs_no_dask(
    tmp_path,
):
    notebook = _sales_notebook(tmp_path)
    marker = uuid.uuid4().hex
    env = _env(tmp_path, marker)
    kiln = [sys.executable, "-m", "compiler.cli", "run", str(notebook), "--json"]

    first = subprocess.run(kiln, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["status"] == "succeeded"
    assert {t["name"]: t["status"] for t in summary["tasks"]} == {
        "load": "done",
        "revenue": "done",
        "report": "done",
    }
    assert "Dask dashboard: http://127.0.0.1:" in first.stderr
    # The cluster, its fork server and worker processes ended with the run.
    assert _no_processes_left(marker)

    again = subprocess.run(
        [sys.executable, "-c", _RUN_AND_TELL, "run", str(notebook), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    cached = json.loads(again.stdout)
    assert [t["status"] for t in cached["tasks"]] == ["cached"] * 3
    assert cached["run_id"] != summary["run_id"]  # a run of its own, recorded as such
    assert "imported distributed: False" in again.stderr


def test_a_notebook_with_errors_is_refused_at_once_and_leaves_no_worker_behind(tmp_path):
    notebook = make_notebook(
        tmp_path / "broken.ipynb",
        [("import math", ["setup"]), ("area = math.pi * radius ** 2", ["task:area"])],
    )
    marker = uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "run", str(notebook)],
        cwd=tmp_path,
        env=_env(tmp_path, marker),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "cell 1, line 1" in done.stderr and "radius" in done.stderr
    assert "Traceback" not in done.stderr
    assert _no_processes_left(marker)
