"""Build small notebooks the way a user would save them from JupyterLab."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def make_notebook(
    path: Path, cells: list[tuple[str, list[str]] | str], owner: str | None = None
) -> Path:
    """cells: source strings (untagged code), (source, tags) pairs, or '# md: ...' markdown.
    `owner`: the notebook's production owner (metadata kiln.owner), which a schedule needs."""
    nb = new_notebook()
    if owner:
        nb.metadata["kiln"] = {"owner": owner}
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for i, cell in enumerate(cells):
        source, tags = (cell, []) if isinstance(cell, str) else cell
        if source.startswith("# md:"):
            new = new_markdown_cell(source[len("# md:") :].strip())
        else:
            new = new_code_cell(source)
        new["id"] = f"c{i}"
        if tags:
            new.metadata["tags"] = list(tags)
        nb.cells.append(new)
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
