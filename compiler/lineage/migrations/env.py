"""Alembic environment for the lineage store.

Migrations always run on a connection the store opened (and locked) itself, passed in as
`config.attributes["connection"]`; there is no alembic.ini and no offline mode.
"""

from __future__ import annotations

from alembic import context

from compiler.lineage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run lineage migrations through compiler.lineage.store.upgrade_schema")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite alters tables by copying them; batch mode does that for us
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
