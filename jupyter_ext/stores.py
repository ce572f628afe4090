"""Lineage stores the server reads and writes, and output notebooks made openable in JupyterLab.

Which database a notebook's lineage and schedules live in is the library's rule
(`compiler.lineage.resolve_url`): the URL the client names (Kiln's `lineageUrl` setting), else
$KILN_LINEAGE_DB, else `.kiln/lineage.db` beside the notebook. The server keeps one open store
per URL (opening one runs a schema check) and never creates a database just to answer a GET.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from compiler.lineage import LineageStore, open_store, resolve_url

OUTPUTS_DIR = "kiln-runs"  # visible: JupyterLab's contents manager refuses hidden paths


class LineageStores:
    """One open LineageStore per database URL, shared by the handlers and the scheduler."""

    def __init__(self) -> None:
        self._stores: dict[str, LineageStore] = {}
        self._lock = threading.Lock()

    def for_notebook(
        self, notebook_file: Path, url: str | None = None, *, create: bool = False
    ) -> LineageStore | None:
        """The notebook's store; None when it is a SQLite file that does not exist yet and
        `create` is false (nothing was ever recorded there)."""
        return self.for_url(resolve_url(url or None, notebook_file), create=create)

    def for_url(self, url: str, *, create: bool = False) -> LineageStore | None:
        with self._lock:
            store = self._stores.get(url)
            if store is not None:
                return store
            if not create and not _exists(url):
                return None
            store = open_store(url)
            self._stores[url] = store
            return store

    def close_all(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()


def _exists(url: str) -> bool:
    """False only for a SQLite file URL whose file is missing (other databases: ask them)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database
    return not database or database == ":memory:" or Path(database).is_file()


def inside(root: Path, path: str | Path | None) -> Path | None:
    """`path` resolved, if it is an existing file under `root`; else None."""
    if not path:
        return None
    full = Path(path).resolve()
    if full.is_file() and full.is_relative_to(root):
        return full
    return None


def is_hidden(root: Path, full: Path) -> bool:
    return any(part.startswith(".") for part in full.relative_to(root).parts)


def visible_output(root: Path, notebook_file: Path, source: Path, *parts: str) -> Path:
    """An output notebook JupyterLab can open: `source` itself when it is not hidden, else a copy
    under `kiln-runs/NOTEBOOK/PARTS...` beside the notebook (refreshed when the source changes)."""
    if not is_hidden(root, source):
        return source
    target = notebook_file.parent / OUTPUTS_DIR / notebook_file.stem
    for part in parts:
        target = target / part
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return target
