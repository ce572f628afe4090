"""Where a lineage store is looked for: names only, so command-line parsers that mention them
do not import SQLAlchemy."""

from __future__ import annotations

from pathlib import Path

ENV_URL = "KILN_LINEAGE_DB"
DEFAULT_DB = Path(".kiln") / "lineage.db"
