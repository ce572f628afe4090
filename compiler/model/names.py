"""Name grammars that several layers check: one definition each."""

from __future__ import annotations

import re

# A schedule's name is part of URLs (/kiln/schedules/NAME) and of file names; 200 characters is
# what every route and the lineage column accept.
SCHEDULE_NAME_MAX = 200
SCHEDULE_NAME_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{SCHEDULE_NAME_MAX - 1}}}"
SCHEDULE_NAME_RE = re.compile(rf"^{SCHEDULE_NAME_PATTERN}$")


def is_schedule_name(name: str) -> bool:
    return bool(SCHEDULE_NAME_RE.match(name))
