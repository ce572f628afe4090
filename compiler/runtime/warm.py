"""Warm clusters: a local Dask cluster that outlives one run, so a run pays no start-up.

Two forms, both built like the per-run cluster (`cluster.local_cluster_options`):

- `kiln cluster start|status|stop` keeps a LocalCluster in a detached process
  (`python -m compiler.runtime.warm`). It is found through a Dask scheduler file, the JSON that
  `dask scheduler --scheduler-file` writes and `Client(scheduler_file=...)` reads: its path is
  Dask config `kiln.scheduler-file` (env `DASK_KILN__SCHEDULER_FILE`), else
  `kiln-scheduler-<uid>.json` in the temporary folder. `kiln run` uses it when nothing more
  explicit is set (`--scheduler`, DASK_SCHEDULER_ADDRESS, Dask's `scheduler-address`).
- `WarmCluster`, the one LocalCluster a long-lived process (the Jupyter server) keeps for its
  runs: started on first use, closed after an idle timeout, started again if it died.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

START_WAIT_S = 120.0  # worker processes import numpy, IPython...: slow on a busy machine
STOP_WAIT_S = 30.0


def default_scheduler_file() -> Path:
    import dask.config

    configured = dask.config.get("kiln.scheduler-file", None)
    if configured:
        return Path(str(configured)).expanduser()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"kiln-scheduler-{uid}.json"


def read_scheduler_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or being written
        return None
    return data if isinstance(data, dict) and data.get("address") else None


def answers(address: str, timeout: float = 0.5) -> bool:
    """Whether something listens at a tcp:// address (a refused connection fails at once, so a
    file left by a killed cluster costs no Dask connect timeout)."""
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls") or parts.hostname is None or parts.port is None:
        return True  # inproc://, ucx://: let Dask try
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def live_scheduler_address(path: Path | None = None) -> str | None:
    info = read_scheduler_file(path or default_scheduler_file())
    if info is None:
        return None
    address = str(info["address"])
    return address if answers(address) else None


# -- kiln cluster start | status | stop ----------------------------------------------------------


def start_background(
    path: Path | None = None, workers: int | None = None, memory_limit: str | None = None
) -> tuple[str, bool]:
    """Start the background cluster unless one answers at `path`: (address, started now).
    Raises RuntimeError with the daemon's log when it does not come up."""
    path = path or default_scheduler_file()
    running = live_scheduler_address(path)
    if running:
        return running, False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a stale file from a killed cluster
    log_path = path.with_suffix(".log")
    command = [sys.executable, "-m", "compiler.runtime.warm", "--scheduler-file", str(path)]
    if workers:
        command += ["--workers", str(workers)]
    if memory_limit:
        command += ["--memory-limit", str(memory_limit)]
    import compiler

    # The daemon imports this package as the caller does (an install, or PYTHONPATH).
    here = str(Path(compiler.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
    }
    with open(log_path, "ab") as log:
        # A new session: the cluster survives the shell (and the terminal) that started it.
        daemon = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=str(path.parent),
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        address = live_scheduler_address(path)
        if address and _workers_connected(address, workers or os.cpu_count() or 1):
            return address, True
        if daemon.poll() is not None:
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        daemon.terminate()
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"the background cluster did not start (log {log_path}):\n{tail}")


def _workers_connected(address: str, expected: int) -> bool:
    from distributed import Client

    try:
        with Client(address, timeout="5s") as client:
            return len(client.scheduler_info().get("workers") or {}) >= expected
    except Exception:
        return False


def cluster_status(path: Path | None = None) -> dict[str, Any] | None:
    """The background cluster's address, dashboard, workers, threads and memory; None when
    none answers."""
    from distributed import Client

    path = path or default_scheduler_file()
    address = live_scheduler_address(path)
    if address is None:
        return None
    with Client(address, timeout="10s") as client:
        info = client.scheduler_info()
        workers = info.get("workers") or {}
        dashboard = None
        if "dashboard" in (info.get("services") or {}):
            dashboard = str(client.dashboard_link)
        return {
            "address": address,
            "scheduler_file": str(path),
            "dashboard": dashboard,
            "workers": len(workers),
            "threads": sum(int(w.get("nthreads") or 0) for w in workers.values()),
            "memory_limit": sum(int(w.get("memory_limit") or 0) for w in workers.values()),
        }


