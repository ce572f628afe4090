"""Pipeline parameters: defaults from the spec, overrides from the caller.

`kiln run -p NAME VALUE` gives strings; they are typed the way papermill users expect: like the
parameter's default when that is an int, float, bool or str, otherwise read as YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _unknown_parameter(name: str, known: Mapping[str, Any]) -> ValueError:
    names = ", ".join(sorted(known)) or "none"
    return ValueError(f"unknown parameter {name!r} (this pipeline's parameters: {names})")


def coerce_value(name: str, default: Any, text: str) -> Any:
    """Type one command-line string like the parameter's default."""
    # bool before int: bool is a subclass of int.
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"parameter {name!r} is a bool; cannot read {text!r} as true/false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"parameter {name!r} is an int; cannot read {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"parameter {name!r} is a float; cannot read {text!r}") from None
    if isinstance(default, str):
        return text
    import yaml  # here: most runs pass no parameter that needs it, and it costs start-up time

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"parameter {name!r}: cannot read {text!r} as YAML: {exc}") from None


def coerce_parameters(spec: Mapping[str, Any], raw: Mapping[str, str]) -> dict[str, Any]:
    """Type `-p NAME VALUE` strings; an unknown name is a ValueError naming the known ones."""
    defaults = spec.get("parameters") or {}
    typed: dict[str, Any] = {}
    for name, text in raw.items():
        if name not in defaults:
            raise _unknown_parameter(name, defaults)
        typed[name] = coerce_value(name, defaults[name], text)
    return typed


def resolve_parameters(
    spec: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The run's parameter values: the spec's defaults with the (already typed) overrides."""
    defaults = dict(spec.get("parameters") or {})
    for name in overrides or {}:
        if name not in defaults:
            raise _unknown_parameter(name, defaults)
    return {**defaults, **(overrides or {})}


def check_parameter_types(spec: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Typed values (a REST body) must have their default's type, as `-p` text is read: an int
    for an int, a number for a float, a bool for a bool, text for text; a parameter whose
    default is None, a list or a dict takes any JSON value. ValueError names the parameter."""
    defaults = spec.get("parameters") or {}
    for name, value in values.items():
        if name not in defaults:
            continue
        default = defaults[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ValueError(
                f"parameter {name!r} is a {type(default).__name__}; got {value!r} "
                f"({type(value).__name__})"
            )
