"""A SQLite lineage store read with the standard library's `sqlite3`, without SQLAlchemy.

    reader = open_sqlite_reader(Path(".kiln/lineage.db"))     # None: use open_store instead
    with reader, reader.reading_sql() as sql:
        rows = sql("SELECT id FROM runs WHERE notebook_path = :path", {"path": p})

`kiln metrics` is a new process each time it is typed, and importing SQLAlchemy alone took
0.31-0.39 s of its 0.48-0.65 s here (the target is 0.2 s). Its reads are SQL text with `:name`
parameters (compiler/lineage/history.py), which sqlite3 runs as they are and SQLAlchemy runs
through `text()` (`LineageStore.reading_sql`): one copy of each statement and of the code that
shapes its rows, whichever of the two executes it.

Only a store already at the newest schema revision is read here, read-only. Anything else (no
such file, a store that opening with `open_store` would upgrade, a file that is not a SQLite
database, a URL with options or in memory) gets `None`, and the caller opens it with SQLAlchemy
as before: the same upgrade, the same messages.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from compiler.lineage.defaults import HEAD_REVISION, SQLITE_BUSY_TIMEOUT_MS

# sql(statement, parameters) -> every row as a tuple: what both back-ends give history.py.
SqlRows = Callable[[str, Mapping[str, Any]], list[Any]]

# The URLs SQLAlchemy's pysqlite dialect reads as a plain file (no ?options, not :memory:).
_SQLITE_FILE_URL = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<path>[^?]+)")


def sqlite_file_of(url: str) -> Path | None:
    """The database file a `sqlite:///PATH` URL names (relative to the current folder, as
    SQLAlchemy reads it), or None for any other URL."""
    found = _SQLITE_FILE_URL.fullmatch(url)
    if found is None or found["path"] == ":memory:":
        return None
    return Path(unquote(found["path"]))


class SqliteReader:
    """Read transactions on one read-only sqlite3 connection (`reading_sql`), as
    `LineageStore.reading_sql` gives them over SQLAlchemy."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._connection = connection
        self.path = path
        self.url = f"sqlite:///{path}"

    @contextmanager
    def reading_sql(self) -> Iterator[SqlRows]:
        """One transaction, so that the statements of one answer see one state of the store
        (a run finishing meanwhile is in all of them or in none)."""
        self._connection.execute("BEGIN")
        try:
            yield self._rows
        finally:
            self._connection.execute("ROLLBACK")

    def _rows(self, statement: str, parameters: Mapping[str, Any]) -> list[Any]:
        return self._connection.execute(statement, parameters).fetchall()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> SqliteReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sqlite_reader(path: Path) -> SqliteReader | None:
    """The store at `path` opened read-only, or None when SQLAlchemy must open it (see the
    module's docstring): never creates, upgrades or writes anything."""
    if not path.is_file():
        return None
    try:
        # mode=ro: never creates the file nor writes to it. WAL mode (set by the writers) lets
        # this read while a run writes; the busy timeout covers a checkpoint in progress.
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # transactions are ours: reading_sql begins them
            check_same_thread=False,
        )
    except sqlite3.Error:
        return None
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:  # not a database, or not a lineage store at a known revision
        connection.close()
        return None
    if revision != [(HEAD_REVISION,)]:
        connection.close()
        return None
    return SqliteReader(connection, path)
