"""Schedules: cron jobs that run a notebook through papermill, stored in the lineage database.

`Scheduler.tick(now)` is the whole policy and takes the time as an argument (tests drive it with
a fake clock); `Scheduler.serve()` calls it in a loop. Each due time of a schedule is claimed
with an insert that the database keeps unique per (schedule, due time), so a restarted scheduler,
or two of them, never fire one due time twice. A due run while the previous run of the same
schedule is still going is recorded as skipped, never started.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from compiler.compile.owners import OwnerError, read_production
from compiler.lineage.alerts import has_route
from compiler.lineage.run_context import process_alive, process_started_at
from compiler.lineage.schema import schedule_runs, schedules
from compiler.lineage.store import LineageStore
from compiler.model.clock import utcnow
from compiler.model.costs import parse_budget
from compiler.model.names import SCHEDULE_NAME_MAX, is_schedule_name
from compiler.model.validation import InvalidValue, check_cron, check_timezone
from compiler.schedule import hooks as production_hooks
from compiler.schedule.options import ENGINES as ENGINES
from compiler.schedule.options import MISSED_POLICIES as MISSED_POLICIES

log = logging.getLogger(__name__)

# A due time older than this when the scheduler sees it was missed (scheduler down or asleep).
MISSED_AFTER = dt.timedelta(seconds=90)
# A scheduler writes a heartbeat on each run it is running at most this often; a `running` row
# from another host whose last beat is older than the window belongs to a scheduler that died.
HEARTBEAT_EVERY = dt.timedelta(seconds=30)
HEARTBEAT_WINDOW = dt.timedelta(minutes=5)


class ScheduleError(ValueError):
    """Bad schedule input: the message says what to fix."""


class ScheduleExists(ScheduleError):
    """A schedule of that name is already in the database (the insert itself says so, so two
    clients adding the same name at once cannot both succeed)."""


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def validate_cron(expression: str) -> str:
    try:
        return check_cron(expression)
    except InvalidValue as exc:
        raise ScheduleError(str(exc)) from None


def validate_timezone(name: str) -> str:
    try:
        return check_timezone(name)
    except InvalidValue as exc:
        raise ScheduleError(str(exc)) from None


def next_due(cron: str, tz: str, after: dt.datetime) -> dt.datetime:
    """The first due time strictly after `after`, in UTC; cron fields read in the zone `tz`."""
    from croniter import croniter

    after = _aware(after)
    local = after.astimezone(ZoneInfo(tz))
    due = croniter(cron, local).get_next(dt.datetime)
    # When clocks go back, a wall-clock time happens twice (fold 0, then fold 1); like cron, a
    # job with a fixed hour runs at the first one only. Hourly-or-faster jobs keep both.
    if getattr(due, "fold", 0) == 1 and cron.split()[1] != "*":
        if due.replace(fold=0).astimezone(dt.UTC) <= after:
            due = croniter(cron, due).get_next(dt.datetime)
    return due.astimezone(dt.UTC)


def due_times(
    cron: str, tz: str, first_due: dt.datetime, now: dt.datetime, limit: int = 10_000
) -> list[dt.datetime]:
    """Every due time from `first_due` up to `now` (inclusive), oldest first."""
    out: list[dt.datetime] = []
    due = _aware(first_due)
    while due <= now and len(out) < limit:
        out.append(due)
        due = next_due(cron, tz, due)
    return out


@dataclass(frozen=True)
class Schedule:
    id: int
    name: str
    notebook: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    engine: str
    missed: str
    paused: bool
    next_due_at: dt.datetime
    mode: str = "live"  # "live": the notebook as it is now; "promoted": the bundle below
    promoted_version: str | None = None
    promoted_bundle: str | None = None
    budget: dict[str, Any] | None = None
    grace_s: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> Schedule:
        m = row._mapping
        return cls(
            m["id"],
            m["name"],
            m["notebook_path"],
            m["cron"],
            m["timezone"],
            dict(m["parameters"] or {}),
            m["engine"],
            m["missed_policy"],
            bool(m["paused"]),
            _aware(m["next_due_at"]),
            m["mode"] or "live",
            m["promoted_version"],
            m["promoted_bundle"],
            m["budget"],
            m["grace_s"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "notebook": self.notebook,
            "cron": self.cron,
            "timezone": self.timezone,
            "parameters": self.parameters,
            "engine": self.engine,
            "missed": self.missed,
            "paused": self.paused,
            "next_due_at": self.next_due_at.isoformat(),
            "mode": self.mode,
            "promoted_version": self.promoted_version,
            "promoted_bundle": self.promoted_bundle,
            "budget": self.budget,
            "grace_s": self.grace_s,
        }


# --- storage --------------------------------------------------------------------------------------


def add_schedule(
    store: LineageStore,
    name: str,
    notebook: str | Path,
    cron: str,
    *,
    timezone: str = "UTC",
    parameters: dict[str, Any] | None = None,
    engine: str = "kiln",
    missed: str = "run_once",
    now: dt.datetime | None = None,
    budget: str | None = None,
    grace_s: int | None = None,
) -> Schedule:
    if not is_schedule_name(name):
        raise ScheduleError(
            f"schedule name {name!r}: use up to {SCHEDULE_NAME_MAX} letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    if engine not in ENGINES:
        raise ScheduleError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if missed not in MISSED_POLICIES:
        raise ScheduleError(
            f"missed-run policy {missed!r}: choose one of {', '.join(MISSED_POLICIES)}"
        )
    cron = validate_cron(cron)
    timezone = validate_timezone(timezone)
    path = Path(notebook).resolve()
    if not path.is_file():
        raise ScheduleError(f"{notebook}: no such notebook")
    if path.suffix != ".ipynb":
        raise ScheduleError(f"{notebook}: not a notebook (a schedule runs an .ipynb file)")
    _require_someone_to_tell(store, path, name)
    try:
        parsed_budget = parse_budget(budget)
    except ValueError as exc:
        raise ScheduleError(str(exc)) from None
    if grace_s is not None and grace_s < 0:
        raise ScheduleError(f"grace period {grace_s}: give seconds, 0 or more")
    now = now or utcnow()
    row = {
        "name": name,
        "notebook_path": str(path),
        "cron": cron,
        "timezone": timezone,
        "parameters": parameters or {},
        "engine": engine,
        "missed_policy": missed,
        "paused": False,
        "created_at": now,
        "next_due_at": next_due(cron, timezone, now),
        "mode": "live",
        "budget": parsed_budget,
        "grace_s": grace_s,
    }
    try:
        store.write(lambda c: c.execute(insert(schedules).values(**row)))
    except IntegrityError as exc:
        raise ScheduleExists(f"a schedule named {name!r} already exists") from exc
    return get_schedule(store, name)


def _require_someone_to_tell(store: LineageStore, notebook: Path, name: str) -> None:
    """A production schedule names someone: the notebook's owner, or at least an alert route."""
    try:
        owner = read_production(notebook)["owner"]
    except OwnerError as exc:
        raise ScheduleError(str(exc)) from None
    if owner or has_route(store, notebook):
        return
    raise ScheduleError(
        f"schedule {name!r}: {notebook.name} has no owner and no alert route, so nobody would "
        f"hear when it breaks. Name one: kiln owner set {notebook.name} NAME [--team TEAM] "
        f"(or the Owner field in the Kiln panel), or add a route: kiln alert add "
        f"{notebook.name} --email ADDRESS"
    )


