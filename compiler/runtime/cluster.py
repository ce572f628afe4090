"""Where tasks run: the embedded LocalCluster or an existing Dask cluster, and resource placement.

Declared task resources map onto Dask worker resources: cpu -> CPU, memory -> MEMORY (bytes),
gpu -> GPU. Local workers are started with what they really have. A request that no connected
worker can satisfy is refused before the run (ResourceUnavailable), because Dask would otherwise
keep such a task waiting forever.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.model.units import format_bytes
from compiler.runtime.clients import POOL, dashboard_link

RESOURCE_NAMES = {"cpu": "CPU", "memory": "MEMORY", "gpu": "GPU"}
WORKER_WAIT_S = 30.0
WORKER_PRELOAD = "compiler.runtime.worker_preload"


class ResourceUnavailable(ValueError):
    """A task asks for resources that no worker of the cluster has."""


@dataclass(frozen=True)
class WorkerCapacity:
    address: str
    name: str
    resources: dict[str, float]
    memory_limit: int | None
    nthreads: int


@dataclass(frozen=True)
class Placement:
    """What `Client.submit` gets for one task: resource requirements and/or allowed workers."""

    resources: dict[str, float] | None = None
    workers: list[str] | None = None
    # True: `workers` is a preference. Dask resolves worker restrictions to addresses when the
    # task is submitted; once those workers are gone (a worker killed and replaced by its
    # nanny, under a new address) a strict restriction left the task `no-worker` for ever.
    loose: bool = False

    def submit_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.resources:
            kwargs["resources"] = dict(self.resources)
        if self.workers:
            kwargs["workers"] = list(self.workers)
            kwargs["allow_other_workers"] = self.loose
        return kwargs


def flush_store_writes_on(client: Any) -> None:
    """Wait until every worker has written the large outputs it stores after their tasks
    returned, and their cache manifests: closing a cluster ends its worker processes, and with
    them those writes. Free when nothing is pending; a worker that fails to answer is skipped
    (its entries are lost, the runs' results are not)."""
    from compiler.runtime.store_writes import flush_store_writes

    with contextlib.suppress(Exception):
        client.run(flush_store_writes, on_error="ignore")


def close_local_cluster(cluster: Any, timeout: float) -> None:
    """Close a LocalCluster Kiln started, after its workers' pending store writes."""
    from distributed import Client

    with contextlib.suppress(Exception):
        POOL.forget(str(cluster.scheduler_address))
    with contextlib.suppress(Exception):
        with Client(cluster.scheduler_address, timeout="10s") as client:
            flush_store_writes_on(client)
    with contextlib.suppress(Exception):
        cluster.close(timeout=timeout)


def detect_gpus() -> int:
    """GPUs this machine can give a local worker: CUDA_VISIBLE_DEVICES, else nvidia-smi -L."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return 0 if visible.strip() in ("", "NoDevFiles") else len(ids)
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def local_worker_resources(memory_limit: int | None, gpus: int) -> dict[str, float]:
    # One worker process can use every core (numpy, threads), so each one reports them all;
    # with one thread per worker, CPU only decides whether a request fits at all.
    resources: dict[str, float] = {"CPU": float(os.cpu_count() or 1)}
    if memory_limit:
        resources["MEMORY"] = float(memory_limit)
    if gpus:
        resources["GPU"] = float(gpus)
    return resources


def configured_scheduler_address(explicit: str | None) -> str | None:
    """--scheduler, else DASK_SCHEDULER_ADDRESS, else Dask's `scheduler-address` config."""
    if explicit:
        return explicit
    import dask.config

    return os.environ.get("DASK_SCHEDULER_ADDRESS") or dask.config.get("scheduler-address", None)


@dataclass
class ClusterSession:
    client: Any
    cluster: Any = None  # the LocalCluster we started, None for an existing cluster
    dashboard: str | None = None
    extra_workers: list[str] = field(default_factory=list)
    # An existing cluster's address: its client is borrowed from clients.POOL, given back here.
    borrowed_from: str | None = None

    @property
    def owned(self) -> bool:
        return self.cluster is not None

    def close(self) -> None:
        """Close (or give back) the client; close the cluster only if this run started it, once
        its workers have stored what they still had to write (store_writes.py)."""
        if self.borrowed_from is not None:
            POOL.give_back(self.borrowed_from, self.client)
            return
        try:
            if self.cluster is not None:
                flush_store_writes_on(self.client)
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def add_memory_worker(self, memory_limit: int) -> str | None:
        """Start one more local worker with a larger memory limit (and MEMORY resource).
        Returns its address, or None on a cluster we do not own."""
        if self.cluster is None:
            return None
        name = f"kiln-memory-{len(self.extra_workers) + 1}"
        template = copy.deepcopy(next(iter(self.cluster.worker_spec.values())))
        options = template["options"]
        options["memory_limit"] = int(memory_limit)
        options["resources"] = {**(options.get("resources") or {}), "MEMORY": float(memory_limit)}
        self.cluster.worker_spec[name] = template
        with _spawned_workers_skip_main_module():
            self.cluster.sync(self.cluster._correct_state)
        expected = len(self.cluster.worker_spec)
        self.client.wait_for_workers(expected, timeout=WORKER_WAIT_S)
        self.extra_workers.append(name)
        for capacity in worker_capacities(self.client):
            if capacity.name == name:
                return capacity.address
        return None


@contextlib.contextmanager
def _spawned_workers_skip_main_module() -> Iterator[None]:
    """Worker processes are spawned, and multiprocessing's spawn re-imports the parent's
    `__main__` in every child: for `kiln run` that is the CLI with the whole compiler (seconds
    per worker). Task functions travel by value or by importable module, never via `__main__`,
    so the children can skip it."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__
    }
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            main.__dict__.pop("__spec__", None)


def _quiet_dask_logs() -> None:
    for name in ("distributed", "distributed.nanny", "distributed.worker", "distributed.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)


def local_cluster_options(
    workers: int | None, memory_limit: int | str | None = None
) -> dict[str, Any]:
    """LocalCluster keyword arguments of Kiln's local clusters (one per run, the server's warm
    one and `kiln cluster start`'s): worker processes of one thread, on loopback, with their
    real memory and GPUs as Dask resources."""
    from distributed.worker_memory import parse_memory_limit

    n_workers = workers or os.cpu_count() or 1
    per_worker_memory = parse_memory_limit(
        memory_limit if memory_limit is not None else "auto",
        1,
        total_cores=n_workers,
        logger=logging.getLogger("distributed"),
    )
    return {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        # Task failures are reported by Kiln; the workers' own "Compute Failed" logs are noise.
        "silence_logs": logging.CRITICAL,
        "memory_limit": per_worker_memory or 0,
        "resources": local_worker_resources(per_worker_memory, detect_gpus()),
        # Each worker process imports the task executor and IPython while it starts (Dask's
        # worker preload) instead of in its first task: ~0.1-0.3 s a worker that a cold run
        # otherwise spends after the cluster is up, now spent while the client compiles.
        "preload": [WORKER_PRELOAD],
    }


def start_local_cluster(options: Mapping[str, Any], **extra: Any) -> Any:
    """A LocalCluster with a dashboard on loopback when it can serve one."""
    from distributed import LocalCluster

    _quiet_dask_logs()
    with _spawned_workers_skip_main_module():
        try:
            return LocalCluster(dashboard_address="127.0.0.1:0", **options, **extra)
        except Exception:
            # The dashboard is optional; some environments cannot serve it.
            return LocalCluster(dashboard_address=None, **options, **extra)


def open_cluster(
    scheduler: str | None, workers: int | None, memory_limit: int | str | None = None
) -> ClusterSession:
    """Connect to the configured cluster (see `configured_scheduler_address`, which includes
    the cluster of `kiln cluster start`), or start a LocalCluster of worker processes."""
    address = configured_scheduler_address(scheduler) or warm_cluster_address()
    if address:
        client, dashboard = POOL.borrow(address)
        return ClusterSession(client=client, dashboard=dashboard, borrowed_from=address)

    return start_run_cluster(workers, memory_limit, forkserver=_start_forkserver())


def start_run_cluster(
    workers: int | None, memory_limit: int | str | None, *, forkserver: bool
) -> ClusterSession:
    """A run's own LocalCluster and its client. `forkserver`: the fork server runs with Dask
    and the executor preloaded (`_start_forkserver`): workers are forked from it, which also
    makes closing them fast (a forked worker skips the interpreter teardown a spawned one
    pays, 0.2-0.6 s at the end of every run)."""
    import dask.config
    from distributed import Client

    if forkserver:
        _skip_distributed_forkserver_preload()
    method = "forkserver" if forkserver else "spawn"
    with dask.config.set({"distributed.worker.multiprocessing-method": method}):
        cluster = start_local_cluster(local_cluster_options(workers, memory_limit))
    client = Client(cluster)
    return ClusterSession(client=client, cluster=cluster, dashboard=dashboard_link(client))


class LocalClusterStart:
    """A run's own LocalCluster, started in a thread as soon as the caller knows tasks will run
    (`kiln run` of a notebook that must be compiled first), so that spawning the worker
    processes (each imports Dask, numpy, IPython: 1.5-2 s of a cold run) overlaps with the
    compile and the lineage store's opening instead of following them. `session()` hands the
    started cluster to the run; `discard()` closes it when the run turns out to need none."""

    def __init__(self, workers: int | None, memory_limit: int | str | None = None):
        self._lock = threading.Lock()
        self._session: ClusterSession | None = None
        self._error: BaseException | None = None
        self._taken = False  # by a run, or discarded: either way no longer ours to hand out
        self._forkserver = _start_forkserver()
        self._thread = threading.Thread(
            target=self._start,
            args=(workers, memory_limit),
            name="kiln-cluster-start",
            daemon=True,
        )
        self._thread.start()

    def _start(self, workers: int | None, memory_limit: int | str | None) -> None:
        try:
            session = start_run_cluster(workers, memory_limit, forkserver=self._forkserver)
        except BaseException as exc:  # handed to the run, which reports it as it would its own
            self._error = exc
            return
        with self._lock:
            self._session = session
            discarded = self._taken
        if discarded:  # discarded while starting, without waiting
            session.close()

    def session(self) -> ClusterSession:
        """The started cluster (waits for it); raises what starting it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        with self._lock:
            assert self._session is not None and not self._taken
            self._taken = True
            return self._session

    def discard(self, wait: bool = True) -> None:
        """Close the cluster unless a run took it. `wait=False` (a run refused before it
        started: a notebook with errors) does not wait for it to come up: the thread closes it
        then, and if the process ends first its workers end with it (Dask's worker processes
        watch their parent)."""
        with self._lock:
            if self._taken:
                return
            self._taken = True
            session = self._session
        if session is not None:
            session.close()
        elif wait:
            self._thread.join()  # _start closes it once up


def _start_forkserver() -> bool:
    """Start multiprocessing's fork server with Dask and Kiln's executor imported, so that the
    run's worker processes are forked from it ready to work, instead of each being spawned and
    importing them itself: the imports are paid once, in a process started before the client
    has imported anything heavy, rather than once per worker while the client compiles (a cold
    two-worker run on 2 cores: ~1 s sooner). False where there is no fork server (Windows) or
    it was started before without these modules (then workers are spawned as usual)."""
    import multiprocessing
    import multiprocessing.forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    server: Any = multiprocessing.forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:  # running: its preload is fixed
        return set(getattr(server, "_preload_modules", ())) >= {"distributed", WORKER_PRELOAD}
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["distributed", WORKER_PRELOAD]
    )
    with _spawned_workers_skip_main_module():  # as for spawned workers: not the CLI's __main__
        multiprocessing.forkserver.ensure_running()
    return True


