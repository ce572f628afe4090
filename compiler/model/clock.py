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


def iso(moment: dt.datetime | None) -> str | None:
    """A stored time as Kiln shows it: ISO 8601 in UTC, to the second."""
    moment = as_utc(moment)
    return moment.isoformat(timespec="seconds") if moment else None
