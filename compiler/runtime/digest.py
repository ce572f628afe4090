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


def digests(values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        digest = value_digest(value)
        if digest is not None:
            out[name] = digest
    return out
