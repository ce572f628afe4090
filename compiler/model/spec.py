"""Typed readers of `pipeline.json` (schema: model/schema/pipeline.schema.json).

The schema requires every field, so readers index instead of guessing defaults: a spec that
lacks one is refused once, here, with the field named (SpecError), rather than read as
"no retries" or "no setup" in whichever module happens to look.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A spec that is not what the schema promises; the message names the field."""


@dataclass(frozen=True)
class CellCode:
    cell_id: str
    cell_index: int
    source: str


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: str
    upstream: tuple[str, ...]
    inputs: Mapping[str, str]  # name read -> producing task
    outputs: tuple[str, ...]
    parameters: tuple[str, ...]
    cells: tuple[str, ...]
    code: tuple[CellCode, ...]
    setup: str
    resources: Mapping[str, Any]
    retries: int
    timeout: float | None
    cache: bool
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    imports: tuple[str, ...]
    metrics: tuple[str, ...] = ()  # names the metrics cell reads from this task (optional)

    @classmethod
    def from_dict(cls, task: Mapping[str, Any]) -> TaskSpec:
        name = task.get("name", "?")
        try:
            return cls(
                name=str(task["name"]),
                version=str(task["version"]),
                upstream=tuple(task["upstream"]),
                inputs=dict(task["inputs"]),
                outputs=tuple(task["outputs"]),
                parameters=tuple(task["parameters"]),
                cells=tuple(task["cells"]),
                code=tuple(
                    CellCode(str(c["cell_id"]), int(c["cell_index"]), str(c["source"]))
                    for c in task["code"]
                ),
                setup=str(task["setup"]),
                resources=dict(task["resources"]),
                retries=int(task["retries"]),
                timeout=None if task["timeout"] is None else float(task["timeout"]),
                cache=bool(task["cache"]),
                reads=tuple(task["datasets"]["reads"]),
                writes=tuple(task["datasets"]["writes"]),
                imports=tuple(task["imports"]),
                metrics=tuple(task.get("metrics") or ()),
            )
        except KeyError as missing:
            raise SpecError(f"task {name!r} of the spec has no field {missing}") from None
        except (TypeError, ValueError) as exc:
            raise SpecError(f"task {name!r} of the spec is malformed: {exc}") from None


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    version: str
    notebook_file: str
    notebook_digest: str
    parameters: Mapping[str, Any]  # name -> default (None for computed ones)
    parameters_source: str
    computed_parameters: tuple[str, ...]
    parameters_setup: str
    tasks: tuple[TaskSpec, ...]  # topological order
    raw: Mapping[str, Any]  # the JSON as read, for records that keep the whole spec

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> PipelineSpec:
        try:
            return cls(
                name=str(spec["name"]),
                version=str(spec["version"]),
                notebook_file=str(spec["notebook"]["file"]),
                notebook_digest=str(spec["notebook"]["digest"]),
                parameters=dict(spec["parameters"]),
                # Optional in the schema: absent when the notebook has no parameters cell.
                parameters_source=str(spec.get("parameters_source", "")),
                computed_parameters=tuple(spec.get("computed_parameters", ())),
                parameters_setup=str(spec.get("parameters_setup", "")),
                tasks=tuple(TaskSpec.from_dict(t) for t in spec["tasks"]),
                raw=spec,
            )
        except KeyError as missing:
            raise SpecError(f"the spec has no field {missing}") from None

    @functools.cached_property
    def _by_name(self) -> dict[str, TaskSpec]:
        return {task.name: task for task in self.tasks}

    def task(self, name: str) -> TaskSpec:
        # A dict, not a scan: the driver looks a task up per submit (500 tasks: 0.6 s of scans).
        return self._by_name[name]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]
