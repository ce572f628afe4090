"""The tag vocabulary: plain cell tags are the single source of truth.

Kiln tags (DESIGN.md) and Kale's tags parse into one record per cell, so the rest of the
compiler never looks at a raw tag string.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

from compiler.compile.notebook import Cell
from compiler.model.validation import TASK_NAME_RE as TASK_NAME_RE
from compiler.model.validation import InvalidValue, check_positive, check_task_name

# nbformat forbids commas inside a tag, so lists are written as repeated tags
# (`after:a` `after:b`, `resources:cpu=2` `resources:memory=4GiB`) or with ';' (`after:a;b`).
# Commas are still read, for notebooks written by tools that skip validation.
_LIST_SEPARATORS = re.compile(r"[;,]")


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
METRICS = "metrics"  # names the pipeline's metrics; not a task (compiler/metrics.py)

_ROLE_TAGS = {
    "setup": SETUP,
    "imports": SETUP,  # Kale
    "functions": SETUP,  # Kale
    "parameters": PARAMETERS,  # papermill
    "pipeline-parameters": PARAMETERS,  # Kale
    "skip": SKIP,
    "metrics": METRICS,
    "pipeline-metrics": METRICS,  # Kale
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
# Read by compiler/metrics.py, which reports their problems with the cell.
_MONITOR_PREFIXES = ("check:", "warn:", "drift:")

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


# Digits only (no sign, no exponent, no nan/inf): the numbers a tag may hold. A length cap keeps
# float() from reading a 10,000-digit number as inf.
_NUMBER = r"([0-9]{1,15}(?:\.[0-9]{1,9})?|\.[0-9]{1,9})"
_MAX_RETRIES = 100


def parse_memory(text: str) -> int:
    m = re.fullmatch(r"\s*" + _NUMBER + r"\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read memory size {text!r} (examples: 512MiB, 4GiB, 2G)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return int(check_positive(size, f"memory {text.strip()!r}", integer=True))


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*" + _NUMBER + r"\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"cannot read duration {text!r} (examples: 90s, 30m, 2h)")
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    return check_positive(seconds, f"duration {text.strip()!r}")


def parse_cpu(text: str) -> float:
    text = text.strip()
    millicores = text.endswith("m")  # Kubernetes millicores, as Kale writes them
    m = re.fullmatch(_NUMBER, text[:-1] if millicores else text)
    if not m:
        raise ValueError(f"cpu must be a number (e.g. 2, 0.5 or 500m), not {text!r}")
    cpu = float(m.group(1)) / (1000 if millicores else 1)
    return check_positive(cpu, f"cpu {text!r}")


def parse_gpu(text: str) -> int:
    """A whole number of GPUs; 0 means none."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,4}", text):
        raise ValueError(f"gpu must be a whole number (e.g. 1), not {text!r}")
    return int(text)


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
            out["gpu"] = parse_gpu(value)
        else:
            raise ValueError(f"unknown resource {key!r} (known: cpu, memory, gpu)")
    return out


def _parse_kale_limit(spec: str) -> dict[str, float]:
    # Kale: limit:nvidia.com/gpu:1, limit:memory:4Gi, limit:cpu:500m
    key, _, value = spec.rpartition(":")
    key = key.strip().lower()
    if key.endswith("/gpu") or key == "gpu":
        return {"gpu": parse_gpu(value)}
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
    named_task: str | None = None  # from task:/step:/block:, to tell conflicting names

    def problem(tag: str, message: str, severity: str = "error") -> None:
        problems.append(TagProblem(tag, message, severity))

    for tag in cell.tags:
        low = tag.lower()
        try:
            if low in _ROLE_TAGS:
                if role is not None and role != _ROLE_TAGS[low]:
                    problem(tag, f"conflicting tags: the cell is already {role!r}; keep one")
                    continue
                role = _ROLE_TAGS[low]
                metrics = metrics or role == METRICS
            elif low.startswith(_MONITOR_PREFIXES):
                pass
            elif low.startswith(_TASK_PREFIXES):
                name = tag.split(":", 1)[1].strip()
                if not name and not low.startswith("task:"):
                    # Kale: a `block:` / `step:` tag without a name continues the step above,
                    # like an untagged cell.
                    continue
                try:
                    check_task_name(name)
                except InvalidValue as exc:
                    problem(tag, str(exc))
                    continue
                if named_task is not None and named_task != name:
                    problem(
                        tag,
                        f"conflicting tags: the cell is task {named_task!r} and task {name!r}; "
                        "keep one",
                    )
                    continue
                task = named_task = name
            elif low.startswith(_AFTER_PREFIXES):
                names = _LIST_SEPARATORS.split(tag.split(":", 1)[1])
                after.extend(n.strip() for n in names if n.strip())
            elif low.startswith("resources:"):
                resources.update(_parse_resources(tag.split(":", 1)[1]))
            elif low.startswith("limit:"):
                resources.update(_parse_kale_limit(tag.split(":", 1)[1]))
            elif low.startswith("retries:"):
                text = tag.split(":", 1)[1].strip()
                if not re.fullmatch(r"[0-9]{1,3}", text):
                    raise ValueError(f"retries must be a number (e.g. retries:2), not {text!r}")
                if int(text) > _MAX_RETRIES:
                    raise ValueError(f"retries takes a whole number from 0 to {_MAX_RETRIES}")
                retries = int(text)
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

    if role is not None and named_task is not None:
        problems.append(
            TagProblem(
                f"{role}",
                f"conflicting tags: a {role} cell cannot also be task {named_task!r}; keep one",
                "error",
            )
        )
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
