"""Bytes and durations as people read them, the same in the CLI, the server and the widget."""

from __future__ import annotations


def format_bytes(n: float | None) -> str:
    """'512 B', '1.5 KiB', ... '2.0 TiB'; '-' when unknown."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_duration(seconds: float | None) -> str:
    """'250 ms', '1.2 s', '3 min 5 s'; '' when unknown."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min {round(seconds - minutes * 60)} s"
