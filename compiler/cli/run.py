"""`kiln run`: options, live progress on stderr, and the closing table (or JSON) on stdout.

`compiler/cli/main.py` adds the NOTEBOOK argument, compiles the notebook, then calls
`run_command`.
Exit codes: 0 every task succeeded (done or cached), 1 the run failed, 2 the run could not start
(bad parameter, unknown task in --force, resources no worker has, no cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from compiler.cli.run_options import add_run_arguments as add_run_arguments
from compiler.model.costs import add_costs, format_cost
from compiler.model.statuses import TaskStatus
from compiler.model.units import format_bytes
from compiler.runtime.cluster import LocalClusterStart, ResourceUnavailable
from compiler.runtime.results import RunResult

# compiler.ops.run (and with it SQLAlchemy, the lineage store, the runtime driver) is imported
# when a run starts, not when the parser is built: a cold `kiln run` starts its cluster first.

EXIT_OK, EXIT_FAILED, EXIT_NOT_STARTED = 0, 1, 2


# -- progress ----------------------------------------------------------------------------------

# How the progress display says a status, where it differs from the status itself.
_STATUS_WORDS: dict[str, str] = {
    TaskStatus.FAILED: "FAILED",
    TaskStatus.UPSTREAM_FAILED: "skipped (upstream failed)",
}


def _task_line(event: Mapping[str, Any]) -> str:
    status = str(event["status"])
    text = f"{event['task']}: {_STATUS_WORDS.get(status, status)}"
    if status == "running" and event.get("attempt", 1) > 1:
        text += f" (attempt {event['attempt']})"
    if status == "done" and event.get("duration") is not None:
        text += f" in {event['duration']:.2f} s"
    if status == "done" and event.get("cache_error"):
        text += f" (not cached: {event['cache_error']})"
    if status == "retrying" and event.get("reason"):
        error = event.get("error") or {}
        text += f": {error.get('ename')}: {error.get('evalue')}; {event['reason']}"
    if status == "failed" and event.get("error"):
        text += f": {_error_summary(event['error'])}"
    return text


def _error_summary(error: Mapping[str, Any]) -> str:
    where = "setup" if error.get("cell_index") is None else f"cell {error['cell_index']}"
    if error.get("line") is not None:
        where += f", line {error['line']}"
    return f"{error.get('ename')}: {error.get('evalue')} ({where})"


class ProgressDisplay:
    """Task progress on a stream. On a terminal, one line per task redrawn in place; otherwise
    one plain line per status change (logs, CI)."""

    def __init__(self, stream: TextIO, live: bool | None = None):
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.lines: dict[str, str] = {}
        self._drawn = 0

    def __call__(self, event: Mapping[str, Any]) -> None:
        if event.get("type") == "run":
            self._run_event(event)
        elif event.get("type") == "task":
            line = _task_line(event)
            self.lines[str(event["task"])] = line
            if self.live and self._fits():
                self._redraw()
            elif event["status"] != "waiting":
                print(f"  {line}", file=self.stream, flush=True)
            for warning in event.get("warnings") or []:
                # A value changed in place that the run re-exported: said once, with the fix.
                print(f"kiln: warning: {warning['message']}", file=self.stream, flush=True)
                self._drawn = 0

    def _run_event(self, event: Mapping[str, Any]) -> None:
        if event["status"] == "started":
            print(f"kiln: run {event['run_id']} started", file=self.stream)
            if event.get("dashboard"):
                print(f"kiln: Dask dashboard: {event['dashboard']}", file=self.stream)
        else:
            print(f"kiln: run {event['run_id']} {event['status']}", file=self.stream)
        self.stream.flush()
        self._drawn = 0

    def _fits(self) -> bool:
        return len(self.lines) < shutil.get_terminal_size((80, 24)).lines - 2

    def _redraw(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")  # back to the first task line
        for line in self.lines.values():
            self.stream.write("\x1b[2K  " + line[: width - 3] + "\n")
        self._drawn = len(self.lines)
        self.stream.flush()


# -- the summary -------------------------------------------------------------------------------


def summary_table(result: RunResult) -> str:
    rows = [("task", "status", "duration", "cache", "attempts", "peak memory")]
    for task in result.tasks:
        rows.append(
            (
                task.name,
                task.status,
                "-" if task.duration is None else f"{task.duration:.2f} s",
                "hit" if task.cached else "-",
                str(task.attempts),
                format_bytes(task.peak_memory),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    spent = add_costs(t.cost for t in result.tasks)
    saved = add_costs(t.cost_saved for t in result.tasks if t.cached)
    if spent or saved:
        line = f"cost: {format_cost(spent)}" if spent else "cost: nothing computed"
        lines.append(line + (f"; the cache saved {format_cost(saved)}" if saved else ""))
    return "\n".join(lines)


def summary_json(result: RunResult) -> dict[str, Any]:
    """What `--json` prints: the run and every task (full records under `tasks`)."""
    return result.to_dict()


def _print_failures(result: RunResult, stream: TextIO) -> None:
    for task in result.tasks:
        if task.status == "failed" and task.error:
            print(f"\ntask {task.name} failed: {_error_summary(task.error)}", file=stream)
            for chunk in task.error.get("traceback") or []:
                print(chunk.rstrip("\n"), file=stream)


def _print_monitoring(result: RunResult, stream: TextIO) -> None:
    """Metric warnings, then every verdict that did not pass (checks first: they fail the run)."""
    for task in result.tasks:
        for warning in task.metric_warnings:
            print(f"kiln: warning: {warning}", file=stream)
    if result.metrics:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:8])
        more = len(result.metrics) - 8
        print(f"kiln: metrics: {shown}" + (f" and {more} more" if more > 0 else ""), file=stream)
    order = {"check": 0, "warn": 1, "drift": 2}
    for v in sorted(result.verdicts, key=lambda v: order.get(v["kind"], 3)):
        if not v["passed"]:
            print(f"kiln: {v['message']}", file=stream)


def early_cluster(args: argparse.Namespace, must_compile: bool) -> LocalClusterStart | None:
    """Start the run's own local cluster now, before compiling, when tasks will surely run and
    no cluster is configured: the notebook must be compiled (it changed since its last run, or
    never ran), or --no-cache / --force. An unchanged notebook plans first and starts no
    cluster when every task is cached (`kiln run` again: no Dask at all)."""
    if args.scheduler or getattr(args, "scheduler_file", None):
        return None
    if not (must_compile or args.no_cache or args.force):
        return None
    from compiler.runtime.cluster import configured_scheduler_address, warm_cluster_address

    if configured_scheduler_address(None) or warm_cluster_address():
        return None
    return LocalClusterStart(args.workers)


def run_command(
    args: argparse.Namespace,
    spec: Mapping[str, Any],
    notebook_path: Any,
    cluster_start: LocalClusterStart | None = None,
) -> int:
    """Run a compiled spec as `kiln run` does (through compiler.ops.run); the exit code.
    `cluster_start`: the run's local cluster, already starting (see `early_cluster`)."""
    try:
        return _run_command(args, spec, notebook_path, cluster_start)
    finally:
        if cluster_start is not None:
            # The run did not take it: refused before it started (bad parameters), and the
            # message is shown without waiting for the cluster to come up.
            cluster_start.discard(wait=False)


