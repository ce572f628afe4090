"""Checks on a notebook's raw JSON before nbformat (or anything else) walks it.

nbformat, json.dumps and the compiler all recurse over the document: JSON nested 1,000 deep
anywhere (a cell's metadata, an output) raised RecursionError, and a lone surrogate ('\\ud800',
valid JSON) raised UnicodeEncodeError when the notebook was hashed. Both are refused here with
the place: cell index and id, and the field.
"""

from __future__ import annotations

from typing import Any

from compiler.model.diagnostics import NotebookLoadError

# Real notebooks nest a few levels (widget state and plotly outputs ~15); 64 is far above that
# and far below Python's recursion limit.
MAX_JSON_DEPTH = 64
KNOWN_CELL_TYPES = ("code", "markdown", "raw")


def json_place(raw: Any, path: list[Any]) -> str:
    """'cell 3 (id 'a1'), field metadata.tags[0]' for a JSON path into a notebook."""
    if len(path) >= 2 and path[0] == "cells" and isinstance(path[1], int):
        index = path[1]
        cells = raw.get("cells") if isinstance(raw, dict) else None
        cell = cells[index] if isinstance(cells, list) and 0 <= index < len(cells) else None
        cell_id = cell.get("id") if isinstance(cell, dict) else None
        where = f"cell {index}" + (f" (id {str(cell_id)[:64]})" if cell_id is not None else "")
        field = _field(path[2:])
        return f"{where}, field {field}" if field else where
    return f"field {_field(path)}" if path else "the notebook's top level"


def _field(path: list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_notebook_json(raw: dict[str, Any], label: str) -> None:
    """Raise NotebookLoadError for JSON too deep to walk, text UTF-8 cannot hold, or cells whose
    shape nbformat would report without saying which cell."""
    stack: list[tuple[Any, list[Any]]] = [(raw, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise NotebookLoadError(
                f"{label}: not a valid notebook: {json_place(raw, path[:3])}: JSON nested more "
                f"than {MAX_JSON_DEPTH} levels deep"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(raw, key, path, label)
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(raw, value, path, label)
    cells = raw.get("cells", [])
    if "cells" in raw and not isinstance(cells, list):
        raise NotebookLoadError(f"{label}: not a valid notebook: field cells: not a list")
    for index, cell in enumerate(cells):
        place = json_place(raw, ["cells", index])
        if not isinstance(cell, dict):
            raise NotebookLoadError(f"{label}: not a valid notebook: {place}: not a JSON object")
        if cell.get("cell_type") not in KNOWN_CELL_TYPES:
            raise NotebookLoadError(
                f"{label}: not a valid notebook: {place}, field cell_type: "
                f"{str(cell.get('cell_type'))[:40]!r} is not one of {', '.join(KNOWN_CELL_TYPES)}"
            )
        source = cell.get("source", "")
        if not (
            isinstance(source, str)
            or (isinstance(source, list) and all(isinstance(s, str) for s in source))
        ):
            raise NotebookLoadError(
                f"{label}: not a valid notebook: {place}, field source: not text or a list of text"
            )
        if "id" in cell and not isinstance(cell["id"], str):
            raise NotebookLoadError(f"{label}: not a valid notebook: {place}, field id: not text")
        metadata = cell.get("metadata", {})
        if not isinstance(metadata, dict):
            raise NotebookLoadError(
                f"{label}: not a valid notebook: {place}, field metadata: not a JSON object"
            )
        tags = metadata.get("tags", [])
        if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            raise NotebookLoadError(
                f"{label}: not a valid notebook: {place}, field metadata.tags: not a list of text"
            )


def _check_text(raw: Any, text: Any, path: list[Any], label: str) -> None:
    if not isinstance(text, str):
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise NotebookLoadError(
            f"{label}: not a valid notebook: {json_place(raw, path)}: holds a lone surrogate "
            f"U+{ord(bad):04X}, which UTF-8 cannot store (use a real character)"
        ) from None
