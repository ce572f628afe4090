"""The one compile entry point that the CLI, the Jupyter server and the widget call."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.compile.dag import Pipeline, build_pipeline
from compiler.compile.emit import pipeline_spec, python_module
from compiler.compile.notebook import (
    load_notebook,
    notebook_from_node,
    parse_notebook_text,
    pipeline_name_for,
)
from compiler.model.diagnostics import Diagnostic, has_errors


@dataclass
class CompileResult:
    pipeline: Pipeline
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)

    @property
    def spec(self) -> dict[str, Any] | None:
        """The pipeline as plain data; None when there are errors (nothing half-valid leaks)."""
        return pipeline_spec(self.pipeline) if self.ok else None

    def module_source(self) -> str:
        return python_module(self.pipeline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "spec": self.spec,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Compiling allocates many small acyclic records; the cyclic collector's repeated passes
    over them made compile time grow faster than the notebook. Reference counting frees them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_notebook(path: str | Path, text: str | None = None) -> CompileResult:
    """Compile a notebook file (`text`: its content, when already read). Raises
    NotebookLoadError when it is not a readable notebook."""
    with _cyclic_gc_paused():
        pipeline = build_pipeline(load_notebook(path, text))
    return CompileResult(pipeline, pipeline.diagnostics)


def compile_notebook_json(
    notebook: dict[str, Any] | str, name: str, path: str | None = None
) -> CompileResult:
    """Compile notebook content (a dict or JSON text) that may not be saved yet."""
    import json

    text = notebook if isinstance(notebook, str) else json.dumps(notebook)
    node = parse_notebook_text(text, name)
    stem = pipeline_name_for(Path(name))
    with _cyclic_gc_paused():
        pipeline = build_pipeline(notebook_from_node(node, stem, path or name))
    return CompileResult(pipeline, pipeline.diagnostics)