def _skip_distributed_forkserver_preload() -> None:
    """distributed's own first use of the fork server imports every optional package (numpy,
    pandas, ...) in this process to choose what the server preloads; ours already runs with
    what the workers need, so that choice (and ~1 s of imports here) is skipped."""
    import distributed.utils

    if hasattr(distributed.utils, "_forkserver_preload_set"):
        distributed.utils._forkserver_preload_set = True


def warm_cluster_address() -> str | None:
    """The address in the scheduler file of `kiln cluster start` (compiler.runtime.warm), when
    its scheduler answers; None otherwise (a file left by a killed cluster is ignored)."""
    from compiler.runtime.warm import live_scheduler_address

    return live_scheduler_address()


def worker_capacities(client: Any) -> list[WorkerCapacity]:
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else None
    info = info or client.scheduler_info()
    capacities = []
    for address, worker in sorted((info.get("workers") or {}).items()):
        capacities.append(
            WorkerCapacity(
                address=address,
                name=str(worker.get("name", address)),
                resources={k: float(v) for k, v in (worker.get("resources") or {}).items()},
                memory_limit=int(worker["memory_limit"]) if worker.get("memory_limit") else None,
                nthreads=int(worker.get("nthreads") or 1),
            )
        )
    return capacities


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def wait_for_any_worker(client: Any, timeout: float = WORKER_WAIT_S) -> None:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception as exc:
        raise ResourceUnavailable(
            f"no Dask worker connected to the scheduler within {timeout:.0f} s"
        ) from exc


