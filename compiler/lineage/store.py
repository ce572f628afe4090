"""Opening the lineage store: which database, engine settings, schema migrations, transactions.

    store = open_store(None, "analysis.ipynb")          # .kiln/lineage.db beside the notebook
    store = open_store("postgresql+psycopg://kiln@db/kiln")

The URL comes from the caller (`--lineage-db`), else `KILN_LINEAGE_DB`, else SQLite beside the
notebook. Opening upgrades the schema to the newest Alembic revision; when it is already there
(the usual case) that costs one small query.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, create_engine, event, insert, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from compiler.lineage.defaults import DEFAULT_DB as DEFAULT_DB
from compiler.lineage.defaults import ENV_URL as ENV_URL
from compiler.lineage.defaults import HEAD_REVISION as HEAD_REVISION
from compiler.lineage.defaults import SQLITE_BUSY_TIMEOUT_MS
from compiler.lineage.defaults import find_default_db as find_default_db
from compiler.lineage.errors import LineageStoreError as LineageStoreError
from compiler.lineage.sqlite_reader import SqlRows
from compiler.model.validation import finite_or_text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any fixed number: serializes concurrent first-time migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 0x6B696C6E

T = TypeVar("T")


def default_url_for(notebook_path: str | Path) -> str:
    return f"sqlite:///{Path(notebook_path).resolve().parent / DEFAULT_DB}"


def resolve_url(url: str | None, notebook_path: str | Path | None = None) -> str:
    """The database URL: explicit, else $KILN_LINEAGE_DB, else SQLite beside the notebook (or
    the nearest `.kiln/lineage.db` above the current folder when no notebook is named)."""
    if url:
        return url
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL]
    if notebook_path is not None:
        return default_url_for(notebook_path)
    found = find_default_db(Path.cwd())
    return f"sqlite:///{found or Path.cwd() / DEFAULT_DB}"


def _configure_sqlite(engine: Engine) -> None:
    """WAL (readers never block the writer), a long busy timeout (concurrent writers wait
    instead of failing) and transactions we begin ourselves: write transactions start with
    BEGIN IMMEDIATE, so two writers never both hold a read lock and then deadlock upgrading it."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not BEGIN on its own
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("kiln_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _json_dumps(value: Any) -> str:
    import json

    # Parameter values and summaries JSON cannot hold still get a readable, stable text.
    try:
        return json.dumps(value, default=repr, sort_keys=True, allow_nan=False)
    except ValueError:
        # NaN/inf: SQLite took the bare tokens, PostgreSQL's json type refused the whole run.
        # Stored as the strings 'NaN', 'Infinity', '-Infinity', which both accept.
        return json.dumps(finite_or_text(value), default=repr, sort_keys=True, allow_nan=False)


def create_store_engine(url: str) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            "check_same_thread": False,  # the heartbeat thread shares the pool
        }
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs["pool_pre_ping"] = True
    return create_engine(url, **kwargs)


def sql_rows(connection: Connection) -> SqlRows:
    """SQL text on this connection, rows as tuples: the statements history.py shares with
    the sqlite3 reader (SQLAlchemy's `text()` takes the same `:name` parameters)."""

    def rows(statement: str, parameters: Mapping[str, Any]) -> list[Any]:
        return list(connection.execute(text(statement), dict(parameters)).all())

    return rows


def is_transient(exc: DBAPIError) -> bool:
    """Errors worth retrying the whole transaction for: lock timeouts and deadlocks."""
    message = str(exc.orig).lower()
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01") or "database is locked" in message or "deadlock" in message


