"""Runs whose process died: a run left `running` becomes `interrupted`.

On this host a run is dead when its pid is gone (or now belongs to a later process). A run on
another host cannot be checked that way; it is dead when its heartbeat (written every 30 s by
the recorder) is older than the heartbeat window.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from compiler.lineage.run_context import process_alive
from compiler.lineage.schema import runs, task_runs
from compiler.lineage.store import LineageStore
from compiler.model.clock import as_utc, utcnow

HEARTBEAT_WINDOW_S = 300.0


def _is_dead(row: Any, host: str, now: dt.datetime, window_s: float) -> bool:
    if row.host == host:
        return not process_alive(row.pid, row.pid_started_at)
    last = as_utc(row.heartbeat_at) or as_utc(row.started_at)
    return last is None or (now - last).total_seconds() > window_s


def mark_interrupted(
    store: LineageStore, *, heartbeat_window_s: float = HEARTBEAT_WINDOW_S
) -> list[str]:
    """Mark dead `running` runs (and their unfinished tasks) `interrupted`; their ids."""
    host = socket.gethostname()
    now = utcnow()
    with store.reading() as connection:
        candidates = connection.execute(
            select(
                runs.c.id,
                runs.c.host,
                runs.c.pid,
                runs.c.pid_started_at,
                runs.c.heartbeat_at,
                runs.c.started_at,
            ).where(runs.c.status == "running")
        ).all()
    dead = [row for row in candidates if _is_dead(row, host, now, heartbeat_window_s)]
    if not dead:
        return []

    def write(connection: Connection) -> list[str]:
        marked = []
        for row in dead:
            where = f"pid {row.pid} on {row.host}" if row.host else "its process"
            changed = connection.execute(
                update(runs)
                .where(runs.c.id == row.id, runs.c.status == "running")  # not if it just ended
                .values(
                    status="interrupted",
                    ended_at=as_utc(row.heartbeat_at) or now,
                    error=f"the run's process ({where}) ended before the run finished",
                )
            ).rowcount
            if changed:
                marked.append(row.id)
                connection.execute(
                    update(task_runs)
                    .where(
                        task_runs.c.run_id == row.id,
                        task_runs.c.status.in_(("waiting", "running", "retrying")),
                    )
                    .values(status="interrupted")
                )
        return marked

    return store.write(write)
