"""`kiln schedule add|list|pause|resume|remove|runs` and `kiln scheduler`.

Schedules live in the lineage database: the one given by `--lineage-db URL`, else
$KILN_LINEAGE_DB, else `.kiln/lineage.db` beside the notebook (for `add`) or in the current
folder or the nearest folder above it that has one.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.schedule.options import ENGINES, MISSED_POLICIES

if TYPE_CHECKING:
    from compiler.lineage.store import LineageStore
    from compiler.schedule.scheduler import Action

EXIT_OK, EXIT_NOT_FOUND, EXIT_BAD_INPUT = 0, 1, 2


def _parameters(notebook: str, pairs: list[list[str]] | None) -> dict[str, Any]:
    """`-p NAME VALUE` typed like `kiln run -p`: each value like its default in the notebook's
    parameters cell (so '1.10' stays a str where the default is a str)."""
    from compiler.schedule.scheduler import ScheduleError

    if not pairs:
        return {}
    from compiler.compile.api import compile_notebook
    from compiler.model.diagnostics import NotebookLoadError
    from compiler.runtime.parameters import coerce_parameters

    try:
        result = compile_notebook(notebook)
    except NotebookLoadError as exc:
        raise ScheduleError(str(exc)) from None
    if result.spec is None:
        errors = "; ".join(d.render() for d in result.diagnostics if d.severity == "error")
        raise ScheduleError(f"{notebook} does not compile: {errors}")
    try:
        return coerce_parameters(result.spec, {name: value for name, value in pairs})
    except ValueError as exc:
        raise ScheduleError(str(exc)) from None


def open_store_for(args: argparse.Namespace, notebook: str | None = None) -> LineageStore:
    """The lineage store a CLI command works on: --lineage-db, else the notebook's, else the one
    found from this folder up (else .kiln/lineage.db here)."""
    from compiler.lineage.store import find_default_db, open_store

    if args.lineage_db:
        return open_store(args.lineage_db)
    if notebook is not None:
        return open_store(None, notebook)
    found = find_default_db(Path.cwd())
    if found is None:
        return open_store(None, Path.cwd() / "schedules.ipynb")  # .kiln/lineage.db here
    return open_store(f"sqlite:///{found}")


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def cmd_add(args: argparse.Namespace) -> int:
    from compiler.schedule.scheduler import add_schedule

    with open_store_for(args, args.notebook) as store:
        name = args.name or Path(args.notebook).stem
        schedule = add_schedule(
            store,
            name,
            args.notebook,
            args.cron,
            timezone=args.tz,
            parameters=_parameters(args.notebook, args.parameters),
            engine=args.engine,
            missed=args.missed,
            budget=args.budget,
            grace_s=args.grace,
        )
    _print(
        args,
        schedule.to_dict(),
        f"schedule {schedule.name}: {schedule.cron} ({schedule.timezone}), engine "
        f"{schedule.engine}; next run {schedule.next_due_at:%Y-%m-%d %H:%M:%S} UTC",
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from compiler.schedule.scheduler import list_schedules

    with open_store_for(args) as store:
        items = list_schedules(store)
    rows = [("name", "cron", "tz", "engine", "state", "runs", "next run (UTC)", "notebook")]
    for s in items:
        rows.append(
            (
                s.name,
                s.cron,
                s.timezone,
                s.engine,
                "paused" if s.paused else "active",
                f"promoted {s.promoted_version}" if s.mode == "promoted" else "live notebook",
                f"{s.next_due_at:%Y-%m-%d %H:%M:%S}",
                s.notebook,
            )
        )
    _print(args, [s.to_dict() for s in items], _table(rows) if items else "no schedules")
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, paused: bool) -> int:
    from compiler.schedule.scheduler import set_paused

    with open_store_for(args) as store:
        schedule = set_paused(store, args.name, paused)
    _print(
        args, schedule.to_dict(), f"schedule {schedule.name} {'paused' if paused else 'resumed'}"
    )
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from compiler.schedule.scheduler import remove_schedule

    with open_store_for(args) as store:
        remove_schedule(store, args.name)
    _print(args, {"removed": args.name}, f"schedule {args.name} removed")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from compiler.schedule.scheduler import schedule_run_rows

    with open_store_for(args) as store:
        rows = schedule_run_rows(store, args.name, limit=args.limit)
    table = [("schedule", "due (UTC)", "status", "run", "output notebook / reason")]
    for r in rows:
        detail = r.get("output_notebook") or r.get("reason") or r.get("error") or ""
        table.append(
            (
                r["name"],
                str(r["due_at"])[:19],
                r["status"],
                (r.get("kiln_run_id") or "-")[:12],
                detail,
            )
        )
    _print(args, rows, _table(table) if rows else "no scheduled runs yet")
    return EXIT_OK


def cmd_scheduler(args: argparse.Namespace) -> int:
    from compiler.schedule.scheduler import Scheduler

    store = open_store_for(args)
    print(
        f"kiln scheduler: {store.url}; polling every {args.poll:g} s (Ctrl-C stops)",
        file=sys.stderr,
    )
    scheduler = Scheduler(store, dask_scheduler=args.scheduler)

    def report(action: Action) -> None:
        why = f" ({action.reason})" if action.reason else ""
        print(
            f"{action.due_at:%Y-%m-%d %H:%M:%S} {action.schedule}: {action.action}{why}",
            file=sys.stderr,
            flush=True,
        )

    if args.once:
        for action in scheduler.tick():
            report(action)
        scheduler.stop(wait=True)
        store.close()
        return EXIT_OK

    def stop(_signum: int, _frame: Any) -> None:
        scheduler.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        scheduler.serve(args.poll, on_action=report)
    finally:
        print("kiln scheduler: stopping; waiting for running jobs", file=sys.stderr)
        scheduler.stop(wait=True)
        store.close()
    return EXIT_OK


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _guarded(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import DBAPIError

        from compiler.lineage.store import LineageStoreError
        from compiler.schedule.scheduler import ScheduleError

        try:
            return int(func(args))
        except ScheduleError as exc:
            print(f"kiln: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND if str(exc).startswith("no schedule") else EXIT_BAD_INPUT
        except LineageStoreError as exc:
            print(f"kiln: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except DBAPIError as exc:  # a value the database refused, which validation missed
            print(f"kiln: the lineage database refused the change: {exc.orig}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return run


def register(subparsers: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lineage-db", metavar="URL", help="database holding the schedules")
        p.add_argument("--json", action="store_true", help="print JSON")

    sched = subparsers.add_parser("schedule", help="cron schedules that run notebooks")
    sub = sched.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")

    p = sub.add_parser("add", help="schedule a notebook")
    p.add_argument("notebook")
    p.add_argument("--cron", required=True, help="cron expression, e.g. '0 6 * * *'")
    p.add_argument("--tz", default="UTC", help="time zone the cron fields are read in")
    p.add_argument("--name", help="schedule name (default: the notebook's name)")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        dest="parameters",
        metavar=("NAME", "VALUE"),
        help="a parameter for every run",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="kiln",
        help="kiln (the pipeline on Dask) or papermill (its default engine)",
    )
    p.add_argument(
        "--missed",
        choices=MISSED_POLICIES,
        default="run_once",
        help="due times missed while no scheduler ran: run once on start, or skip",
    )
    p.add_argument(
        "--budget",
        help="what a run may spend: '0.50' (money at kiln cost --price), '120cpu-s', '50gb-s', "
        "'3600gpu-s'; add ' fail' to fail a run over it (default: flag it)",
    )
    p.add_argument(
        "--grace",
        type=int,
        metavar="SECONDS",
        help="a due time with no run this long after it raises a 'late' alert (default 300)",
    )
    common(p)
    p.set_defaults(func=_guarded(cmd_add))

    p = sub.add_parser("list", help="list schedules")
    common(p)
    p.set_defaults(func=_guarded(cmd_list))
    for action, paused in (("pause", True), ("resume", False)):
        p = sub.add_parser(action, help=f"{action} a schedule")
        p.add_argument("name")
        common(p)
        p.set_defaults(func=_guarded(lambda a, paused=paused: cmd_pause(a, paused)))
    p = sub.add_parser("remove", help="remove a schedule and its run records")
    p.add_argument("name")
    common(p)
    p.set_defaults(func=_guarded(cmd_remove))
    p = sub.add_parser("runs", help="scheduled runs, newest first")
    p.add_argument("name", nargs="?")
    p.add_argument("-n", "--limit", type=int, default=50)
    common(p)
    p.set_defaults(func=_guarded(cmd_runs))

    p = subparsers.add_parser("scheduler", help="run due schedules (until Ctrl-C)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between checks")
    p.add_argument("--once", action="store_true", help="check once, start what is due, wait")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=(
            "Dask scheduler for kiln-engine jobs (default: DASK_SCHEDULER_ADDRESS, else the "
            "cluster of `kiln cluster start`, else a local cluster per run)"
        ),
    )
    p.add_argument("--lineage-db", metavar="URL", help="database holding the schedules")
    p.set_defaults(func=_guarded(cmd_scheduler))
