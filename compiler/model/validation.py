"""One validation of the names, numbers, digests and schedule fields that enter Kiln.

Every place where outside data enters (cell tags, a notebook's file name, a cache manifest, a
`kiln schedule add`, a REST body) checks it here (schedule names: model/names.py), so a value
that passes is safe everywhere it goes afterwards: in a store path, a Dask key, a PostgreSQL
column, the JSON Schema of `pipeline.json`. Each check raises `InvalidValue` (a ValueError)
whose message says what to fix.

This module imports nothing of Kiln's: any layer may use it (it is part of model/).
"""

from __future__ import annotations

import math
import re
from typing import Any

# The lineage columns for task, pipeline and schedule names are VARCHAR(200) (PostgreSQL refuses
# longer values, SQLite does not check); names also become Dask keys, file names of output
# notebooks and URL segments. 100 leaves room for the suffixes Kiln adds.
MAX_NAME_LENGTH = 100

TASK_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
# Artifacts are named by the xxh3-128 of their bytes (32 hex digits; stores written before that
# name them by sha256, 64); cache keys are sha256 digests.
DIGEST_RE = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$")


class InvalidValue(ValueError):
    """A value from outside Kiln that cannot be used; the message says what to fix."""


def check_task_name(name: str) -> str:
    if not isinstance(name, str) or not TASK_NAME_RE.match(name):
        raise InvalidValue(
            f"task name {name!r} must start with a letter or _ and contain only letters, "
            "digits, _ and -"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidValue(
            f"task name {name[:20]!r}... is {len(name)} characters; at most {MAX_NAME_LENGTH}"
        )
    return name


def task_name_from(pipeline_name: str) -> str:
    """The task name of an untagged notebook, made from its pipeline name: characters a task
    name cannot hold become '_', a leading digit gets a '_' ('1-analysis' -> '_1-analysis')."""
    name = "".join(
        ch if (ch.isascii() and (ch.isalnum() or ch in "-_")) else "_" for ch in pipeline_name
    )
    if not name[:1].isalpha() and name[:1] != "_":
        name = "_" + name
    return name[:MAX_NAME_LENGTH]


def check_positive(value: float, what: str, *, integer: bool = False) -> float:
    """A finite number above zero (cpu, memory, gpu, timeout): NaN, inf, 0 and negatives have
    no meaning for Dask and fail the spec's JSON Schema."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidValue(f"{what} must be a finite number above 0, got {value!r}")
    if integer and value != int(value):
        raise InvalidValue(f"{what} must be a whole number, got {value!r}")
    return value


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and DIGEST_RE.match(value) is not None


def check_digest(value: Any) -> str:
    """A hex digest (xxh3-128 or sha256), checked before any store path is built from it (a
    manifest is data: '../../victim' must never become a path)."""
    if not is_digest(value):
        raise InvalidValue(f"not a content digest: {str(value)[:80]!r}")
    return str(value)


def check_timezone(name: str) -> str:
    from zoneinfo import ZoneInfo

    if not isinstance(name, str) or not name or len(name) > 64:
        raise InvalidValue(f"unknown time zone {name!r} (e.g. UTC, Europe/Paris)")
    try:
        ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError, IsADirectoryError ('Europe')
        raise InvalidValue(f"unknown time zone {name!r} (e.g. UTC, Europe/Paris)") from exc
    return name


def check_cron(expression: str) -> str:
    """A 5-field cron expression (or 6 with seconds last) that is due at least once: croniter
    accepts '0 0 31 2 *' and then fails on every look-up of the next time."""
    import datetime as dt

    from croniter import croniter  # imported when used: every `kiln` command loads this module

    if not isinstance(expression, str) or len(expression) > 200:
        raise InvalidValue(f"invalid cron expression {str(expression)[:40]!r}")
    expression = " ".join(expression.split())
    fields = expression.split(" ")
    if len(fields) not in (5, 6) or not croniter.is_valid(expression):
        raise InvalidValue(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour day-of-month "
            "month day-of-week, e.g. '0 6 * * *') or 6 with seconds last"
        )
    try:
        # croniter searches a bounded number of years and raises when no time matches.
        croniter(expression, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except Exception as exc:  # CroniterBadDateError and kin
        raise InvalidValue(
            f"cron expression {expression!r} is never due (no date matches it)"
        ) from exc
    return expression


def finite_or_text(value: Any) -> Any:
    """`value` with every NaN/inf float replaced by the text JSON (and PostgreSQL's json type)
    accepts: 'NaN', 'Infinity', '-Infinity'. SQLite's JSON took the bare tokens, PostgreSQL
    refused the whole run's lineage."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: finite_or_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_text(v) for v in value]
    return value


def check_json_depth(value: Any, limit: int, what: str) -> None:
    """Raise InvalidValue when `value` (parsed JSON) nests deeper than `limit`; walked without
    recursion, since deep input is what this refuses (json, nbformat and the compiler recurse)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise InvalidValue(f"{what} is nested more than {limit} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
