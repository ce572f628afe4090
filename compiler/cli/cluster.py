"""`kiln cluster start|status|stop`: a local Dask cluster kept in the background, which
`kiln run` (and the papermill engine, the bundle's run.py) then use instead of starting one per
run. Found through a Dask scheduler file (compiler.runtime.warm)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from compiler.model.units import format_bytes


def register(sub: Any) -> None:
    p = sub.add_parser("cluster", help="keep a local Dask cluster running for kiln run")
    verbs = p.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--scheduler-file",
            metavar="PATH",
            help="the Dask scheduler file (default: Dask config kiln.scheduler-file, else "
            "kiln-scheduler-UID.json in the temporary folder)",
        )
        q.add_argument("--json", action="store_true", help="print the answer as JSON")

    q = verbs.add_parser("start", help="start the cluster in the background (if not running)")
    common(q)
    q.add_argument("--workers", type=int, metavar="N", help="worker processes (default: CPUs)")
    q.add_argument("--memory-limit", metavar="BYTES", help="per worker, e.g. 4GiB (default: auto)")
    q.set_defaults(func=cmd_start)
    q = verbs.add_parser("status", help="the cluster's address, workers and memory")
    common(q)
    q.set_defaults(func=cmd_status)
    q = verbs.add_parser("stop", help="stop the cluster and its workers")
    common(q)
    q.set_defaults(func=cmd_stop)


def _path(args: argparse.Namespace) -> Path | None:
    return Path(args.scheduler_file).resolve() if args.scheduler_file else None


def _show(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, indent=2))
        return
    print(f"scheduler   {status['address']}")
    print(f"file        {status['scheduler_file']}")
    print(f"workers     {status['workers']} ({status['threads']} threads)")
    print(f"memory      {format_bytes(status['memory_limit'])}")
    if status.get("dashboard"):
        print(f"dashboard   {status['dashboard']}")


def cmd_start(args: argparse.Namespace) -> int:
    from compiler.runtime.warm import cluster_status, start_background

    if args.workers is not None and args.workers < 1:
        print("kiln cluster start: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        address, started = start_background(_path(args), args.workers, args.memory_limit)
    except RuntimeError as exc:
        print(f"kiln cluster start: {exc}", file=sys.stderr)
        return 1
    if not started:
        print(f"kiln: a cluster is already running at {address}", file=sys.stderr)
    status = cluster_status(_path(args))
    if status is not None:
        _show(status, args.json)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from compiler.runtime.warm import cluster_status, default_scheduler_file

    status = cluster_status(_path(args))
    if status is None:
        where = _path(args) or default_scheduler_file()
        if args.json:
            print(json.dumps({"running": False, "scheduler_file": str(where)}))
        else:
            print(f"kiln: no cluster running (scheduler file {where})", file=sys.stderr)
        return 1
    _show({**status, "running": True} if args.json else status, args.json)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from compiler.runtime.warm import stop_background

    stopped = stop_background(_path(args))
    if args.json:
        print(json.dumps({"stopped": stopped}))
    elif stopped:
        print("kiln: cluster stopped", file=sys.stderr)
    else:
        print("kiln: no cluster was running", file=sys.stderr)
    return 0