def get_schedule(store: LineageStore, name: str) -> Schedule:
    with store.reading() as c:
        row = c.execute(select(schedules).where(schedules.c.name == name)).first()
    if row is None:
        raise ScheduleError(f"no schedule named {name!r}")
    return Schedule.from_row(row)


def list_schedules(store: LineageStore) -> list[Schedule]:
    with store.reading() as c:
        rows = c.execute(select(schedules).order_by(schedules.c.name)).all()
    return [Schedule.from_row(r) for r in rows]


def set_paused(
    store: LineageStore, name: str, paused: bool, now: dt.datetime | None = None
) -> Schedule:
    schedule = get_schedule(store, name)
    values: dict[str, Any] = {"paused": paused}
    if not paused:
        # Resuming starts from now: the time spent paused is not a backlog of missed runs.
        values["next_due_at"] = next_due(schedule.cron, schedule.timezone, now or utcnow())
    store.write(
        lambda c: c.execute(update(schedules).where(schedules.c.id == schedule.id).values(**values))
    )
    return get_schedule(store, name)


def remove_schedule(store: LineageStore, name: str) -> None:
    schedule = get_schedule(store, name)

    def work(c: Any) -> None:
        c.execute(delete(schedule_runs).where(schedule_runs.c.schedule_id == schedule.id))
        c.execute(delete(schedules).where(schedules.c.id == schedule.id))

    store.write(work)


