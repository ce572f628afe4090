"""Load and validate a notebook; expose its cells as immutable records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.compile.notebook_checks import MAX_JSON_DEPTH, check_notebook_json, json_place
from compiler.model import hashing
from compiler.model.diagnostics import NotebookLoadError
from compiler.model.validation import MAX_NAME_LENGTH


@dataclass(frozen=True)
class Cell:
    index: int
    id: str
    cell_type: str
    source: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Notebook:
    name: str
    path: str | None
    digest: str
    cells: tuple[Cell, ...]
    node: Any  # the nbformat NotebookNode, kept for writing output notebooks


def read_notebook_text(path: str | Path) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotebookLoadError(f"{p}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookLoadError(f"{p}: cannot be read: {exc}") from exc


def parse_notebook_text(text: str, label: str = "<notebook>") -> Any:
    # Imported here: reading a notebook's text (the compile cache) must not pay for nbformat.
    import nbformat

    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookLoadError(
            f"{label}: not a notebook: invalid JSON at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise NotebookLoadError(
            f"{label}: not a notebook: JSON nested more than {MAX_JSON_DEPTH} levels deep"
        ) from exc
    except ValueError as exc:  # an integer over Python's 4,300-digit limit, and kin
        raise NotebookLoadError(f"{label}: not a notebook: {exc}") from exc
    if not isinstance(raw, dict) or ("cells" not in raw and "worksheets" not in raw):
        # (nbformat 3 keeps its cells in "worksheets"; they are converted below.)
        raise NotebookLoadError(f"{label}: not a notebook: no 'cells' list")
    check_notebook_json(raw, label)
    try:
        node = nbformat.from_dict(raw)
        if int(node.get("nbformat", 4)) != 4:
            node = nbformat.convert(node, 4)
            for cell in node.cells:  # the converter makes up random ids
                cell.pop("id", None)
        if any("id" not in cell for cell in node.get("cells", [])):
            # Notebooks from before nbformat 4.5 lack cell ids. nbformat would add random ones;
            # ids from the position keep the spec, its digest and the lineage the same on every
            # read of the same file.
            taken = {cell["id"] for cell in node.cells if "id" in cell}
            for index, cell in enumerate(node.cells):
                if "id" not in cell:
                    cell["id"] = next(
                        candidate
                        for candidate in (f"cell-{index}", *(f"cell-{index}-{n}" for n in range(9)))
                        if candidate not in taken
                    )
                    taken.add(cell["id"])
            node["nbformat_minor"] = max(int(node.get("nbformat_minor", 0)), 5)
        _deduplicate_cell_ids(node.get("cells", []))
        nbformat.validate(node)
    except nbformat.ValidationError as exc:
        where = json_place(raw, list(exc.absolute_path))
        raise NotebookLoadError(f"{label}: not a valid notebook: {where}: {exc.message}") from exc
    except Exception as exc:  # nbformat raises assorted errors for malformed input
        raise NotebookLoadError(
            f"{label}: not a valid notebook: {type(exc).__name__}: {exc}".rstrip(": ")
        ) from exc
    return node


def _deduplicate_cell_ids(cells: Any) -> None:
    """A repeated cell id (a copied cell) becomes 'ID-INDEX': nbformat's repair gives random
    ids, which changed the spec digest (and missed the cache) on every compile."""
    taken = {cell.get("id") for cell in cells}
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        cell_id = cell.get("id")
        if cell_id is None:
            continue
        if cell_id in seen:
            candidate = f"{cell_id[:56]}-{index}"
            while candidate in taken:
                candidate += "x"
            cell["id"] = candidate
            taken.add(candidate)
        seen.add(cell["id"])


def notebook_from_node(node: Any, name: str, path: str | None = None) -> Notebook:
    cells = []
    for index, cell in enumerate(node.cells):
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        tags = tuple(str(t).strip() for t in cell.get("metadata", {}).get("tags", []) or [])
        cells.append(
            Cell(
                index=index,
                id=str(cell.get("id") or f"cell-{index}"),
                cell_type=cell.cell_type,
                source=source,
                tags=tags,
            )
        )
    return Notebook(
        name=name, path=path, digest=hashing.digest(node), cells=tuple(cells), node=node
    )


def load_notebook(path: str | Path, text: str | None = None) -> Notebook:
    """The notebook at `path`; `text` is its content when the caller has already read it."""
    p = Path(path)
    node = parse_notebook_text(read_notebook_text(p) if text is None else text, str(p))
    return notebook_from_node(node, name=pipeline_name_for(p), path=str(p))


def pipeline_name_for(path: Path) -> str:
    stem = path.stem
    cleaned = "".join(ch if (ch.isalnum() or ch in "-_") else "-" for ch in stem).strip("-")
    # The lineage column is VARCHAR(200); MAX_NAME_LENGTH keeps room for what Kiln appends.
    return cleaned[:MAX_NAME_LENGTH].rstrip("-") or "pipeline"
