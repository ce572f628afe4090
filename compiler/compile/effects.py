"""Which objects a call may change: the table in `rules/effects.yaml`, applied to call sites.

The analysis records each call as written (`analysis.CallSite`); the compiler judges it here
once it knows which names are imported modules and which are functions of the notebook. The
default is sound: a method may change its receiver and a function every object passed to it,
unless the table says otherwise (see the table's header for its format and its rules).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from compiler.compile.analysis import CallSite, FunctionSummary

EFFECTS_FILE = Path(__file__).with_name("rules") / "effects.yaml"


@dataclass(frozen=True)
class EffectsTable:
    pure_methods: frozenset[str]
    view_methods: frozenset[str]
    mutating_methods: frozenset[str]
    returns_self: frozenset[str]
    mutating_method_args: Mapping[str, tuple[int, ...]]
    pure_modules: tuple[str, ...]
    pure_functions: frozenset[str]
    mutating_functions: Mapping[str, tuple[int, ...]]


@cache
def effects_table() -> EffectsTable:
    raw: dict[str, Any] = yaml.safe_load(EFFECTS_FILE.read_text(encoding="utf-8")) or {}

    def names(key: str) -> frozenset[str]:
        return frozenset(str(n) for n in raw.get(key) or [])

    def positions(key: str) -> dict[str, tuple[int, ...]]:
        return {str(k): tuple(int(p) for p in v or []) for k, v in (raw.get(key) or {}).items()}

    mutating = names("mutating_methods")
    return EffectsTable(
        # A name in both lists is ambiguous without types (`df.plot()` draws, `ax.plot()`
        # changes the axes): the sound reading wins.
        pure_methods=names("pure_methods") - mutating,
        view_methods=names("view_methods"),
        mutating_methods=mutating,
        returns_self=names("returns_self"),
        mutating_method_args=positions("mutating_method_args"),
        pure_modules=tuple(str(m) for m in raw.get("pure_modules") or []),
        pure_functions=names("pure_functions"),
        mutating_functions=positions("mutating_functions"),
    )


_BUILTINS = frozenset(dir(builtins))


def _pure_module(qualified: str, table: EffectsTable) -> bool:
    return any(qualified == m or qualified.startswith(m + ".") for m in table.pure_modules)


def call_effects(
    call: CallSite,
    imported: Mapping[str, str],
    function_of: Callable[[str], FunctionSummary | None],
    depth: int = 0,
) -> tuple[list[str], list[FunctionSummary]]:
    """(names the call may change in place, notebook functions it calls).

    `imported` maps a name bound by an import to what it imports (`np` -> `numpy`);
    `function_of(name)` is the notebook function a name is bound to, if any.
    """
    table = effects_table()
    changed: list[str] = []
    called: list[FunctionSummary] = []
    by_key = dict(call.args)
    out = by_key.get("out")
    if out is not None:
        changed.append(out)
    receiver = call.receiver
    if call.method and receiver is not None and receiver not in imported:
        # A method of an object in the namespace.
        method = call.method
        if call.inplace or method not in table.pure_methods and method not in table.view_methods:
            changed.append(receiver)
        for position in table.mutating_method_args.get(method, ()):
            if str(position) in by_key:
                changed.append(by_key[str(position)])
        return changed, called
    # A function: a builtin, a module's function or class, a notebook function.
    if not call.func:
        return changed, called
    head, rest = call.func[0], call.func[1:]
    if head in imported:
        qualified = ".".join((imported[head], *rest))
    else:
        qualified = ".".join(call.func)
    summary = function_of(head) if not rest and head not in imported else None
    if summary is not None:
        called.append(summary)
        for name in summary.mutates:
            if name in summary.params:
                slot = str(summary.params.index(name))
                if slot in by_key:
                    changed.append(by_key[slot])
                elif name in by_key:
                    changed.append(by_key[name])
            else:
                changed.append(name)
        if depth < 4:
            for inner in summary.calls:
                names, inner_called = call_effects(
                    _rebind(inner, summary.params, by_key), imported, function_of, depth + 1
                )
                changed += names
                called += inner_called
        return changed, called
    if qualified in table.mutating_functions:
        for position in table.mutating_functions[qualified]:
            if str(position) in by_key:
                changed.append(by_key[str(position)])
        return changed, called
    if qualified in table.pure_functions or _pure_module(qualified, table):
        return changed, called
    if not rest and head in _BUILTINS and head not in table.mutating_functions:
        # Builtin classes and functions not listed: none changes its arguments except those
        # listed under mutating_functions (setattr, next...).
        return changed, called
    # Unknown: it may change whatever it is given.
    changed += [name for key, name in call.args if key != "out"]
    return changed, called


def _rebind(call: CallSite, params: tuple[str, ...], by_key: Mapping[str, str]) -> CallSite:
    """A call in a function's body, with the function's parameters replaced by the names the
    caller passed (a parameter the caller passed nothing named for drops out)."""
    from compiler.compile.analysis import CallSite

    def actual(name: str | None) -> str | None:
        if name is None or name not in params:
            return name
        return by_key.get(str(params.index(name))) or by_key.get(name)

    args = tuple((k, a) for k, n in call.args if (a := actual(n)) is not None)
    func = call.func
    if func and func[0] in params:
        func = ()
    return CallSite(func, actual(call.receiver), call.method, args, call.inplace)
