"""What a schedule can choose: plain names, so the `kiln schedule` parser can offer them without
loading the scheduler and SQLAlchemy."""

from __future__ import annotations

ENGINES = ("kiln", "papermill")
MISSED_POLICIES = ("run_once", "skip")
