"""`kiln verify NOTEBOOK`: compare the pipeline's task outputs with a top-to-bottom run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_SAME, EXIT_DIFFERENT, EXIT_NOT_STARTED = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="run the notebook top to bottom (papermill) and as a pipeline; compare each "
        "task's outputs by digest (exit 1 where they differ)",
    )
    p.add_argument("notebook")
    p.add_argument("--scheduler", help="address of a running Dask scheduler")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from compiler.model.diagnostics import NotebookLoadError
    from compiler.ops.run import RunRefused, prepare_run, run_notebook
    from compiler.ops.verify import compare, kernel_digests

    path = Path(args.notebook)
    try:
        prepared = prepare_run(path)
    except NotebookLoadError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    except RunRefused as exc:
        for d in exc.diagnostics:
            print(f"{path}: {d.render()}", file=sys.stderr)
        print(f"kiln: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    spec = dict(prepared.spec)
    try:
        kernel = kernel_digests(path, spec, path.resolve().parent)
    except Exception as exc:  # the notebook fails top to bottom: nothing to compare against
        print(
            f"kiln: the notebook does not run top to bottom: {exc}".rstrip()[:2000], file=sys.stderr
        )
        return EXIT_NOT_STARTED
    result = run_notebook(prepared, scheduler=args.scheduler, use_cache=False, record_lineage=False)
    verification = compare(spec, result.tasks, kernel)
    for row in verification.tasks:
        if row.error:
            print(f"  {row.task}: did not finish: {row.error}")
            continue
        parts = []
        if row.different:
            parts.append("DIFFERENT " + ", ".join(row.different))
        if row.same:
            parts.append("same " + ", ".join(row.same))
        if row.unchecked:
            parts.append("not comparable (no digest) " + ", ".join(row.unchecked))
        print(f"  {row.task}: {'; '.join(parts) or 'no outputs'}")
    for task in result.tasks:
        for warning in task.warnings:  # changed in place, unseen: re-exported by the run
            print(f"kiln: warning: {warning['message']}")
    different = [r.task for r in verification.tasks if r.different or r.error]
    if different:
        print(f"kiln: the pipeline differs from the notebook in {', '.join(different)}")
        return EXIT_DIFFERENT
    print("kiln: every task's outputs match a top-to-bottom run")
    return EXIT_SAME
