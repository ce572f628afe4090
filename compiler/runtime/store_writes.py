"""Large outputs stored after their task returned, so the task that reads them need not wait.

A task's outputs go to the artifact store from the worker that computed them. Writing a 500 MB
array into the page cache takes ~0.15 s here, longer than computing the array in the run
benchmark, while raw Dask hands the value on at once. So an output over DEFERRED_BYTES is only
hashed as its task ends (its digest is in the task's record: ~0.02 s), handed on in memory, and
written by one background thread of the worker process (`store_later`). The task's cache
manifest is written by that same thread after the artifacts (`commit_when_stored`), never
before them: a manifest on disk always has its artifacts, and a value changed in place while it
was being written is not published at all (cache.put_value_as hashes the file it wrote).

What this costs, and who pays:
- The end of a run no longer means its large values are on disk. A later run in the same
  process waits for the entries this process handed to workers (`await_commit`, called by
  plan_run); another process that plans meanwhile finds no entry and computes the task again.
- A worker process that ends before its writes are done loses those cache entries (never a
  run's results: the next run computes the task again). Clusters that Kiln closes itself
  call `flush_store_writes` on their workers first (cluster.py).
- The worker holds the value until it is written: about as long as Dask holds it for its reader.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from compiler.runtime.cache import ArtifactStore, store_at

logger = logging.getLogger("kiln.store")

# Outputs larger than this (dask.sizeof) are stored off the task's path. Below it a write costs
# less than handing it to a thread (a small pickle and a rename, ~0.1 ms), and the manifest can
# go with the run's others.
DEFERRED_BYTES = 16 * 2**20

# How long a later run in this process waits for an entry handed to a worker: a floor, plus
# the write at a slow 100 MB/s (the writes of a worker go one after another). Only a worker
# that died meanwhile, or a store that could take no note of the failure, costs this wait.
_COMMIT_WAIT_FLOOR_S = 3.0
_COMMIT_BYTES_PER_S = 100e6


# A deferred write waits until its worker has run no task for WRITE_QUIET_S, for at most
# WRITE_YIELD_S. Dask places a value's reader on the worker that holds it, and writing 500 MB
# into the page cache while that reader runs cost the reader ~0.01-0.02 s here (memory bandwidth
# and a core, on a small machine; the thread's lower priority does not help when a core is
# free). A worker that runs task after task still writes after WRITE_YIELD_S, sharing the
# machine as before. The wait keeps the value in memory that much longer.
WRITE_QUIET_S = 0.05
WRITE_YIELD_S = 1.0


class _TaskActivity:
    """Whether this worker process runs a task now, and when its last one ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.last_end = 0.0

    @contextlib.contextmanager
    def task(self) -> Iterator[None]:
        with self.lock:
            self.running += 1
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1
                self.last_end = time.monotonic()

    def wait_for_quiet(self) -> None:
        give_up = time.monotonic() + WRITE_YIELD_S
        while True:
            now = time.monotonic()
            with self.lock:
                quiet = not self.running and now - self.last_end >= WRITE_QUIET_S
            if quiet or now >= give_up:
                return
            time.sleep(0.005)


_activity = _TaskActivity()
task_running = _activity.task  # executor.execute_task runs each task inside it


