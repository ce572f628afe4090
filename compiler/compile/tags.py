"""The tag vocabulary: plain cell tags are the single source of truth.

Kiln tags (DESIGN.md) and Kale's tags parse into one record per cell, so the rest of the
compiler never looks at a raw tag string.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from compiler.compile.notebook import Cell

# nbformat forbids commas inside a tag, so lists are written as repeated tags
# (`after:a` `after:b`, `resources:cpu=2` `resources:memory=4GiB`) or with ';' (`after:a;b`).
# Commas are still read, for notebooks written by tools that skip validation.
_LIST_SEPARATORS = re.compile(r"[;,]")
TASK_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def python_name(task_name: str) -> str:
    """The identifier a task is known by in generated code and graphs ('a-b' -> 'a_b'); two
    tasks with one python_name are duplicates."""
    name = re.sub(r"\W", "_", task_name)
    if keyword.iskeyword(name) or name[:1].isdigit():
        name = "_" + name
    return name


# Roles a cell can have besides "task body".
SETUP = "setup"
PARAMETERS = "parameters"
SKIP = "skip"

_ROLE_TAGS = {
    "setup": SETUP,
    "imports": SETUP,  # Kale
    "functions": SETUP,  # Kale
    "parameters": PARAMETERS,  # papermill
    "pipeline-parameters": PARAMETERS,  # Kale
    "skip": SKIP,
}
_TASK_PREFIXES = ("task:", "step:", "block:")  # block: is Kale's older spelling of step:
_AFTER_PREFIXES = ("after:", "prev:")
# Tags other tools put on cells; known, so not worth a warning.
_FOREIGN_TAGS = {
    "injected-parameters",
    "hide-input",
    "hide-output",
    "remove-cell",
    "raises-exception",
}
_FOREIGN_PREFIXES = ("annotation:", "label:")

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class TagProblem:
    tag: str
    message: str
    severity: str  # "error" | "warning"


@dataclass(frozen=True)
class CellTags:
    task: str | None = None
    role: str | None = None  # SETUP | PARAMETERS | SKIP | None
    after: tuple[str, ...] = ()
    resources: tuple[tuple[str, float], ...] = ()
    retries: int | None = None
    timeout: float | None = None
    cache: bool | None = None
    metrics: bool = False
    problems: tuple[TagProblem, ...] = field(default=())


def parse_memory(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read memory size {text!r} (examples: 512MiB, 4GiB, 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"cannot read duration {text!r} (examples: 90s, 30m, 2h)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def _number(text: str, kind: type[float] | type[int], what: str, examples: str) -> Any:
    """A number in a tag; a user's message (not Python's) when it is not one."""
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(
            f"{what} must be a number (e.g. {examples}), not {text.strip()!r}"
        ) from None


def parse_cpu(text: str) -> float:
    text = text.strip()
    if text.endswith("m"):  # Kubernetes millicores, as Kale writes them
        return float(_number(text[:-1], float, "cpu", "2, 0.5 or 500m")) / 1000
    return float(_number(text, float, "cpu", "2, 0.5 or 500m"))


def _parse_resources(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in _LIST_SEPARATORS.split(spec))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"expected key=value, got {part!r}")
        if key == "cpu":
            out["cpu"] = parse_cpu(value)
        elif key in ("memory", "mem"):
            out["memory"] = parse_memory(value)
        elif key == "gpu":
            out["gpu"] = _number(value, int, "gpu", "1")
        else:
            raise ValueError(f"unknown resource {key!r} (known: cpu, memory, gpu)")
    return out


def _parse_kale_limit(spec: str) -> dict[str, float]:
    # Kale: limit:nvidia.com/gpu:1, limit:memory:4Gi, limit:cpu:500m
    key, _, value = spec.rpartition(":")
    key = key.strip().lower()
    if key.endswith("/gpu") or key == "gpu":
        return {"gpu": _number(value, int, "gpu", "1")}
    if key == "memory":
        return {"memory": parse_memory(value)}
    if key == "cpu":
        return {"cpu": parse_cpu(value)}
    raise ValueError(f"unknown limit {key!r}")


def parse_cell_tags(cell: Cell) -> CellTags:
    task: str | None = None
    role: str | None = None
    after: list[str] = []
    resources: dict[str, float] = {}
    retries: int | None = None
    timeout: float | None = None
    cache: bool | None = None
    metrics = False
    problems: list[TagProblem] = []

    def problem(tag: str, message: str, severity: str = "error") -> None:
        problems.append(TagProblem(tag, message, severity))

    for tag in cell.tags:
        low = tag.lower()
        try:
            if low in _ROLE_TAGS:
                role = _ROLE_TAGS[low]
            elif low == "pipeline-metrics":
                # Kale's metrics cell: a final task that reports the pipeline's metrics.
                metrics = True
                task = task or "pipeline-metrics"
            elif low.startswith(_TASK_PREFIXES):
                name = tag.split(":", 1)[1].strip()
                if not TASK_NAME_RE.match(name):
                    problem(
                        tag,
                        f"task name {name!r} must start with a letter or _ and "
                        "contain only letters, digits, _ and -",
                    )
                else:
                    task = name
            elif low.startswith(_AFTER_PREFIXES):
                names = _LIST_SEPARATORS.split(tag.split(":", 1)[1])
                after.extend(n.strip() for n in names if n.strip())
            elif low.startswith("resources:"):
                resources.update(_parse_resources(tag.split(":", 1)[1]))
            elif low.startswith("limit:"):
                resources.update(_parse_kale_limit(tag.split(":", 1)[1]))
            elif low.startswith("retries:"):
                retries = _number(tag.split(":", 1)[1], int, "retries", "retries:2")
                if retries < 0:
                    raise ValueError("retries must be 0 or more")
            elif low.startswith("timeout:"):
                timeout = parse_duration(tag.split(":", 1)[1])
            elif low.startswith("cache:"):
                value = low.split(":", 1)[1].strip()
                if value not in ("on", "off", "true", "false"):
                    raise ValueError("cache takes on or off")
                cache = value in ("on", "true")
            elif low in _FOREIGN_TAGS or low.startswith(_FOREIGN_PREFIXES):
                pass
            else:
                problem(tag, f"unknown tag {tag!r}", "warning")
        except ValueError as exc:
            problem(tag, f"bad tag {tag!r}: {exc}")

    return CellTags(
        task=task,
        role=role,
        after=tuple(after),
        resources=tuple(sorted(resources.items())),
        retries=retries,
        timeout=timeout,
        cache=cache,
        metrics=metrics,
        problems=tuple(problems),
    )