class LineageStore:
    """A lineage database: the engine plus the transactions and queries on it."""

    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def reading_sql(self) -> Iterator[SqlRows]:
        """A read transaction that runs SQL text with `:name` parameters (history.py's), as
        `SqliteReader.reading_sql` runs it without SQLAlchemy."""
        with self.reading() as connection:
            yield sql_rows(connection)

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction (committed at the end of the block)."""
        with self.engine.connect() as connection:
            connection.execution_options(kiln_write=True)
            with connection.begin():
                yield connection

    def write(self, work: Callable[[Connection], T], attempts: int = 5) -> T:
        """Run `work` in one write transaction, retrying it after a deadlock or lock timeout."""
        for attempt in range(attempts):
            try:
                with self.writing() as connection:
                    return work(connection)
            except (OperationalError, DBAPIError) as exc:
                if attempt == attempts - 1 or not is_transient(exc):
                    raise
                time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LineageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Queries, bound for convenience: store.list_runs(...) is queries.list_runs(store, ...).
    def list_runs(self, notebook: str | Path | None = None, limit: int = 20) -> list[Any]:
        from compiler.lineage.queries import list_runs

        return list_runs(self, notebook=notebook, limit=limit)

    def show_run(self, run_id: str) -> dict[str, Any]:
        from compiler.lineage.queries import show_run

        return show_run(self, run_id)

    def lineage(self, target: str) -> dict[str, Any]:
        from compiler.lineage.queries import lineage

        return lineage(self, target)

    def diff_runs(self, run_a: str, run_b: str) -> dict[str, Any]:
        from compiler.lineage.queries import diff_runs

        return diff_runs(self, run_a, run_b)


def insert_ignoring_duplicates(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]], key: Iterable[str]
) -> None:
    """Insert rows whose key may already exist (artifacts, datasets, pipelines shared by runs).

    Rows go in sorted by key so that two transactions inserting the same keys take their locks
    in one order (PostgreSQL would otherwise deadlock them)."""
    if not rows:
        return
    key = list(key)
    ordered = sorted(rows, key=lambda row: tuple(str(row[k]) for k in key))
    name = connection.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        connection.execute(sqlite.insert(table).on_conflict_do_nothing(index_elements=key), ordered)
        return
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        connection.execute(
            postgresql.insert(table).on_conflict_do_nothing(index_elements=key), ordered
        )
        return
    for row in ordered:  # other backends: one savepoint per row
        try:
            with connection.begin_nested():
                connection.execute(insert(table), [row])
        except IntegrityError:
            pass


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to HEAD_REVISION; a no-op (one query) when it is there already.

    Concurrent first openers serialize on a lock (SQLite's write lock, a PostgreSQL advisory
    lock) and the DDL runs in that same transaction, so the loser finds the tables made."""
    if _current_revision(engine) == HEAD_REVISION:
        return
    with engine.connect() as connection:
        connection.execution_options(kiln_write=True)
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                )
            if _holds_no_store(connection):
                _create_at_head(connection)
                return
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


def _holds_no_store(connection: Connection) -> bool:
    from sqlalchemy import inspect

    from compiler.lineage.schema import metadata

    present = set(inspect(connection).get_table_names())
    return "alembic_version" not in present and not present & set(metadata.tables)


def _create_at_head(connection: Connection) -> None:
    """A new store: the tables as `schema.py` defines them, stamped at HEAD_REVISION, which is
    what running every migration builds (tests/test_lineage_store.py compares the two). Alembic
    is not loaded: that was a tenth of a second of every first run in a folder."""
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String

    from compiler.lineage.schema import metadata

    metadata.create_all(connection)
    version = Table(  # as Alembic makes it, so later migrations find their place
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(connection)
    connection.execute(insert(version).values(version_num=HEAD_REVISION))


def _current_revision(engine: Engine) -> str | None:
    from sqlalchemy import inspect

    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return rows[0][0] if len(rows) == 1 else None


def open_store(
    url: str | None = None, notebook_path: str | Path | None = None, *, migrate: bool = True
) -> LineageStore:
    """Open (and create or upgrade) the lineage store; see `resolve_url` for which one."""
    resolved = resolve_url(url, notebook_path)
    try:
        engine = create_store_engine(resolved)
    except Exception as exc:  # bad URL, missing driver
        raise LineageStoreError(f"cannot open lineage database {resolved!r}: {exc}") from exc
    if migrate:
        try:
            upgrade_schema(engine)
        except DBAPIError as exc:  # locked, unreadable, or not a database ("file is not a
            # database" is a DatabaseError, not an OperationalError: it was a traceback)
            engine.dispose()
            raise LineageStoreError(
                f"cannot open lineage database {_safe(resolved)}: {exc.orig}"
            ) from exc
    return LineageStore(engine, resolved)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


__all__ = [
    "ENV_URL",
    "HEAD_REVISION",
    "LineageStore",
    "LineageStoreError",
    "create_store_engine",
    "default_url_for",
    "find_default_db",
    "insert_ignoring_duplicates",
    "is_transient",
    "open_store",
    "resolve_url",
    "upgrade_schema",
]
