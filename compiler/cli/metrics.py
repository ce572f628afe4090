"""`kiln metrics NOTEBOOK`, `kiln drift RUN`, `kiln baseline set RUN`: metrics across runs.

Exit codes as the other lineage commands: 0 ok, 1 not found, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from compiler.cli.lineage import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    _common,
    _open,
    _open_for_reading,
    _print_json,
    table,
)

SPARKS = "▁▂▃▄▅▆▇█"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "metrics", help="a notebook's metrics across its last runs, with check verdicts"
    )
    p.add_argument("notebook")
    p.add_argument("-n", "--limit", type=int, default=10, help="how many runs (default 10)")
    _common(p, cmd_metrics)

    p = subparsers.add_parser("drift", help="how a run's tabular inputs drifted, per column")
    p.add_argument("run", help="run id or a unique prefix of one")
    p.add_argument("--against", metavar="RUN", help="compare with this run (default: baseline)")
    p.add_argument("--all", action="store_true", help="list every column, not only drifted ones")
    _common(p, cmd_drift)

    p = subparsers.add_parser("baseline", help="pin the run that later runs are compared with")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    q = verbs.add_parser("set", help="pin RUN as its notebook's baseline")
    q.add_argument("run", help="run id or a unique prefix of one")
    _common(q, cmd_baseline_set)


# -- kiln metrics ---------------------------------------------------------------------------


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "-"
    return f"{value:.4g}"


def _change(value: Any, before: Any) -> str:
    if before is None:
        return ""
    if type(value) is float and type(before) is float:  # nearly every cell: the short way
        delta = value - before
        return " (=)" if delta == 0 else f" ({'+' if delta > 0 else '-'}{abs(delta):.3g})"
    if isinstance(value, bool) or isinstance(before, bool):
        return "" if value == before or before is None else " (changed)"
    if value is None or before is None:
        return ""
    delta = value - before
    if delta == 0:
        return " (=)"
    return f" ({'+' if delta > 0 else '-'}{abs(delta):.3g})"


def run_status(run: Mapping[str, Any]) -> str:
    if run["status"] == "succeeded" and run.get("flagged"):
        return "succeeded·flagged"
    return str(run["status"])


def _verdict_cell(verdicts: Sequence[Mapping[str, Any]]) -> str:
    if not verdicts:
        return "-"
    bad = [v for v in verdicts if not v["passed"]]
    if not bad:
        return f"{len(verdicts)} passed"
    parts = []
    for v in bad:
        if v["kind"] == "drift":
            drifted = v.get("drifted_columns") or []
            cols = ", ".join(drifted[:3]) + (f" +{len(drifted) - 3}" if len(drifted) > 3 else "")
            parts.append(f"drift {v['subject']} ({cols})")
        else:
            parts.append(f"{v['kind']} {v.get('tag') or v['subject']} failed")
    return "; ".join(parts)


def sparkline(values: Sequence[float | None]) -> str:
    """One character per run, scaled between the lowest and highest value; ' ' for none."""
    numbers = [v for v in values if v is not None]
    if not numbers:
        return ""
    low, high = min(numbers), max(numbers)
    span = high - low
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARKS[int((v - low) / span * (len(SPARKS) - 1)) if span else 3])
    return "".join(out)


def render_metrics(history: Mapping[str, Any]) -> str:
    runs = history["runs"]
    names = history["metrics"]
    baseline = history.get("baseline") or {}
    if not runs:
        return f"{history['notebook_path']}: no runs recorded"
    header = ["run", "started", "status", *names, "verdicts"]
    rows: list[list[str]] = [header]
    previous: dict[str, Any] = {}
    for run in runs:
        mark = " (baseline)" if run["run_id"] == baseline.get("run_id") else ""
        cells = [run["run_id"][:12] + mark, (run["started_at"] or "")[:16].replace("T", " ")]
        cells.append(run_status(run))
        metrics = run["metrics"]
        for name in names:
            value = metrics.get(name)
            cells.append(_number(value) + _change(value, previous.get(name)))
        cells.append(_verdict_cell(run["verdicts"]))
        previous.update(metrics)  # each metric's last value so far
        rows.append(cells)
    pinned = " (pinned)" if baseline.get("pinned") else " (last succeeded run)"
    lines = [
        f"{history['notebook_path']}: last {len(runs)} run(s); baseline "
        + (f"{baseline['run_id'][:12]}{pinned}" if baseline else "none"),
        table(rows),
    ]
    if names:
        lines.append("")
        lines.append("trend (oldest -> newest)")
        width = max(len(n) for n in names)
        for name in names:
            values = [_as_float(r["metrics"].get(name)) for r in runs]
            numbers = [v for v in values if v is not None]
            span = f"{_number(min(numbers))} .. {_number(max(numbers))}" if numbers else "-"
            lines.append(f"  {name.ljust(width)}  {sparkline(values)}  {span}")
    failing = [
        (run["run_id"], v)
        for run in runs[-1:]
        for v in run["verdicts"]
        if not v["passed"] and v.get("message")
    ]
    for run_id, v in failing:
        lines.append(f"run {run_id[:12]}: {v['message']}")
    return "\n".join(lines)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def cmd_metrics(args: argparse.Namespace) -> int:
    from compiler.lineage.history import metrics_history  # SQL text: no SQLAlchemy import

    if args.limit < 1:
        print("kiln: -n must be 1 or more", file=sys.stderr)
        return EXIT_BAD_INPUT
    with _open_for_reading(args, near=args.notebook) as store:
        history = metrics_history(store, args.notebook, args.limit)
    if args.json:
        _print_json(history)
    else:
        print(render_metrics(history))
    return EXIT_OK


# -- kiln drift -----------------------------------------------------------------------------


def render_drift(found: Mapping[str, Any], every_column: bool = False) -> str:
    lines = [f"run {found['run_id']} against run {found['against']}"]
    if not found["inputs"]:
        lines.append("no tabular inputs were profiled in this run")
    for item in found["inputs"]:
        if not item.get("compared"):
            lines.append(f"{item['input']}: not in run {found['against'][:12]}; not compared")
            continue
        drifted = item["drifted"]
        state = f"DRIFTED ({len(drifted)} column(s))" if drifted else "no drift"
        lines.append(
            f"{item['input']}: {state}, limit {item['threshold']:g}, "
            f"rows {item['rows'][1]} -> {item['rows'][0]}"
        )
        shown = list(item["columns"]) if every_column else drifted
        rows = [["  column", "score", "test", "p-value"]]
        for name in shown:
            c = item["columns"][name]
            rows.append([f"  {name}", _number(c["score"]), c["test"], _number(c["p_value"])])
        if len(rows) > 1:
            lines.append(table(rows))
    return "\n".join(lines)


def cmd_drift(args: argparse.Namespace) -> int:
    from compiler.lineage.metrics import run_drift

    with _open(args) as store:
        found = run_drift(store, args.run, args.against)
    if args.json:
        _print_json(found)
    else:
        print(render_drift(found, args.all))
    return EXIT_OK


def cmd_baseline_set(args: argparse.Namespace) -> int:
    from compiler.lineage.metrics import set_baseline

    with _open(args) as store:
        done = set_baseline(store, args.run)
    if args.json:
        _print_json(done)
    else:
        replaced = f" (was {done['replaced']})" if done["replaced"] else ""
        print(f"baseline of {done['notebook_path']}: run {done['run_id']}{replaced}")
    return EXIT_OK
