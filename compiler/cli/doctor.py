"""`kiln doctor`: the installation checks of compiler.ops.doctor, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from compiler.ops.doctor import FAIL, OK, WARN, Check, run_checks

EXIT_OK, EXIT_FAILED = 0, 1


def render(results: list[Check]) -> str:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        lines.append(f"{r.status:<4}  {r.name:<{width}}  {r.detail}")
        if r.fix and r.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {r.fix}")
    failed = sum(r.status == FAIL for r in results)
    warned = sum(r.status == WARN for r in results)
    lines.append(f"\n{len(results)} checks: {failed} failed, {warned} warning(s)")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    results = run_checks(
        scheduler=args.scheduler, store=args.store, lineage_db=args.lineage_db, timeout=args.timeout
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(render(results))
    return EXIT_FAILED if any(r.status == FAIL for r in results) else EXIT_OK


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor", help="check the installation and say what to fix (exit 1 if a check fails)"
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="check this Dask scheduler (default: DASK_SCHEDULER_ADDRESS, else start a "
        "local cluster)",
    )
    p.add_argument("--store", metavar="URL", help="artifact store to check (default: .kiln/ here)")
    p.add_argument(
        "--lineage-db",
        metavar="URL",
        help="lineage database to check (default: $KILN_LINEAGE_DB, else .kiln/lineage.db)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per network check (default 10)",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_doctor)