def schedule_run_rows(
    store: LineageStore, name: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    query = (
        select(schedule_runs, schedules.c.name)
        .join(schedules, schedules.c.id == schedule_runs.c.schedule_id)
        .order_by(schedule_runs.c.due_at.desc(), schedule_runs.c.id.desc())
        .limit(limit)
    )
    if name is not None:
        query = query.where(schedules.c.name == name)
    with store.reading() as c:
        rows = c.execute(query).all()
    out = []
    for r in rows:
        m = dict(r._mapping)
        for key in ("due_at", "started_at", "finished_at"):
            if m.get(key) is not None:
                m[key] = _aware(m[key]).isoformat()
        out.append(m)
    return out


# --- running a job -------------------------------------------------------------------------


def output_notebook_for(schedule: Schedule, due: dt.datetime) -> Path:
    notebook = Path(schedule.notebook)
    stamp = _aware(due).strftime("%Y%m%dT%H%M%SZ")
    return notebook.parent / ".kiln" / "schedules" / schedule.name / f"{stamp}-{notebook.name}"


def run_job(
    schedule: Schedule, due: dt.datetime, *, dask_scheduler: str | None = None
) -> dict[str, Any]:
    """One scheduled run through papermill's Python API; returns what the run row records."""
    import nbformat
    import papermill

    output = output_notebook_for(schedule, due)
    output.parent.mkdir(parents=True, exist_ok=True)
    notebook = Path(schedule.notebook)
    workdir = notebook.parent  # data files, cache and lineage stay beside the live notebook
    if schedule.mode == "promoted":
        notebook = promoted_notebook(schedule)  # the bundle's snapshot: its code, not today's
    # Not papermill's `cwd=`: it calls os.chdir, which moves the whole process (the Jupyter
    # server's too) while other jobs run in sibling threads. The kiln engine works in the
    # notebook's folder by itself; nbclient starts the kernel in `resources.metadata.path`.
    engine_kwargs: dict[str, Any] = {}
    if schedule.engine == "kiln":
        if dask_scheduler:
            engine_kwargs["scheduler"] = dask_scheduler
        if workdir != notebook.parent:
            engine_kwargs["working_dir"] = str(workdir)
    else:
        engine_kwargs["resources"] = {"metadata": {"path": str(workdir)}}
    record: dict[str, Any] = {"output_notebook": str(output)}
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=schedule.parameters,
            engine_name="kiln" if schedule.engine == "kiln" else None,
            progress_bar=False,
            log_output=False,
            **engine_kwargs,
        )
        record["status"] = "succeeded"
    except Exception as exc:  # the job failed; the scheduler keeps going
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"[:4000]
    if output.exists():
        try:
            kiln = nbformat.read(output, as_version=4).metadata.get("kiln", {})
            record["kiln_run_id"] = kiln.get("run_id")
        except Exception:  # an unreadable partial output: the error above says why
            pass
    return record


