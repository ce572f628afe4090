"""Cheap digests of values in a task's namespace, to notice a received value changed in place.

A task that changes an input the compiler did not see it change (an unknown method, a library
call) would hand the old value on. The worker digests each received value before and after the
task; a different digest means the object changed. NumPy arrays and pandas objects are digested
from their buffers (xxhash, several GB/s), everything else from its pickle with out-of-band
buffers hashed the same way; a value that cannot be pickled has no digest and is not checked.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Mapping
from typing import Any

import xxhash


def value_digest(value: Any) -> str | None:
    """A digest of the value's content; None when it cannot be computed cheaply and safely."""
    h = xxhash.xxh3_128()
    try:
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(value, numpy.ndarray) and value.dtype != object:
            h.update(f"ndarray:{value.dtype.str}:{value.shape}".encode())
            h.update(memoryview(numpy.ascontiguousarray(value)).cast("B"))
            return h.hexdigest()
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(value, pandas.DataFrame | pandas.Series):
            # hash_pandas_object reads the values and the index, vectorized; names and dtypes
            # are added since it ignores them.
            rows = pandas.util.hash_pandas_object(value, index=True).to_numpy()
            h.update(memoryview(rows).cast("B"))
            h.update(repr(getattr(value, "dtypes", value.dtype)).encode())
            h.update(
                repr(list(value.columns) if hasattr(value, "columns") else value.name).encode()
            )
            return h.hexdigest()

        def buffer(b: pickle.PickleBuffer) -> bool:
            h.update(b.raw())
            return False  # hashed here, left out of the pickle

        h.update(pickle.dumps(value, protocol=5, buffer_callback=buffer))
        return h.hexdigest()
    except Exception:  # unpicklable (locks, generators, open files): not checked
        return None


def content_defined(value: Any) -> bool:
    """Whether `value_digest` depends on the value's content alone, so a copy in another
    process digests the same (a pickle does not: a set of strings pickles in hash order,
    which differs between processes)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return bool(value.dtype != object)
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame | pandas.Series)


def digests(values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        digest = value_digest(value)
        if digest is not None:
            out[name] = digest
    return out


# A value above this size is digested once after the task's last cell instead of after each
# cell: a 500 MB array costs ~23 ms per pass (xxh3 runs at memory bandwidth, ~21 GB/s here), and
# a five-cell task would pay six passes. The price: a change is then named by the task's
# cells, not by the one cell that made it.
PER_CELL_LIMIT = 16 * 2**20


class InputCheck:
    """Notices received values a task changes in place: each value is digested as it arrives
    and again after cells; `seconds` is what that cost (the run benchmark prints it).

    An array or frame whose producer's digest is known (`expected`, from the producer's
    record) is not digested on arrival: that digest is its content, here as there, which
    halves the cost for the values where it matters. Its arrival digest is then unknown, and
    state.py treats such a value as possibly changed before it arrived when another task is
    known to have changed it (it reruns the reader from the store)."""

    def __init__(self, values: dict[str, Any], expected: Mapping[str, str] | None = None):
        from dask.sizeof import sizeof

        started = time.perf_counter()
        self.values = values
        known = {
            name: digest
            for name, digest in (expected or {}).items()
            if digest and name in values and content_defined(values[name])
        }
        self.arrival = digests({n: v for n, v in values.items() if n not in known})
        self.before = {**self.arrival, **known}
        self.big = set()
        for name in self.before:
            try:
                if int(sizeof(values[name])) > PER_CELL_LIMIT:
                    self.big.add(name)
            except Exception:
                continue
        self.first_cell: int | None = None
        self.seconds = time.perf_counter() - started

    def after_cell(self, cell: dict[str, Any], *, last: bool) -> list[dict[str, Any]]:
        """Values changed since the last check, each reported once (at the cell after which it
        was first seen changed; a big value at the task's cells up to this one)."""
        started = time.perf_counter()
        if self.first_cell is None:
            self.first_cell = cell["cell_index"]
        found = []
        for name, digest in list(self.before.items()):
            if name in self.big and not last:
                continue
            if value_digest(self.values[name]) != digest:
                change: dict[str, Any] = {
                    "name": name,
                    "cell_index": cell["cell_index"],
                    "cell_id": cell["cell_id"],
                }
                if name in self.big and self.first_cell != cell["cell_index"]:
                    change["first_cell_index"] = self.first_cell
                found.append(change)
                del self.before[name]
        self.seconds += time.perf_counter() - started
        return found
