"""Run ids: minted in one place, whoever starts the run."""

from __future__ import annotations

import uuid


def new_run_id() -> str:
    """16 random hex digits. Random first: Dask keys use run_id[:8], which must differ between
    runs."""
    return uuid.uuid4().hex[:16]