def _describe_request(requested: Mapping[str, Any]) -> str:
    parts = []
    for key in ("cpu", "memory", "gpu"):
        if key in requested:
            value = requested[key]
            parts.append(f"{key}={format_bytes(value) if key == 'memory' else f'{value:g}'}")
    return ", ".join(parts)


def _describe_worker(capacity: WorkerCapacity) -> str:
    have = [
        f"{k}={format_bytes(v) if k == 'MEMORY' else f'{v:g}'}"
        for k, v in sorted(capacity.resources.items())
    ]
    if capacity.memory_limit:
        have.append(f"memory_limit={format_bytes(capacity.memory_limit)}")
    return f"{capacity.address} ({', '.join(have) or 'no resources declared'})"


def placement_for(
    task_name: str, requested: Mapping[str, Any], capacities: Iterable[WorkerCapacity]
) -> Placement:
    """Map a task's declared resources to Dask placement, or raise ResourceUnavailable.

    GPU and CPU become Dask resource requirements when workers declare them (GPU always: a GPU
    task on a worker without one would fail). Memory uses the MEMORY resource when workers declare
    it, and otherwise the workers' memory limits. A CPU request on a cluster whose workers declare
    no CPU resource is advisory.
    """
    capacities = list(capacities)
    wanted = {RESOURCE_NAMES[k]: float(v) for k, v in requested.items() if k in RESOURCE_NAMES}
    wanted = {k: v for k, v in wanted.items() if v > 0}
    if not wanted:
        return Placement()
    declared = {name for c in capacities for name in c.resources}
    resources: dict[str, float] = {}
    memory_by_limit: float | None = None
    for name, amount in wanted.items():
        if name in declared or name == "GPU":
            resources[name] = amount
        elif name == "MEMORY":
            memory_by_limit = amount
        # else: CPU on workers that declare none -> no constraint

    def fits(c: WorkerCapacity) -> bool:
        if any(c.resources.get(name, 0.0) < amount for name, amount in resources.items()):
            return False
        return memory_by_limit is None or not c.memory_limit or c.memory_limit >= memory_by_limit

    eligible = [c for c in capacities if fits(c)]
    if not eligible:
        workers = "; ".join(_describe_worker(c) for c in capacities) or "none"
        raise ResourceUnavailable(
            f"task {task_name!r} asks for {_describe_request(requested)}, which no worker of "
            f"the cluster has. Workers: {workers}"
        )
    # Memory checked against memory limits (workers declare no MEMORY resource) is not a Dask
    # constraint. Where every worker has the room, nothing is pinned; otherwise the task prefers
    # the workers that have it but may go to a worker that joined later (the executor's memory
    # watchdog still stops it before the worker runs out).
    pin = memory_by_limit is not None and len(eligible) < len(capacities)
    return Placement(
        resources=resources or None,
        workers=[c.address for c in eligible] if pin else None,
        loose=pin,
    )


def larger_memory_placement(
    placement: Placement,
    target: int,
    capacities: Iterable[WorkerCapacity],
) -> Placement | None:
    """Placement asking for `target` bytes of MEMORY on an existing worker that has it (or the
    largest one above the current ask); None when no worker has more than the current ask."""
    capacities = list(capacities)
    current = (placement.resources or {}).get("MEMORY", 0.0)
    offers = sorted(c.resources["MEMORY"] for c in capacities if "MEMORY" in c.resources)
    if offers:
        enough = [m for m in offers if m >= target]
        chosen = enough[0] if enough else offers[-1]
        if chosen <= current:
            return None
        return Placement(resources={**(placement.resources or {}), "MEMORY": chosen})
    limits = [c for c in capacities if c.memory_limit and c.memory_limit >= target]
    if not limits:
        return None
    return Placement(resources=placement.resources, workers=[c.address for c in limits], loose=True)