def promoted_notebook(schedule: Schedule) -> Path:
    """The notebook snapshot inside the schedule's promoted bundle (compiler/ops/promotion.py)."""
    import json

    bundle = Path(schedule.promoted_bundle or "")
    try:
        manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
        return bundle / str(manifest["notebook"]["file"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScheduleError(
            f"schedule {schedule.name!r}: its promoted bundle {bundle} is unreadable ({exc}); "
            "promote a version again (kiln promote NOTEBOOK)"
        ) from None


# --- the scheduler -------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    schedule: str
    due_at: dt.datetime
    action: str  # "started" | "skipped"
    reason: str = ""


class Scheduler:
    """Fires due schedules. One per process; `tick` may also be called directly (tests)."""

    def __init__(
        self,
        store: LineageStore,
        *,
        dask_scheduler: str | None = None,
        max_parallel: int = 4,
        job: Callable[[Schedule, dt.datetime], dict[str, Any]] | None = None,
    ):
        self.store = store
        self.dask_scheduler = dask_scheduler
        self.job = job or (lambda s, due: run_job(s, due, dask_scheduler=self.dask_scheduler))
        self.pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="kiln-job")
        self.running: dict[int, Future[Any]] = {}  # schedule id -> its run in this process
        self.running_rows: dict[int, int] = {}  # schedule id -> that run's schedule_runs row
        self.last_beat: dt.datetime | None = None
        self.host = socket.gethostname()
        self.stopping = threading.Event()

    def tick(self, now: dt.datetime | None = None) -> list[Action]:
        now = _aware(now or utcnow())
        self._forget_finished()
        self._beat(now)
        actions: list[Action] = []
        for schedule in list_schedules(self.store):
            if schedule.paused or schedule.next_due_at > now:
                continue
            # Before firing: a due time still unfired past its grace period means the scheduler
            # was down (or stuck); firing it now would hide that it ran late.
            production_hooks.schedule_due(self.store, schedule, now)
            actions += self._fire(schedule, now)
        return actions

    def _fire(self, schedule: Schedule, now: dt.datetime) -> list[Action]:
        dues = due_times(schedule.cron, schedule.timezone, schedule.next_due_at, now)
        latest = dues[-1]
        following = next_due(schedule.cron, schedule.timezone, latest)
        missed = len(dues) > 1 or now - latest > MISSED_AFTER
        if not self._advance(schedule, following):
            return []  # another scheduler advanced it first: it fires this due time
        if missed and schedule.missed == "skip":
            reason = f"missed {len(dues)} due time(s) while the scheduler was not running"
            return self._record_skip(schedule, latest, reason)
        if self._still_running(schedule, now):
            return self._record_skip(schedule, latest, "the previous run is still running")
        run_id = self._claim(schedule, latest)
        if run_id is None:
            return []
        future = self.pool.submit(self._execute, schedule, latest, run_id)
        self.running[schedule.id] = future
        self.running_rows[schedule.id] = run_id
        reason = f"caught up after {len(dues)} missed due time(s)" if missed else ""
        return [Action(schedule.name, latest, "started", reason)]

    def _advance(self, schedule: Schedule, following: dt.datetime) -> bool:
        """Move next_due_at forward, only if nobody else did (compare-and-set)."""

        def work(c: Any) -> bool:
            result = c.execute(
                update(schedules)
                .where(
                    and_(
                        schedules.c.id == schedule.id,
                        schedules.c.next_due_at == schedule.next_due_at,
                    )
                )
                .values(next_due_at=following)
            )
            return bool(result.rowcount == 1)

        return self.store.write(work)

    def _still_running(self, schedule: Schedule, now: dt.datetime) -> bool:
        future = self.running.get(schedule.id)
        if future is not None and not future.done():
            return True
        with self.store.reading() as c:
            rows = c.execute(
                select(
                    schedule_runs.c.id,
                    schedule_runs.c.host,
                    schedule_runs.c.pid,
                    schedule_runs.c.pid_started_at,
                    schedule_runs.c.started_at,
                    schedule_runs.c.heartbeat_at,
                ).where(
                    and_(
                        schedule_runs.c.schedule_id == schedule.id,
                        schedule_runs.c.status == "running",
                    )
                )
            ).all()
        ours = set(self.running_rows.values())
        for row in rows:
            if row.id in ours:
                continue  # ours, and finished (checked above): its row is being closed
            if row.host == self.host:
                # pid and start time, as run lineage does: a later process given the same pid
                # (this scheduler itself, after a restart) is not the scheduler that ran it.
                if row.pid != os.getpid() and process_alive(row.pid, row.pid_started_at):
                    return True
                error = f"the scheduler running it (pid {row.pid}) stopped"
            else:
                beat = row.heartbeat_at or row.started_at
                if beat is None or now - _aware(beat) <= HEARTBEAT_WINDOW:
                    return True
                error = (
                    f"the scheduler running it on {row.host} sent no heartbeat since "
                    f"{_aware(beat):%Y-%m-%d %H:%M:%S} UTC"
                )
            self._close_run(row.id, {"status": "interrupted", "error": error})
        return False

    def _beat(self, now: dt.datetime) -> None:
        """Say the runs this process is running are alive (read by schedulers on other hosts)."""
        rows = [self.running_rows[k] for k, f in self.running.items() if not f.done()]
        if not rows or (self.last_beat is not None and now - self.last_beat < HEARTBEAT_EVERY):
            return
        self.store.write(
            lambda c: c.execute(
                update(schedule_runs)
                .where(schedule_runs.c.id.in_(rows), schedule_runs.c.status == "running")
                .values(heartbeat_at=now)
            )
        )
        self.last_beat = now

    def _claim(self, schedule: Schedule, due: dt.datetime) -> int | None:
        row = {
            "schedule_id": schedule.id,
            "due_at": due,
            "status": "running",
            "started_at": utcnow(),
            "host": self.host,
            "pid": os.getpid(),
            "pid_started_at": process_started_at(os.getpid()),
        }

        def work(c: Any) -> int:
            key = c.execute(insert(schedule_runs).values(**row)).inserted_primary_key
            return int(key[0])

        try:
            return self.store.write(work)
        except IntegrityError:
            return None  # this due time was already fired (a restart or another scheduler)

    def _record_skip(self, schedule: Schedule, due: dt.datetime, reason: str) -> list[Action]:
        """Record the due time as skipped; [] when another scheduler (or this one before a
        restart) already holds it: with two schedulers on one database, the one that did not
        claim a due time saw the other's run still going and reported a skip that never was."""
        row = {
            "schedule_id": schedule.id,
            "due_at": due,
            "status": "skipped",
            "reason": reason,
            "started_at": utcnow(),
            "finished_at": utcnow(),
            "host": self.host,
            "pid": os.getpid(),
        }
        try:
            self.store.write(lambda c: c.execute(insert(schedule_runs).values(**row)))
        except IntegrityError:
            return []
        return [Action(schedule.name, due, "skipped", reason)]

    def _execute(self, schedule: Schedule, due: dt.datetime, run_row: int) -> None:
        try:
            record = self.job(schedule, due)
        except BaseException as exc:  # never leave a row "running"
            record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        record = production_hooks.schedule_run_ended(self.store, schedule, due, record)
        self._close_run(run_row, record)

    def _close_run(self, run_row: int, record: dict[str, Any]) -> None:
        values = {
            k: v
            for k, v in record.items()
            if k in ("status", "error", "output_notebook", "kiln_run_id")
        }
        values["finished_at"] = utcnow()
        self.store.write(
            lambda c: c.execute(
                update(schedule_runs).where(schedule_runs.c.id == run_row).values(**values)
            )
        )

    def _forget_finished(self) -> None:
        for key in [k for k, f in self.running.items() if f.done()]:
            del self.running[key]
            self.running_rows.pop(key, None)

    def serve(
        self, poll_seconds: float = 1.0, on_action: Callable[[Action], None] | None = None
    ) -> None:
        """Tick until `stop()`; due runs start within `poll_seconds` of their due time."""
        while not self.stopping.is_set():
            try:
                actions = self.tick()
            except Exception:  # a database restart or a long lock: try again next poll
                log.exception("kiln scheduler: checking due schedules failed; retrying")
                actions = []
            for action in actions:
                if on_action:
                    on_action(action)
            self.stopping.wait(poll_seconds - (time.time() % poll_seconds))

    def stop(self, wait: bool = True) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=wait)