def _run_command(
    args: argparse.Namespace,
    spec: Mapping[str, Any],
    notebook_path: Any,
    cluster_start: LocalClusterStart | None,
) -> int:
    from compiler.ops.run import RunRefused, prepare_run, run_notebook

    try:
        prepared = prepare_run(
            Path(notebook_path), spec=spec, raw_parameters=dict(args.parameters or [])
        )
    except RunRefused as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    scheduler = args.scheduler
    scheduler_file = getattr(args, "scheduler_file", None)
    if not scheduler and scheduler_file:
        from compiler.runtime.warm import live_scheduler_address

        scheduler = live_scheduler_address(Path(scheduler_file))
        if scheduler is None:
            print(
                f"kiln: the run could not start: no Dask scheduler answers for the scheduler "
                f"file {scheduler_file} (start one with kiln cluster start --scheduler-file "
                f"{scheduler_file})",
                file=sys.stderr,
            )
            return EXIT_NOT_STARTED
    progress = ProgressDisplay(sys.stderr)
    try:
        result = run_notebook(
            prepared,
            listeners=[progress],
            scheduler=scheduler,
            workers=args.workers,
            use_cache=not args.no_cache,
            force=args.force or (),
            store_url=args.store,
            output_notebook=getattr(args, "output_notebook", None),
            lineage_db=getattr(args, "lineage_db", None),
            record_lineage=not getattr(args, "no_lineage", False),
            working_dir=getattr(args, "workdir", None),
            cluster_start=cluster_start,
        )
    except (ResourceUnavailable, ValueError, OSError, TimeoutError) as exc:
        print(f"kiln: the run could not start: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    _print_failures(result, sys.stderr)
    _print_monitoring(result, sys.stderr)
    if args.json:
        print(json.dumps(summary_json(result), indent=2, default=repr))
    else:
        print(summary_table(result))
        flag = " · flagged" if result.flagged else ""
        print(f"\nrun {result.run_id}: {result.status}{flag}")
        if result.output_notebook:
            print(f"output notebook: {os.path.relpath(result.output_notebook)}")
    if result.lineage_error:
        print(f"kiln: the run's lineage was not recorded: {result.lineage_error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED
