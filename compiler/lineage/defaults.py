"""Where a lineage store is looked for: names and paths only, so command-line parsers that
mention them, and `kiln metrics` finding its store, do not import SQLAlchemy."""

from __future__ import annotations

from pathlib import Path

ENV_URL = "KILN_LINEAGE_DB"
DEFAULT_DB = Path(".kiln") / "lineage.db"

# The newest migration; a test checks it against the migrations folder. Comparing with a
# constant spares every `kiln` command the cost of loading Alembic's script directory (and here,
# not in store.py, so that the SQLite reader checks a store's revision without SQLAlchemy).
HEAD_REVISION = "0007_metric_order"
SQLITE_BUSY_TIMEOUT_MS = 60_000  # how long a SQLite reader or writer waits for a lock


def find_default_db(start: str | Path) -> Path | None:
    """`.kiln/lineage.db` in `start` or the nearest parent folder that has one (like git)."""
    folder = Path(start).resolve()
    if folder.is_file():
        folder = folder.parent
    for candidate in (folder, *folder.parents):
        if (candidate / DEFAULT_DB).is_file():
            return candidate / DEFAULT_DB
    return None
