"""A notebook's owner, team and budget: notebook metadata `kiln.owner`, `kiln.team`,
`kiln.budget`. The compiler copies them into the spec (emit.production_metadata), so every
pipeline version and run records who answered for it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from compiler.model.costs import parse_budget


class OwnerError(ValueError):
    """Bad input for an owner or budget: the message says what to fix."""


def read_production(notebook: str | Path) -> dict[str, Any]:
    """{"owner": ..., "team": ..., "budget": ...} from the notebook's metadata (missing: None)."""
    path = Path(notebook)
    try:
        node = nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise OwnerError(f"{notebook}: no such notebook") from None
    except Exception as exc:
        raise OwnerError(f"{notebook}: not a readable notebook: {exc}") from None
    kiln = dict(node.metadata.get("kiln") or {})
    return {key: kiln.get(key) or None for key in ("owner", "team", "budget")}


def _update_metadata(notebook: str | Path, values: dict[str, Any]) -> None:
    """Write `values` into metadata.kiln (None removes a key), atomically: a temporary file
    beside the notebook renamed over it, so JupyterLab or a reader never sees half a file."""
    path = Path(notebook)
    try:
        node = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    except FileNotFoundError:
        raise OwnerError(f"{notebook}: no such notebook") from None
    kiln = dict(node.metadata.get("kiln") or {})
    for key, value in values.items():
        if value is None:
            kiln.pop(key, None)
        else:
            kiln[key] = value
    node.metadata["kiln"] = kiln
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            nbformat.write(node, handle)
        os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def set_owner(notebook: str | Path, name: str, team: str | None = None) -> dict[str, Any]:
    name = (name or "").strip()
    if not name:
        raise OwnerError(
            "an owner needs a name (a person or an on-call alias, e.g. 'ana@example.com')"
        )
    values: dict[str, Any] = {"owner": name}
    if team is not None:
        values["team"] = team.strip() or None
    _update_metadata(notebook, values)
    return read_production(notebook)


def set_budget(notebook: str | Path, budget: str | None) -> dict[str, Any]:
    if budget:
        try:
            parse_budget(budget)
        except ValueError as exc:
            raise OwnerError(str(exc)) from None
    _update_metadata(notebook, {"budget": budget or None})
    return read_production(notebook)
