"""The lineage store's errors, in a module of their own: the command-line faces catch them
around every lineage command, and importing them must not import SQLAlchemy (~0.3 s here),
which `kiln metrics` over a SQLite store does without (compiler/lineage/sqlite_reader.py).
`compiler.lineage.store` and `compiler.lineage.queries` re-export them under the old names."""

from __future__ import annotations


class LineageStoreError(RuntimeError):
    """The lineage database cannot be opened or used."""


class LineageNotFound(LookupError):
    """Nothing in the store matches (exit code 1)."""


class AmbiguousTarget(ValueError):
    """A prefix or file name matches more than one thing (exit code 2: say more)."""