class _WorkerWrites:
    """The worker process's store writes: one thread, first in first out, so a manifest
    submitted after its artifacts' writes runs after them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(
            1, thread_name_prefix="kiln-store", initializer=_lower_thread_priority
        )
        self.pending: dict[tuple[str, str], Future[int]] = {}
        self.failures: dict[tuple[str, str], str] = {}  # recent failed writes, bounded

    def store_later(self, store_url: str, value: Any, digest: str) -> None:
        with self.lock:
            if (store_url, digest) in self.pending:
                return  # the same content is already on its way (two outputs, one value)
            write = self.pool.submit(self._write, store_url, value, digest)
            self.pending[(store_url, digest)] = write
        write.add_done_callback(lambda done: self._done(store_url, digest, done))

    @staticmethod
    def _write(store_url: str, value: Any, digest: str) -> int:
        _activity.wait_for_quiet()
        return store_at(store_url).put_value_as(value, digest)

    def _done(self, store_url: str, digest: str, write: Future[int]) -> None:
        exc = write.exception()
        with self.lock:
            self.pending.pop((store_url, digest), None)
            if exc is not None:
                self.failures[(store_url, digest)] = f"{type(exc).__name__}: {exc}"
                while len(self.failures) > 256:
                    self.failures.pop(next(iter(self.failures)))
        if exc is not None:
            logger.warning("kiln: artifact %s was not stored: %s", digest, exc)

    def commit(
        self, store_url: str, cache_key: str, manifest: Mapping[str, Any], digests: list[str]
    ) -> None:
        self.pool.submit(self._commit, store_url, cache_key, dict(manifest), list(digests))

    def _commit(
        self, store_url: str, cache_key: str, manifest: dict[str, Any], digests: list[str]
    ) -> None:
        # Runs on the writer thread after every write submitted before it: each artifact is
        # now on disk, or its write failed.
        store = store_at(store_url)
        with self.lock:
            failed = {d: self.failures.pop((store_url, d), None) for d in digests}
        missing = {
            d: why or "its write did not happen (the worker restarted?)"
            for d, why in failed.items()
            if why is not None or not store.has_artifact(d)
        }
        try:
            if missing:
                store.write_unstored(cache_key, "; ".join(f"{d}: {w}" for d, w in missing.items()))
            else:
                store.write_manifest(cache_key, manifest)
        except Exception as exc:  # the store went away: the entry is lost, not the run
            logger.warning("kiln: cache entry %s was not written: %s", cache_key, exc)
        finally:
            store.clear_pending(cache_key)  # after the entry: a waiting run looks there first

    def flushed(self) -> Future[None]:
        return self.pool.submit(lambda: None)


def _lower_thread_priority() -> None:
    # Linux niceness is per thread: the writer gives way to the worker's tasks on a busy
    # machine instead of taking a core from the task that reads the value it writes.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


_writes: _WorkerWrites | None = None
_writes_lock = threading.Lock()


def _worker_writes() -> _WorkerWrites:
    global _writes
    with _writes_lock:
        if _writes is None:
            _writes = _WorkerWrites()
        return _writes


def should_defer(value: Any) -> bool:
    """Whether `value` is big enough to be stored after its task returned."""
    from dask.sizeof import sizeof

    try:
        return int(sizeof(value)) > DEFERRED_BYTES
    except Exception:  # sizeof of an odd object: store it the plain way
        return False


def store_later(store_url: str, value: Any, digest: str) -> None:
    """Worker side: write `value` (digest from `ArtifactStore.value_digest`) in the background."""
    _worker_writes().store_later(store_url, value, digest)


async def commit_when_stored(
    store_url: str, cache_key: str, manifest: Mapping[str, Any], digests: list[str]
) -> None:
    """Worker side, called through `Client.run(..., wait=False)` by the run's driver (Dask
    runs only coroutines without waiting): write the task's cache manifest once its artifacts
    are on disk. Returns at once; the writer thread does the rest."""
    _worker_writes().commit(store_url, cache_key, manifest, digests)


async def flush_store_writes() -> int:
    """Worker side, through `Client.run` before a cluster closes: wait for every write and
    manifest handed to this process. Returns how many writes were pending."""
    import asyncio

    writes = _writes
    if writes is None:
        return 0
    with writes.lock:
        pending = len(writes.pending)
    await asyncio.wrap_future(writes.flushed())
    return pending


# -- the driver's side: entries this process handed to workers ---------------------------------
_handed_out: dict[tuple[str, str], float] = {}  # (store root, cache key) -> wait until
_handed_lock = threading.Lock()


def commit_handed_out(store: ArtifactStore, cache_key: str, nbytes: int) -> None:
    with _handed_lock:
        _handed_out[(store.root, cache_key)] = (
            time.monotonic() + _COMMIT_WAIT_FLOOR_S + nbytes / _COMMIT_BYTES_PER_S
        )


def await_commit(store: ArtifactStore, cache_key: str) -> str | None:
    """Wait until the entry for `cache_key` that this process handed to a worker is written or
    known lost. Returns why it was not stored, else None. Immediate for any other key, and
    when the store no longer holds the entry's pending mark (the user cleared `.kiln/`)."""
    with _handed_lock:
        deadline = _handed_out.get((store.root, cache_key))
    if deadline is None:
        return None
    why: str | None = None
    for pause in itertools.chain((0.002, 0.005, 0.01, 0.02), itertools.repeat(0.05)):
        if store.has_manifest(cache_key):
            break
        why = store.take_unstored(cache_key)
        if why is not None or not store.is_pending(cache_key):
            break
        if time.monotonic() >= deadline:
            why = "its worker did not write it in time (the worker may have ended)"
            break
        time.sleep(pause)
    with _handed_lock:
        _handed_out.pop((store.root, cache_key), None)
    return why


def await_commits(store: ArtifactStore, cache_keys: Iterable[str]) -> dict[str, str]:
    """`await_commit` for each key; {key: why it was not stored} for those that were not."""
    lost = {key: await_commit(store, key) for key in cache_keys}
    return {key: why for key, why in lost.items() if why is not None}
