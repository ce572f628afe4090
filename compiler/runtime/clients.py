"""Connected Dask clients kept between the runs of one process, one per scheduler address.

A run on a cluster that is already running (the server's warm cluster, `kiln cluster start`,
`--scheduler`) connected a Client and closed it again: ~9 ms to connect and ~13 ms to close
here, as much as the tasks of a small pipeline. A run now borrows the address's client and
gives it back; a client nobody borrowed for IDLE_CLOSE_S is closed, and so is one whose
cluster went away (Dask would try to reconnect it for 30 s). One Client may be used from several
threads at once (the server's concurrent runs); each run subscribes to its own event topic and
releases its own futures (driver.py).

Cost: a connection to the scheduler stays open for IDLE_CLOSE_S after a process's last run.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

IDLE_CLOSE_S = 10.0
CONNECT_TIMEOUT = "30s"
CLOSE_TIMEOUT_S = 5.0


@dataclass
class _Entry:
    client: Any
    dashboard: str | None
    borrowed: int = 0
    returned: float = 0.0  # time.monotonic() of the last give_back


class ClientPool:
    def __init__(self, idle_close_s: float = IDLE_CLOSE_S):
        self.idle_close_s = idle_close_s
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._reaper: threading.Thread | None = None

    def borrow(self, address: str) -> tuple[Any, str | None]:
        """A client connected to `address`, and the cluster's dashboard link (None when it
        serves none). Raises what connecting raises (OSError, TimeoutError)."""
        with self._lock:
            entry = self._entries.get(address)
            if entry is not None and connected(entry.client):
                entry.borrowed += 1
                return entry.client, entry.dashboard
            stale = self._entries.pop(address, None) if entry is not None else None
        if stale is not None and not stale.borrowed:
            _close_quietly(stale.client)  # a run still holding it closes it when it is done
        # Connected outside the lock: a slow or unreachable scheduler must not hold up runs
        # on other addresses. Two runs that both find no client each connect one; the one
        # not kept is closed when it is given back.
        client = _connect(address)
        entry = _Entry(client, dashboard_link(client), borrowed=1)
        with self._lock:
            if address not in self._entries:
                self._entries[address] = entry
        return client, entry.dashboard

    def give_back(self, address: str, client: Any) -> None:
        with self._lock:
            entry = self._entries.get(address)
            kept = entry is not None and entry.client is client and connected(client)
            if kept:
                assert entry is not None
                entry.borrowed -= 1
                entry.returned = time.monotonic()
                if self._reaper is None or not self._reaper.is_alive():
                    self._reaper = threading.Thread(
                        target=self._reap, name="kiln-client-pool", daemon=True
                    )
                    self._reaper.start()
            elif entry is not None and entry.client is client:  # its cluster went away
                del self._entries[address]
        if not kept:
            _close_quietly(client)

    def forget(self, address: str) -> None:
        """The cluster at `address` is being closed: close its client first."""
        with self._lock:
            entry = self._entries.pop(address, None)
        if entry is not None:
            _close_quietly(entry.client)

    def close_all(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            _close_quietly(entry.client)

    def _reap(self) -> None:
        """Close the clients nobody borrowed for idle_close_s, and the ones whose cluster went
        away; ends when none is left."""
        while True:
            time.sleep(max(0.05, self.idle_close_s / 4))
            now = time.monotonic()
            with self._lock:
                idle = [
                    address
                    for address, entry in self._entries.items()
                    if not entry.borrowed
                    and (now - entry.returned >= self.idle_close_s or not connected(entry.client))
                ]
                closing = [self._entries.pop(address).client for address in idle]
                last = not self._entries
            for client in closing:
                _close_quietly(client)
            if last:
                with self._lock:
                    if not self._entries:
                        self._reaper = None
                        return


def connected(client: Any) -> bool:
    """True while the client's connection to its scheduler is up (Dask sets the status to
    "connecting" as soon as the scheduler's end of the connection closes)."""
    comm = getattr(client, "scheduler_comm", None)
    return getattr(client, "status", None) == "running" and comm is not None and not comm.closed()


def dashboard_link(client: Any) -> str | None:
    try:
        if "dashboard" not in (client.scheduler_info().get("services") or {}):
            return None
        return str(client.dashboard_link)
    except Exception:
        return None


def _connect(address: str) -> Any:
    from distributed import Client

    # Not the process's default client: code in this process that calls dask.compute (a
    # script, the server) must not be sent to a cluster it never asked for.
    return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)


class _ClosingOnPurpose(logging.Filter):
    """Drops what Dask's client logs while this module closes a client whose cluster went away
    ("Failed to reconnect to scheduler", the cancelled connection attempt's traceback): Dask
    logs them as errors whenever a client that is reconnecting is closed, and here that is the
    intended end of a client nobody needs, not a failure (a run that was using the cluster
    reports its own error)."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = 0
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.closing


_QUIET = _ClosingOnPurpose()
logging.getLogger("distributed.client").addFilter(_QUIET)


def _close_quietly(client: Any) -> None:
    with _QUIET.lock:
        _QUIET.closing += 1
    try:
        with contextlib.suppress(Exception):
            client.close(timeout=CLOSE_TIMEOUT_S)
    finally:
        with _QUIET.lock:
            _QUIET.closing -= 1


POOL = ClientPool()
atexit.register(POOL.close_all)
