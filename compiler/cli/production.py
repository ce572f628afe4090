"""`kiln owner|budget|alert|cost|promote|rollback`: production settings from the command line.

    kiln owner set report.ipynb "Ana Lima" --team analytics
    kiln budget set report.ipynb "0.50 fail"
    kiln alert add report.ipynb --email ana@example.com --on failed,late,recovered
    kiln alert add report.ipynb --webhook '${SLACK_WEBHOOK_URL}'
    kiln alert list [report.ipynb] [--json]
    kiln alert remove ID
    kiln alert test report.ipynb
    kiln cost report.ipynb [-n 10] [--json]      kiln cost --price cpu_hour=0.048 gb_hour=0.005
    kiln promote report.ipynb [--version V] [--schedule NAME]
    kiln rollback nightly [--to-last-good]

The database is the one given by `--lineage-db`, else $KILN_LINEAGE_DB, else `.kiln/lineage.db`
beside the notebook (or the nearest one above the current folder). Imports are made inside the
commands: the parser is built for every `kiln` command and must stay cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from compiler.cli.schedule import open_store_for

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else text)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


# -- owner, budget ------------------------------------------------------------------------------


def cmd_owner_set(args: argparse.Namespace) -> int:
    from compiler.compile.owners import set_owner

    found = set_owner(args.notebook, args.name, args.team)
    team = f" (team {found['team']})" if found["team"] else ""
    _out(args, found, f"{args.notebook}: owner {found['owner']}{team}")
    return EXIT_OK


def cmd_owner_show(args: argparse.Namespace) -> int:
    from compiler.compile.owners import read_production

    found = read_production(args.notebook)
    text = f"{args.notebook}: owner {found['owner'] or '- (kiln owner set NOTEBOOK NAME)'}"
    if found["team"]:
        text += f", team {found['team']}"
    if found["budget"]:
        text += f", budget {found['budget']}"
    _out(args, found, text)
    return EXIT_OK


def cmd_budget_set(args: argparse.Namespace) -> int:
    from compiler.compile.owners import set_budget

    found = set_budget(args.notebook, args.budget or None)
    _out(args, found, f"{args.notebook}: budget {found['budget'] or 'none'}")
    return EXIT_OK


# -- alerts -----------------------------------------------------------------------------------


def cmd_alert_add(args: argparse.Namespace) -> int:
    from compiler.lineage.alerts import add_route

    kind, target = next(
        (k, v)
        for k, v in (("email", args.email), ("webhook", args.webhook), ("apprise", args.apprise))
        if v
    )
    notebook = None if args.schedule else args.notebook
    with open_store_for(args, args.notebook) as store:
        if args.schedule:
            from compiler.schedule.scheduler import get_schedule

            get_schedule(store, args.schedule)
        route = add_route(
            store,
            kind=kind,
            target=target,
            notebook=notebook,
            schedule=args.schedule,
            events=args.on,
        )
    _out(args, route.to_dict(), f"added {route.describe()} for {', '.join(route.events)}")
    return EXIT_OK


def cmd_alert_list(args: argparse.Namespace) -> int:
    from compiler.lineage.alerts import list_routes

    with open_store_for(args, args.notebook) as store:
        routes = list_routes(store, notebook=args.notebook)
    rows = [("id", "kind", "target", "events", "for")]
    for r in routes:
        scope = f"schedule {r.schedule}" if r.schedule else str(r.notebook)
        rows.append((str(r.id), r.kind, r.target, ",".join(r.events), scope))
    _out(args, [r.to_dict() for r in routes], _table(rows) if routes else "no alert routes")
    return EXIT_OK


def cmd_alert_remove(args: argparse.Namespace) -> int:
    from compiler.lineage.alerts import remove_route

    with open_store_for(args, args.notebook) as store:
        route = remove_route(store, args.id)
    _out(args, route.to_dict(), f"removed {route.describe()}")
    return EXIT_OK


def cmd_alert_test(args: argparse.Namespace) -> int:
    from compiler.compile.owners import read_production
    from compiler.lineage.alerts import test_alert

    owner = read_production(args.notebook)
    with open_store_for(args, args.notebook) as store:
        results = test_alert(store, args.notebook, owner["owner"], owner["team"])
    if not results:
        print(
            f"{args.notebook} has no alert routes (kiln alert add {args.notebook} --email ADDRESS)"
        )
        return EXIT_FAILED
    lines = [
        f"route {r['route']} ({r['kind']} {r['target']}): "
        + ("sent" if r["error"] is None else f"FAILED: {r['error']}")
        for r in results
    ]
    _out(args, results, "\n".join(lines))
    return EXIT_OK if all(r["error"] is None for r in results) else EXIT_FAILED


# -- cost -------------------------------------------------------------------------------------


def cmd_cost(args: argparse.Namespace) -> int:
    from compiler.lineage.billing import cost_report, set_prices
    from compiler.model.costs import format_budget, format_cost

    if args.price:
        changes: dict[str, float] = {}
        for item in args.price:
            key, _, value = item.partition("=")
            try:
                changes[key.strip().replace("-", "_")] = float(value)
            except ValueError:
                raise ValueError(
                    f"--price {item!r}: write NAME=AMOUNT, e.g. cpu_hour=0.048"
                ) from None
        with open_store_for(args, args.notebook) as store:
            prices = set_prices(store, changes)
        _out(args, prices, "prices: " + ", ".join(f"{k} {v:g}" for k, v in prices.items()))
        if not args.notebook:
            return EXIT_OK
    if not args.notebook:
        raise ValueError("name a notebook (kiln cost NOTEBOOK) or set prices with --price")
    with open_store_for(args, args.notebook) as store:
        report = cost_report(store, args.notebook, limit=args.limit)
    if args.json:
        _out(args, report, "")
        return EXIT_OK
    if not report["runs"]:
        print(f"no runs recorded for {args.notebook}")
        return EXIT_OK
    rows = [("run", "started (UTC)", "status", "cost", "cache saved")]
    for run in report["runs"]:
        rows.append(
            (
                run["run_id"],
                (run["started_at"] or "")[:19].replace("T", " "),
                run["status"] + (" OVER BUDGET" if (run["budget"] or {}).get("over") else ""),
                format_cost(run["cost"], run["money"]),
                format_cost(run["saved"], run["saved_money"]) if run["saved"] else "-",
            )
        )
    lines = [_table(rows)]
    latest = report["runs"][0]
    task_rows = [("task", "status", "cost")]
    for task in latest["tasks"]:
        shown = format_cost(task["cost"], task["money"])
        if task["cached"]:
            shown = "cache hit; saved " + format_cost(task["cost_saved"])
        task_rows.append((task["task"], task["status"], shown))
    lines += ["", f"tasks of run {latest['run_id']}:", _table(task_rows)]
    if latest["budget"]:
        lines.append(format_budget(latest["budget"]))
    if report["trend"] and report["trend"]["ratio"] is not None:
        t = report["trend"]
        lines.append(
            f"trend: latest {t['latest_cpu_s']:.2f} CPU-s, {t['ratio']:.2f}x the median "
            f"{t['median_cpu_s_before']:.2f} CPU-s of the runs before"
        )
    if not any(report["prices"].values()):
        lines.append("(no prices set: resources only; kiln cost --price cpu_hour=AMOUNT ...)")
    print("\n".join(lines))
    return EXIT_OK


# -- promotion --------------------------------------------------------------------------------


def cmd_promote(args: argparse.Namespace) -> int:
    from compiler.ops.promotion import promote

    with open_store_for(args, args.notebook) as store:
        done = promote(store, args.notebook, version=args.version, schedule=args.schedule)
    lines = [
        f"schedule {p.schedule}: now runs version {p.version} ({p.bundle_path})"
        + (f", was {p.previous_version}" if p.previous_version else ", was the live notebook")
        for p in done
    ]
    _out(args, [p.to_dict() for p in done], "\n".join(lines))
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from compiler.ops.promotion import rollback

    with open_store_for(args) as store:
        done = rollback(store, args.schedule, to_last_good=args.to_last_good)
    _out(
        args,
        done.to_dict(),
        f"schedule {done.schedule}: rolled back to version {done.version} "
        f"(from {done.previous_version})",
    )
    return EXIT_OK


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from compiler.lineage.store import LineageStoreError

        try:
            return int(func(args))
        except (ValueError, LineageStoreError) as exc:  # every *Error here is a ValueError
            print(f"kiln: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return run


def register(subparsers: Any) -> None:
    def common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
        p.add_argument("--lineage-db", metavar="URL", help="the lineage database")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")

    owner = subparsers.add_parser("owner", help="who answers for a notebook in production")
    sub = owner.add_subparsers(dest="owner_command", required=True, metavar="ACTION")
    p = sub.add_parser("set", help="name the owner (notebook metadata kiln.owner)")
    p.add_argument("notebook")
    p.add_argument("name")
    p.add_argument("--team")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded(cmd_owner_set))
    p = sub.add_parser("show", help="print the owner, team and budget")
    p.add_argument("notebook")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded(cmd_owner_show))

    budget = subparsers.add_parser("budget", help="what a notebook's run may spend")
    sub = budget.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    p = sub.add_parser("set", help="'0.50', '120cpu-s', '50gb-s' or '3600gpu-s', + ' fail'")
    p.add_argument("notebook")
    p.add_argument("budget", help="the budget; '' removes it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded(cmd_budget_set))

    alert = subparsers.add_parser("alert", help="who is told when a pipeline needs a person")
    sub = alert.add_subparsers(dest="alert_command", required=True, metavar="ACTION")
    p = sub.add_parser("add", help="add a route: --email, --webhook or --apprise")
    p.add_argument("notebook")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--email", metavar="ADDRESS", help="sent through $KILN_SMTP_URL")
    target.add_argument("--webhook", metavar="URL", help="Slack-compatible JSON POST")
    target.add_argument("--apprise", metavar="URL", help="any apprise URL")
    p.add_argument(
        "--on",
        metavar="EVENTS",
        help="comma-separated: failed,check,drift,late,slow,recovered (default: all but slow)",
    )
    p.add_argument("--schedule", metavar="NAME", help="the route belongs to this schedule")
    common(p)
    p.set_defaults(func=_guarded(cmd_alert_add))
    p = sub.add_parser("list", help="list routes")
    p.add_argument("notebook", nargs="?")
    common(p)
    p.set_defaults(func=_guarded(cmd_alert_list))
    p = sub.add_parser("remove", help="remove a route by its id (kiln alert list)")
    p.add_argument("id", type=int)
    p.add_argument("--notebook", help="the notebook whose database holds the route")
    common(p)
    p.set_defaults(func=_guarded(cmd_alert_remove))
    p = sub.add_parser("test", help="send a test message to every route of a notebook")
    p.add_argument("notebook")
    common(p)
    p.set_defaults(func=_guarded(cmd_alert_test))

    p = subparsers.add_parser("cost", help="what a notebook's runs cost, per run and per task")
    p.add_argument("notebook", nargs="?")
    p.add_argument("-n", "--limit", type=int, default=10, help="runs to show (default 10)")
    p.add_argument(
        "--price",
        nargs="+",
        metavar="NAME=AMOUNT",
        help="set prices: cpu_hour, gb_hour, gpu_hour (money per hour; default 0)",
    )
    common(p)
    p.set_defaults(func=_guarded(cmd_cost))

    p = subparsers.add_parser("promote", help="make a bundle version what the schedules run")
    p.add_argument("notebook")
    p.add_argument("--version", help="an exported bundle version (default: export now)")
    p.add_argument("--schedule", metavar="NAME", help="only this schedule of the notebook")
    common(p)
    p.set_defaults(func=_guarded(cmd_promote))

    p = subparsers.add_parser("rollback", help="a schedule goes back to its previous version")
    p.add_argument("schedule")
    p.add_argument(
        "--to-last-good", action="store_true", help="the last version with a successful run"
    )
    common(p)
    p.set_defaults(func=_guarded(cmd_rollback))
