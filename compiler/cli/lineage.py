"""`kiln runs | show | lineage | diff | rerun`: the lineage store on the command line.

`compiler/cli.py` calls `register(subparsers)`; each subcommand takes `--json` and
`--lineage-db URL` (else $KILN_LINEAGE_DB, else the `.kiln/lineage.db` beside the notebook or
in the nearest folder above that has one). Exit codes: 0 ok, 1 not found / refused / a rerun
whose outputs differ, 2 bad input (ambiguous prefix, unusable database URL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.lineage.defaults import ENV_URL, find_default_db
from compiler.model.costs import format_budget, format_cost
from compiler.model.units import format_bytes

if TYPE_CHECKING:
    from compiler.lineage.sqlite_reader import SqliteReader
    from compiler.lineage.store import LineageStore

EXIT_OK, EXIT_NOT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
SHORT = 12  # hex digits shown for digests and versions


class NoStore(LookupError):
    """No lineage database where we looked."""


def register(subparsers: Any) -> None:
    """Add the lineage subcommands to `kiln`'s subparsers."""
    p = subparsers.add_parser("runs", help="list recorded runs, newest first")
    p.add_argument("notebook", nargs="?", help="only this notebook's runs")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    _common(p, cmd_runs)

    p = subparsers.add_parser("show", help="one run: tasks, attempts, errors, artifacts, files")
    p.add_argument("run", help="run id or a unique prefix of one")
    _common(p, cmd_show)

    p = subparsers.add_parser(
        "lineage", help="which cells, parameters and inputs produced an output"
    )
    p.add_argument("target", help="a file a run wrote, an artifact digest (prefix), or TASK@RUN")
    _common(p, cmd_lineage)

    p = subparsers.add_parser("diff", help="what changed between two runs and which outputs differ")
    p.add_argument("run_a")
    p.add_argument("run_b")
    _common(p, cmd_diff)

    p = subparsers.add_parser(
        "rerun", help="rerun a recorded run without the cache and compare its outputs"
    )
    p.add_argument("run")
    p.add_argument(
        "--current-code",
        action="store_true",
        help="run the notebook as it is now even if its pipeline version changed",
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster")
    p.add_argument("--workers", type=int, metavar="N", help="local cluster: worker processes")
    _common(p, cmd_rerun)


def _common(parser: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument(
        "--lineage-db",
        metavar="URL",
        help=f"SQLAlchemy URL of the lineage store (default: ${ENV_URL}, else .kiln/lineage.db)",
    )
    parser.set_defaults(func=lambda args: _run(func, args))


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    # From the module without SQLAlchemy: `kiln metrics` may never import it.
    from compiler.lineage.errors import AmbiguousTarget, LineageNotFound, LineageStoreError

    try:
        return func(args)
    except (LineageNotFound, NoStore) as exc:
        print(f"kiln: {_message(exc)}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (AmbiguousTarget, LineageStoreError) as exc:
        print(f"kiln: {_message(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def _store_url(args: argparse.Namespace, near: str | Path | None = None) -> str | Path:
    """The URL named on the command line or in the environment, else the nearest
    `.kiln/lineage.db` from `near` (or the current folder) upwards, as a path."""
    url = args.lineage_db or os.environ.get(ENV_URL)
    if url:
        return str(url)
    start = Path(near) if near is not None else Path.cwd()
    while not start.exists() and start != start.parent:
        start = start.parent
    found = find_default_db(start)
    if found is None:
        raise NoStore(
            f"no lineage store found (.kiln/lineage.db in {start.resolve()} or above); "
            f"run a notebook first, or pass --lineage-db URL"
        )
    return found


def _open(args: argparse.Namespace, near: str | Path | None = None) -> LineageStore:
    """The store of `_store_url`, opened (and upgraded) with SQLAlchemy. Never creates one
    unless a URL names it."""
    from compiler.lineage.store import open_store

    url = _store_url(args, near)
    return open_store(url if isinstance(url, str) else f"sqlite:///{url}")


def _open_for_reading(
    args: argparse.Namespace, near: str | Path | None = None
) -> LineageStore | SqliteReader:
    """As `_open`, for commands that only read SQL text (compiler/lineage/history.py): a
    SQLite store at the newest revision is read with the standard library's sqlite3, which
    spares the process importing SQLAlchemy (0.3 s of a 0.5 s `kiln metrics`); any other
    store, or one to upgrade, is opened by `_open` as before."""
    from compiler.lineage.sqlite_reader import open_sqlite_reader, sqlite_file_of

    url = _store_url(args, near)
    path = url if isinstance(url, Path) else sqlite_file_of(url)
    reader = open_sqlite_reader(path) if path is not None else None
    return reader if reader is not None else _open(args, near)


def _mark_interrupted(store: LineageStore) -> None:
    """So that a crashed run is not shown as running; a store we may only read stays as is."""
    from compiler.lineage.liveness import mark_interrupted

    try:
        mark_interrupted(store)
    except Exception:
        pass


def _mark_flagged(store: LineageStore, listed: list[dict[str, Any]]) -> None:
    """`flagged` on each run: succeeded, but a warn: check failed or an input drifted."""
    from compiler.lineage.metrics import flagged_runs

    with store.reading() as connection:
        flagged = flagged_runs(connection, [r["run_id"] for r in listed])
    for run in listed:
        run["flagged"] = run["run_id"] in flagged


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=repr))


# -- runs ---------------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    from compiler.lineage.queries import list_runs

    try:
        store = _open(args, args.notebook)
    except NoStore:
        if args.json:
            _print_json([])
        else:
            print("no runs recorded")
        return EXIT_OK
    with store:
        _mark_interrupted(store)
        listed = list_runs(store, notebook=args.notebook, limit=args.limit)
        _mark_flagged(store, listed)
    if args.json:
        _print_json(listed)
        return EXIT_OK
    if not listed:
        print("no runs recorded" + (f" for {args.notebook}" if args.notebook else ""))
        return EXIT_OK
    rows = [
        ("run", "started (UTC)", "status", "owner", "pipeline", "version", "tasks", "parameters")
    ]
    for run in listed:
        over = (run.get("budget") or {}).get("over")
        rows.append(
            (
                run["run_id"],
                _when(run["started_at"]),
                run["status"]
                + ("·flagged" if run.get("flagged") else "")
                + (" (over budget)" if over else ""),
                run.get("owner") or "-",
                run["pipeline"],
                run["version"][:SHORT],
                ", ".join(f"{n} {s}" for s, n in sorted(run["tasks"].items())),
                _params(run["parameters"]),
            )
        )
    print(table(rows))
    return EXIT_OK


# -- show ---------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    from compiler.lineage.queries import show_run

    with _open(args) as store:
        _mark_interrupted(store)
        run = show_run(store, args.run)
        _mark_flagged(store, [run])
    if args.json:
        _print_json(run)
    else:
        print(render_run(run))
    return EXIT_OK


def render_run(run: Mapping[str, Any]) -> str:
    flagged = "·flagged" if run.get("flagged") else ""
    lines = [f"run {run['run_id']}  {run['status']}{flagged}"]
    if run.get("rerun_of"):
        lines.append(f"  rerun of    {run['rerun_of']}")
    pipeline = run["pipeline"]
    git = ""
    if run.get("git_commit"):
        git = f", git {run['git_commit'][:SHORT]}" + (
            " (notebook modified)" if run["git_dirty"] else ""
        )
    fields = [
        ("pipeline", f"{pipeline['name']}  version {pipeline['version']}"),
        ("notebook", f"{run['notebook_path']}  (sha256 {_short(run['notebook_digest'])}{git})"),
        ("started", f"{_when(run['started_at'])} UTC" + _took(run.get("duration"))),
        ("by", f"{run.get('user') or '?'}@{run.get('host') or '?'}  pid {run.get('pid')}"),
        ("python", run.get("python_version") or "?"),
        ("packages", ", ".join(f"{k} {v}" for k, v in sorted((run["packages"] or {}).items()))),
        ("scheduler", run.get("scheduler_address") or "-"),
        ("parameters", _params(run["parameters"]) or "-"),
        ("output nb", run.get("output_notebook") or "-"),
        (
            "owner",
            (run.get("owner") or "- (kiln owner set NOTEBOOK NAME)")
            + (f"  team {run['team']}" if run.get("team") else ""),
        ),
        ("cost", _cost_line(run.get("cost"))),
    ]
    if run.get("budget"):
        fields.append(("budget", format_budget(run["budget"])))
    if run.get("error"):
        fields.append(("error", run["error"]))
    lines += [f"  {k:<11} {v}" for k, v in fields]
    rows = [
        (
            "task",
            "status",
            "cache",
            "attempts",
            "duration",
            "peak memory",
            "cpu",
            "worker",
            "version",
        )
    ]
    for task in run["tasks"]:
        rows.append(
            (
                task["task"],
                task["status"],
                "hit" if task["cached"] else "-",
                str(task["attempts"]),
                "-" if task["duration"] is None else f"{task['duration']:.2f} s",
                format_bytes(task["peak_memory"]),
                _cpu(task),
                task["worker"] or "-",
                (task["version"] or "")[:SHORT],
            )
        )
    lines += ["", table(rows)]
    notes = []
    for task in run["tasks"]:
        for attempt in task["attempt_log"]:
            if attempt.get("status") == "failed" and attempt.get("error"):
                where = _cell(attempt.get("cell_index"), attempt.get("line"))
                retry = f"; {attempt['retry']}" if attempt.get("retry") else ""
                notes.append(
                    f"  {task['task']} attempt {attempt.get('attempt')}: "
                    f"{attempt['error']}{where}{retry}"
                )
        if task["error"] and not task["attempt_log"]:
            error = task["error"]
            notes.append(
                f"  {task['task']}: {error['message']}{_cell(error['cell_index'], error['line'])}"
            )
    if notes:
        lines += ["", "failed attempts:", *notes]
    # Two sizes, both labelled: Dask's in-memory estimate (sys.getsizeof for objects it does not
    # know, e.g. 56 B for a fitted model) and the bytes of the stored file.
    outputs = [
        (
            f"{t['task']}.{o['name']}",
            o["type"] or "-",
            format_bytes(o["size"]),
            format_bytes(o.get("stored_bytes")),
            _short(o["digest"]),
        )
        for t in run["tasks"]
        for o in t["outputs"]
    ]
    if outputs:
        header = ("output", "type", "in memory", "stored", "sha256")
        lines += ["", "outputs:", table([header, *outputs], "  ")]
    files = [
        (t["task"], verb, _rel(f["path"], run["notebook_path"]), _short(f["digest"]))
        for t in run["tasks"]
        for verb, key in (("reads", "reads"), ("wrote", "writes"))
        for f in t[key]
    ]
    if files:
        lines += ["", "files:", table([("task", "", "path", "sha256"), *files], "  ")]
    return "\n".join(lines)


def _cost_line(cost: Mapping[str, Any] | None) -> str:
    if not cost:
        return "-"
    line = format_cost(cost, cost.get("money"))
    saved = cost.get("saved")
    if saved:
        line += f"; the cache saved {format_cost(saved, cost.get('saved_money'))}"
    return line


def _cpu(task: Mapping[str, Any]) -> str:
    if task.get("cost"):
        return f"{float(task['cost'].get('cpu_s') or 0):.2f} s"
    if task.get("cost_saved"):
        return f"saved {float(task['cost_saved'].get('cpu_s') or 0):.2f} s"
    return "-"


# -- lineage ------------------------------------------------------------------------------------


def cmd_lineage(args: argparse.Namespace) -> int:
    from compiler.lineage.queries import lineage

    near = Path(args.target) if not args.lineage_db else None
    if near is not None and "@" in args.target:
        near = None
    with _open(args, near.parent if near is not None else None) as store:
        found = lineage(store, args.target)
    if args.json:
        _print_json(found)
    else:
        print(render_lineage(found))
    return EXIT_OK


def render_lineage(found: Mapping[str, Any]) -> str:
    target, run = found["target"], found["run"]
    notebook = run["notebook_path"]
    lines = []
    if target["kind"] == "file":
        lines.append(f"{target['path']}")
        lines.append(
            f"  sha256 {_short(target['digest'])}, written by task {target['task']} "
            f"in run {target['run_id']}"
        )
        if not target["current_matches"]:
            lines.append(
                f"  note: the file changed since (now sha256 {_short(target['current_digest'])})"
            )
    elif target["kind"] == "artifact":
        summary = _summary(target.get("summary"))
        lines.append(f"artifact {target['digest']}")
        lines.append(
            f"  {target['name']} = {target['type']}{summary}, {format_bytes(target['size'])}; "
            f"output of task {target['task']} in run {target['run_id']}"
        )
    else:
        lines.append(f"task {target['task']} in run {target['run_id']}")
    lines.append(
        f"  run {run['run_id']} {run['status']}, {_when(run['started_at'])} UTC; "
        f"pipeline {found['pipeline']['name']} version {found['pipeline']['version'][:SHORT]}"
    )
    if run.get("git_commit"):
        dirty = " (notebook modified)" if run.get("git_dirty") else ""
        lines.append(f"  git {run['git_commit'][:SHORT]}{dirty}")
    lines.append(f"  notebook {notebook}")
    lines.append(f"parameters: {_params(found['parameters']) or 'none'}")
    files = [
        f"{_rel(f['path'], notebook)} (sha256 {_short(f['digest'])})" for f in found["input_files"]
    ]
    lines.append(f"input files: {', '.join(files) or 'none'}")
    lines.append("")
    _tree_lines(found["tree"], "", "", lines, notebook)
    return "\n".join(lines)


def _tree_lines(
    node: Mapping[str, Any], lead: str, indent: str, lines: list[str], notebook: str
) -> None:
    via = node.get("via")
    label = ""
    if via:
        label = ", ".join(v["name"] for v in via) + " \u2190 "
    elif via is not None:
        label = "(after) "
    if node.get("see_above"):
        lines.append(f"{lead}{label}{node['task']} (see above)")
        return
    status = node["status"] or "?"
    if node.get("cached"):
        origin = node.get("computed_in_run")
        status = f"cached (computed in run {origin})" if origin else "cached"
    lines.append(
        f"{lead}{label}{node['task']}  {status}  version {(node['version'] or '')[:SHORT]}"
    )
    children = node.get("inputs") or []
    detail = indent + ("\u2502   " if children else "    ")
    cells = ", ".join(f"[{c['index']}] {c['id']}" for c in node["cells"])
    lines.append(f"{detail}cells: {cells or '-'}")
    if node["parameters"]:
        lines.append(f"{detail}parameters: {_params(node['parameters'])}")
    for read in node["reads"]:
        lines.append(
            f"{detail}reads: {_rel(read['path'], notebook)} (sha256 {_short(read['digest'])})"
        )
    for i, child in enumerate(children):
        last = i == len(children) - 1
        _tree_lines(
            child,
            indent + ("\u2514\u2500\u2500 " if last else "\u251c\u2500\u2500 "),
            indent + ("    " if last else "\u2502   "),
            lines,
            notebook,
        )


# -- diff ---------------------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    from compiler.lineage.metrics import metrics_diff
    from compiler.lineage.queries import diff_runs

    with _open(args) as store:
        diff = diff_runs(store, args.run_a, args.run_b)
        diff.update(metrics_diff(store, diff["run_a"], diff["run_b"]))
    if args.json:
        _print_json(diff)
    else:
        print(render_diff(diff))
    return EXIT_OK


def render_diff(diff: Mapping[str, Any]) -> str:
    pipeline = diff["pipeline"]
    version = (
        f"version {pipeline['a'][:SHORT]} (unchanged)"
        if pipeline["a"] == pipeline["b"]
        else f"version {pipeline['a'][:SHORT]} -> {pipeline['b'][:SHORT]}"
    )
    lines = [f"run {diff['run_a']} -> run {diff['run_b']}  ({pipeline['name']}, {version})"]
    lines.append(f"code changed: {', '.join(diff['code_changed']) or 'none'}")
    if diff["upstream_changed"]:
        lines.append(f"  new versions downstream of it: {', '.join(diff['upstream_changed'])}")
    if diff["tasks_added"]:
        lines.append(f"tasks added: {', '.join(diff['tasks_added'])}")
    if diff["tasks_removed"]:
        lines.append(f"tasks removed: {', '.join(diff['tasks_removed'])}")
    if diff.get("tasks_renamed"):
        renames = [f"{r['a']} -> {r['b']}" for r in diff["tasks_renamed"]]
        lines.append(f"tasks renamed: {', '.join(renames)}")
    params = [f"{p['name']}: {_value(p['a'])} -> {_value(p['b'])}" for p in diff["parameters"]]
    lines.append(f"parameters: {'; '.join(params) or 'unchanged'}")
    notebook = diff.get("notebook_path")
    files = [
        f"{_rel(f['path'], notebook)}: {_short(f['a'])} -> {_short(f['b'])}"
        for f in diff["input_files"]
    ]
    lines.append(f"input files: {'; '.join(files) or 'unchanged'}")
    if diff["outputs"] or diff["output_files"]:
        lines.append("outputs that differ:")
        for o in diff["outputs"]:
            lines.append(f"  {o['task']}.{o['output']}  {_short(o['a'])} -> {_short(o['b'])}")
        for f in diff["output_files"]:
            lines.append(f"  {_rel(f['path'], notebook)}  {_short(f['a'])} -> {_short(f['b'])}")
    else:
        lines.append("outputs that differ: none")
    lines += render_metrics_diff(diff)
    return "\n".join(lines)


def render_metrics_diff(diff: Mapping[str, Any]) -> list[str]:
    """The metrics and input drift part of `kiln diff` (lineage/metrics.metrics_diff)."""
    lines: list[str] = []

    def shown(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else _value(v)

    changes = [
        f"{m['name']}: {shown(m['a'])} -> {shown(m['b'])}"
        for m in diff.get("metrics") or []
        if m["a"] != m["b"]
    ]
    if diff.get("metrics"):
        lines.append(f"metrics: {'; '.join(changes) or 'unchanged'}")
    drifted = [d for d in diff.get("drift") or [] if d["drifted"]]
    if diff.get("drift"):
        inputs = []
        for d in drifted:
            columns = ", ".join(f"{c} {d['scores'][c]:.3g}" for c in d["drifted"][:5])
            inputs.append(f"{d['input']} ({columns})")
        lines.append(f"inputs drifted: {'; '.join(inputs) or 'none'}")
    return lines


# -- rerun --------------------------------------------------------------------------------------


def cmd_rerun(args: argparse.Namespace) -> int:
    # Here, not in _run: importing ops.rerun imports the runner (~0.13 s of CPU here), which
    # every other lineage command (`kiln runs`, `kiln metrics`) paid at start-up for nothing.
    from compiler.ops.rerun import RerunRefused, rerun

    with _open(args) as store:
        progress = None if args.json else _progress
        try:
            report = rerun(
                store,
                args.run,
                current_code=args.current_code,
                scheduler=args.scheduler,
                workers=args.workers,
                on_event=progress,
            )
        except RerunRefused as exc:
            print(f"kiln: {_message(exc)}", file=sys.stderr)
            return EXIT_NOT_FOUND
    if args.json:
        _print_json(report.to_dict())
    else:
        rows = [("task", "output", "original", "rerun", "")]
        for c in report.comparisons:
            rows.append(
                (
                    c.task,
                    _rel(c.output, report.notebook_path) if c.kind == "file" else c.output,
                    _short(c.original),
                    _short(c.rerun),
                    "equal" if c.equal else "DIFFERS",
                )
            )
        print(f"rerun of run {report.original_run_id} as run {report.run_id}: {report.status}")
        print(table(rows))
        same = sum(c.equal for c in report.comparisons)
        print(f"\n{same} of {len(report.comparisons)} outputs have the original digest")
    return EXIT_OK if report.all_equal else EXIT_NOT_FOUND


def _progress(event: Mapping[str, Any]) -> None:
    if event.get("type") == "task" and event.get("status") in ("done", "failed", "retrying"):
        print(f"  {event['task']}: {event['status']}", file=sys.stderr, flush=True)


# -- formatting ---------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    out = [
        indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    out.insert(1, indent + "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _short(digest: str | None) -> str:
    return "-" if not digest else digest[:SHORT]


def _when(iso: str | None) -> str:
    return "-" if not iso else iso.replace("T", " ").removesuffix("+00:00")


def _took(seconds: float | None) -> str:
    return "" if seconds is None else f"  ({seconds:.1f} s)"


def _value(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, default=repr)


def _params(parameters: Mapping[str, Any] | None) -> str:
    return ", ".join(
        f"{k}={json.dumps(v, default=repr)}" for k, v in sorted((parameters or {}).items())
    )


def _cell(index: int | None, line: int | None) -> str:
    if index is None:
        return " (setup)" if line is not None else ""
    return f" (cell {index}" + (f", line {line})" if line is not None else ")")


def _summary(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return ""
    return " (" + ", ".join(f"{k} {v}" for k, v in summary.items()) + ")"


def _rel(path: str, notebook: str | None) -> str:
    """Paths beside the notebook are shown relative to its folder, as the notebook wrote them."""
    if notebook:
        folder = str(Path(notebook).parent)
        if path.startswith(folder + os.sep):
            return path[len(folder) + 1 :]
    return path
