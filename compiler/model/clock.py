"""Time as Kiln stores it: aware UTC datetimes, ISO 8601 text with seconds."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_now(timespec: str = "seconds") -> str:
    return utcnow().isoformat(timespec=timespec)


def as_utc(moment: dt.datetime | None) -> dt.datetime | None:
    """SQLite gives naive datetimes back; every time Kiln writes is UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