def stop_background(path: Path | None = None) -> bool:
    """Stop the background cluster; False when none was running."""
    from distributed import Client

    path = path or default_scheduler_file()
    address = live_scheduler_address(path)
    if address is None:
        path.unlink(missing_ok=True)
        return False
    with Client(address, timeout="10s") as client:
        pid = int(client.run_on_scheduler(os.getpid))
    # The scheduler lives in the daemon's process: SIGTERM lets it close its workers.
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (the daemon's parent has not reaped it) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def serve(path: Path, workers: int | None, memory_limit: str | None) -> int:
    """The daemon: a LocalCluster whose scheduler writes the scheduler file, until SIGTERM (or
    the scheduler is shut down by a client)."""
    from compiler.runtime.cluster import (
        close_local_cluster,
        local_cluster_options,
        start_local_cluster,
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster = start_local_cluster(
        local_cluster_options(workers, memory_limit),
        scheduler_kwargs={"scheduler_file": str(path)},
    )
    print(f"kiln cluster: scheduler at {cluster.scheduler_address}", flush=True)
    try:
        while not stop.wait(1.0):
            if str(cluster.scheduler.status.name) in ("closing", "closed", "failed"):
                break
    finally:
        close_local_cluster(cluster, STOP_WAIT_S)
        path.unlink(missing_ok=True)
    return 0


# -- the server's warm cluster -------------------------------------------------------------------


class WarmCluster:
    """One LocalCluster reused by every run of a long-lived process. `address()` starts it (or
    starts it again if it died); it is closed after `idle_timeout` seconds without a run."""

    def __init__(
        self,
        workers: int | None = None,
        memory_limit: int | str | None = None,
        idle_timeout: float = 600.0,
    ):
        self.workers = workers or None
        self.memory_limit = memory_limit
        self.idle_timeout = idle_timeout
        self._cluster: Any = None
        self._lock = threading.Lock()
        self._in_use = 0
        self._last_used = time.monotonic()
        self._closed = False
        self._reaper: threading.Thread | None = None
        self.starts = 0  # how many clusters this object started (a restart counts)

    def address(self) -> str:
        with self._lock:
            self._last_used = time.monotonic()
            if self._cluster is not None and not self._alive():
                self._close_cluster()
            if self._cluster is None:
                self._start()
            return str(self._cluster.scheduler_address)

    @contextlib.contextmanager
    def lease(self) -> Iterator[str]:
        """The address, held against the idle timeout while the caller's run goes on."""
        with self._lock:
            self._in_use += 1
        try:
            yield self.address()
        finally:
            with self._lock:
                self._in_use -= 1
                self._last_used = time.monotonic()

    @property
    def running(self) -> bool:
        return self._cluster is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_cluster()

    def _start(self) -> None:
        from distributed import Client

        from compiler.runtime.cluster import local_cluster_options, start_local_cluster

        self._cluster = start_local_cluster(local_cluster_options(self.workers, self.memory_limit))
        with Client(self._cluster.scheduler_address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=START_WAIT_S)
        self.starts += 1
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="kiln-warm-idle", daemon=True)
            self._reaper.start()

    def _alive(self) -> bool:
        cluster = self._cluster
        try:
            status = str(cluster.scheduler.status.name)
        except Exception:
            return False
        return status == "running" and answers(str(cluster.scheduler_address))

    def _close_cluster(self) -> None:
        from compiler.runtime.cluster import close_local_cluster

        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            close_local_cluster(cluster, STOP_WAIT_S)

    def _reap(self) -> None:
        while True:
            time.sleep(max(0.05, min(30.0, self.idle_timeout / 4)))
            with self._lock:
                if self._closed or self._cluster is None:
                    return
                idle = time.monotonic() - self._last_used
                if self._in_use == 0 and idle >= self.idle_timeout:
                    self._close_cluster()
                    return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compiler.runtime.warm")
    parser.add_argument("--scheduler-file", required=True)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--memory-limit")
    args = parser.parse_args(argv)
    return serve(Path(args.scheduler_file), args.workers, args.memory_limit)


if __name__ == "__main__":
    sys.exit(main())
