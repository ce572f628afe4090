"""Where tasks run: an existing cluster (dask scheduler/worker processes), resource placement,
a worker killed mid-task, and a task that needs more memory than its first worker had."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from compiler.runtime import ResourceUnavailable, run_pipeline
from compiler.runtime.cache import ArtifactStore

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")


def _wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """`dask scheduler` + two `dask worker` processes on loopback; one has GPU=1."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_LOGGING__DISTRIBUTED": "error"}
    processes = [
        subprocess.Popen(
            [
                str(DASK),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=folder,
        )
    ]
    try:
        _wait_for(scheduler_file.exists, what="the scheduler file")
        address = json.loads(_wait_for(lambda: scheduler_file.read_text() or None))["address"]
        for name, extra in (("gpu-worker", ["--resources", "GPU=1"]), ("cpu-worker", [])):
            processes.append(
                subprocess.Popen(
                    [
                        str(DASK),
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--name",
                        name,
                        "--no-dashboard",
                        "--memory-limit",
                        "2GiB",
                        *extra,
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=folder,
                )
            )
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            workers = {
                info["name"]: addr
                for addr, info in client.scheduler_info(n_workers=-1)["workers"].items()
            }
        yield {"address": address, "workers": workers}
    finally:
        for process in reversed(processes):  # workers first, then the scheduler
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def test_a_gpu_task_lands_on_the_worker_that_has_a_gpu(make_pipeline, external_cluster):
    spec, nb = make_pipeline(
        tasks=[
            {"name": "prep", "source": "data = list(range(10))", "outputs": ["data"]},
            {
                "name": "train",
                "source": "model = sum(data)",
                "inputs": {"data": "prep"},
                "outputs": ["model"],
                "resources": {"gpu": 1},
            },
            {"name": "score", "source": "print(model)", "inputs": {"model": "train"}},
        ]
    )
    result = run_pipeline(spec, notebook_path=nb, scheduler=external_cluster["address"])
    assert result.ok
    assert result.task("train").worker == external_cluster["workers"]["gpu-worker"]

    # A request no worker can satisfy is refused up front, naming the task.
    spec["tasks"][1]["resources"] = {"gpu": 2}
    with pytest.raises(ResourceUnavailable, match="'train' asks for gpu=2"):
        run_pipeline(spec, notebook_path=nb, scheduler=external_cluster["address"], use_cache=False)


def test_an_existing_cluster_is_found_through_the_environment(
    make_pipeline, external_cluster, monkeypatch
):
    spec, nb = make_pipeline(tasks=[{"name": "hello", "source": "print('hi')"}])
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", external_cluster["address"])
    result = run_pipeline(spec, notebook_path=nb)
    assert result.task("hello").worker in external_cluster["workers"].values()


def test_a_killed_worker_does_not_lose_the_run(make_pipeline, external_cluster, tmp_path):
    pid_file = tmp_path / "worker.pid"
    spec, nb = make_pipeline(
        tasks=[
            {
                "name": "slow",
                "source": (
                    "import os, time, pathlib\n"
                    "marker = pathlib.Path('worker.pid')\n"
                    "first_attempt = not marker.exists()\n"
                    "if first_attempt:\n"
                    "    marker.write_text(str(os.getpid()))\n"
                    "    time.sleep(60)\n"
                    "answer = 6 * 7\n"
                    "ran_in = os.getpid()"
                ),
                "outputs": ["answer", "ran_in"],
            },
            {
                "name": "report",
                "source": "doubled = answer * 2\ndoubled",
                "inputs": {"answer": "slow"},
                "outputs": ["doubled"],
            },
        ]
    )
    outcome = {}

    def run():
        outcome["result"] = run_pipeline(
            spec, notebook_path=nb, scheduler=external_cluster["address"]
        )

    runner = threading.Thread(target=run)
    runner.start()
    pid = int(_wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the task"))
    os.kill(pid, signal.SIGKILL)  # the worker process dies mid-task
    runner.join(timeout=150)
    result = outcome["result"]
    assert result.ok
    assert result.task("report").status == "done"
    ran_in = ArtifactStore(result.store_url).get_value(
        result.task("slow").outputs["ran_in"]["digest"]
    )
    assert ran_in != pid  # the task finished in another worker process
    import nbformat

    out = nbformat.read(result.output_notebook, as_version=4)
    report_cell = out.cells[spec["tasks"][1]["code"][0]["cell_index"]]
    assert report_cell.outputs[0]["data"]["text/plain"] == "84"


def test_a_task_out_of_memory_is_retried_on_a_bigger_worker(make_pipeline):
    # The embedded LocalCluster (no scheduler given), one worker of 700 MB; the task holds
    # ~800 MB, so it fails there and succeeds on a worker started with twice the memory.
    spec, nb = make_pipeline(
        tasks=[
            {
                "name": "big",
                "source": (
                    "import time\n"
                    "blocks = []\n"
                    "for _ in range(40):\n"
                    "    blocks.append(b'x' * 20_000_000)\n"
                    "    time.sleep(0.08)  # slower than the memory monitors sample\n"
                    "held = sum(len(b) for b in blocks)"
                ),
                "outputs": ["held"],
            },
            {"name": "after", "source": "print(held)", "inputs": {"held": "big"}},
        ]
    )
    events = []
    result = run_pipeline(
        spec, notebook_path=nb, workers=1, memory_limit="700MB", on_event=events.append
    )
    big = result.task("big")
    assert result.ok, big.error
    assert big.attempts == 2
    first, second = big.attempt_log
    assert first["status"] == "failed" and "WorkerMemoryExceeded" in first["error"]
    assert first["reason"] == "memory" and "more memory" in first["retry"]
    assert second["status"] == "done" and second["worker"] != first["worker"]
    assert second["memory_limit"] > first["memory_limit"]
    assert big.peak_memory > 800_000_000
    assert any(e.get("status") == "retrying" for e in events)
    assert result.dashboard is None or result.dashboard.startswith("http://127.0.0.1:")


def test_local_cluster_workers_report_their_resources():
    from compiler.runtime.cluster import local_worker_resources

    resources = local_worker_resources(2**30, gpus=0)
    assert resources["CPU"] == float(os.cpu_count()) and resources["MEMORY"] == 2**30
    assert "GPU" not in resources
    assert local_worker_resources(2**30, gpus=2)["GPU"] == 2


def test_placement_maps_declared_resources_to_dask():
    from compiler.runtime.cluster import (
        Placement,
        WorkerCapacity,
        larger_memory_placement,
        placement_for,
    )

    gpu = WorkerCapacity("tcp://a", "gpu", {"GPU": 1.0, "MEMORY": 8e9}, int(8e9), 1)
    cpu = WorkerCapacity("tcp://b", "cpu", {"MEMORY": 4e9}, int(4e9), 1)
    assert placement_for("t", {}, [gpu, cpu]) == Placement()
    assert placement_for("t", {"gpu": 1}, [gpu, cpu]).resources == {"GPU": 1.0}
    assert placement_for("t", {"memory": 6e9}, [gpu, cpu]).resources == {"MEMORY": 6e9}
    # CPU is advisory on workers that declare no CPU resource.
    assert placement_for("t", {"cpu": 2}, [gpu, cpu]) == Placement()
    with pytest.raises(ResourceUnavailable, match="'t' asks for memory=9.3 GiB"):
        placement_for("t", {"memory": 10e9}, [gpu, cpu])

    # Workers that declare no MEMORY resource are chosen by their memory limit.
    plain = [
        WorkerCapacity("tcp://c", "c", {}, int(2e9), 1),
        WorkerCapacity("tcp://d", "d", {}, int(8e9), 1),
    ]
    chosen = placement_for("t", {"memory": 3e9}, plain)
    assert chosen.workers == ["tcp://d"] and chosen.resources is None

    # After a MemoryError: the smallest worker with enough memory, else none.
    asked = Placement(resources={"MEMORY": 4e9})
    assert larger_memory_placement(asked, int(7e9), [gpu, cpu]).resources == {"MEMORY": 8e9}
    assert larger_memory_placement(Placement({"MEMORY": 8e9}), int(16e9), [gpu, cpu]) is None


def test_memory_by_limit_pins_nothing_when_every_worker_fits_and_only_prefers_otherwise():
    """Dask turns worker restrictions into addresses at submission: a strict pin left the
    task `no-worker` for ever once those workers were replaced (new addresses)."""
    from compiler.runtime.cluster import WorkerCapacity, placement_for

    same = [WorkerCapacity(f"tcp://w{i}", f"w{i}", {}, int(8e9), 1) for i in range(3)]
    assert placement_for("t", {"memory": 3e9}, same).submit_kwargs() == {}
    mixed = [WorkerCapacity("tcp://small", "s", {}, int(2e9), 1), *same[:1]]
    kwargs = placement_for("t", {"memory": 3e9}, mixed).submit_kwargs()
    assert kwargs == {"workers": ["tcp://w0"], "allow_other_workers": True}
