"""Functions a task receives read the task's namespace, as they read the kernel's.

A function defined in one task and called in another travels by value (cloudpickle), with a
private copy of the globals it referenced when it was pickled. In a notebook a function reads
its globals when it is called (late binding), and the compiler delivers those globals to the
calling task as inputs (`RATE` for `price()`), so each received notebook function is rebuilt
here around the task's own namespace. Cost: one function object per received function.
"""

from __future__ import annotations

import types
from typing import Any


def bind_to_namespace(ns: dict[str, Any], names: list[str] | None = None) -> None:
    """Rebuild the notebook functions among `names` (default: all of `ns`) so that their
    globals are `ns`. The old globals are not consulted: a global the compiler did not deliver
    is a NameError, never a stale value from the task that defined the function."""
    for name in list(ns) if names is None else names:
        value = ns.get(name)
        if not isinstance(value, types.FunctionType) or value.__globals__ is ns:
            continue
        if value.__module__ not in ("__main__", None):
            continue  # a library's function keeps its module
        if value.__name__ != name or value.__qualname__ != name:
            # Only a top-level `def name(...)` of the notebook: the compiler delivers its
            # globals where it is called. A lambda, a closure or a function stored under another
            # name keeps the globals it travelled with (the compiler read them where it was made).
            continue
        rebuilt = types.FunctionType(
            value.__code__, ns, value.__name__, value.__defaults__, value.__closure__
        )
        rebuilt.__kwdefaults__ = value.__kwdefaults__
        rebuilt.__qualname__ = value.__qualname__
        rebuilt.__doc__ = value.__doc__
        rebuilt.__dict__.update(value.__dict__)
        rebuilt.__module__ = value.__module__
        ns[name] = rebuilt
