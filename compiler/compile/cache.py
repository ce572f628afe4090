"""Compiled specs kept by content, so `kiln run` of an unchanged notebook skips the analysis.

Compiling is a pure function of the notebook's bytes, its path (the pipeline's name and the
literal file paths it finds) and the compiler's own source: the cache key digests all three, so
an edited notebook or an upgraded Kiln compiles afresh. Only successful compiles are kept (a
notebook with errors must show them every time) and a damaged or unreadable entry is ignored.
This module imports nothing heavy: a cache hit must not pay for nbformat, IPython or ast-grep.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from compiler.model.diagnostics import Diagnostic

CACHE_FOLDER = Path(".kiln") / "compiled"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# What compiling reads: the compile side and the model it emits (spec schema, diagnostics).
# Editing the runtime, lineage or a command keeps every cached spec.
_COMPILE_SOURCES = ("compile", "model")


@functools.lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """A digest of every source and rule file the compiler reads, and the Python version (the
    `ast` module it parses with)."""
    digest = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    for folder in _COMPILE_SOURCES:
        for path in sorted((_PACKAGE_ROOT / folder).rglob("*")):
            if not path.is_file() or path.suffix == ".pyc":
                continue
            relative = path.relative_to(_PACKAGE_ROOT)
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_entry_path(notebook: Path, content: bytes) -> Path:
    """`.kiln/compiled/<path digest>-<content digest>.json` beside the notebook."""
    resolved = notebook.resolve()
    by_path = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    by_content = hashlib.sha256(content + compiler_fingerprint().encode()).hexdigest()[:32]
    return resolved.parent / CACHE_FOLDER / f"{by_path}-{by_content}.json"


def read_entry(entry: Path) -> tuple[dict[str, Any], list[Diagnostic]] | None:
    try:
        data = json.loads(entry.read_text(encoding="utf-8"))
        spec = data["spec"]
        diagnostics = [Diagnostic(**d) for d in data["diagnostics"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(spec, dict):
        return None
    return spec, diagnostics


def write_entry(entry: Path, spec: dict[str, Any], diagnostics: list[Diagnostic]) -> None:
    """Keep one entry per notebook (older ones are removed); written to a temporary file and
    renamed. A folder we cannot write to only means no cache."""
    text = json.dumps({"spec": spec, "diagnostics": [d.to_dict() for d in diagnostics]})
    tmp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, entry)
        prefix = entry.name.split("-", 1)[0] + "-"
        for old in entry.parent.glob(prefix + "*.json"):
            if old != entry:
                old.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def compiled_spec(path: str | Path) -> tuple[dict[str, Any] | None, list[Diagnostic]]:
    """The notebook's spec (None when it has errors) and diagnostics, compiled or cached.
    Raises NotebookLoadError when the file is not a readable notebook."""
    from compiler.compile.notebook import read_notebook_text

    notebook = Path(path)
    text = read_notebook_text(notebook)
    entry = cache_entry_path(notebook, text.encode("utf-8"))
    cached = read_entry(entry)
    if cached is not None:
        return cached
    from compiler.compile.api import compile_notebook

    result = compile_notebook(notebook, text)  # the same text the key was made from
    spec = result.spec
    if spec is not None:
        write_entry(entry, spec, result.diagnostics)
    return spec, result.diagnostics
