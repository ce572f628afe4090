"""The options of `kiln run NOTEBOOK` (also `python run.py` in a bundle, compiler/cli/bundle.py).

Apart from compiler/cli/run.py so that building the `kiln` parser does not import the runner:
cli/run.py imports ops.run, hence the runtime, lineage writers and alert routes, ~0.2 s of CPU
here that `kiln metrics`, `kiln runs` and every other command paid at start-up for nothing.
"""

from __future__ import annotations

import argparse


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `kiln run NOTEBOOK` (the caller adds NOTEBOOK itself)."""
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        dest="parameters",
        metavar=("NAME", "VALUE"),
        help="override a parameter; typed like its default (else read as YAML)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing Dask cluster (default: DASK_SCHEDULER_ADDRESS, "
        "else a local cluster started for this run)",
    )
    parser.add_argument(
        "--scheduler-file",
        metavar="PATH",
        help="run on the cluster of this Dask scheduler file (as written by dask scheduler "
        "--scheduler-file or kiln cluster start; default: the one of kiln cluster start, "
        "when it is running)",
    )
    parser.add_argument("--workers", type=int, metavar="N", help="local cluster: worker processes")
    parser.add_argument(
        "--no-cache", action="store_true", help="run every task; neither read nor write the cache"
    )
    parser.add_argument(
        "--force",
        nargs="+",
        action="extend",
        default=[],
        metavar="TASK",
        help="rerun these tasks even if cached (downstream reruns if their outputs change)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run summary as JSON on stdout"
    )
    parser.add_argument(
        "--store", metavar="URL", help="artifact store, an fsspec URL (default: .kiln/)"
    )
    parser.add_argument(
        "--lineage-db",
        metavar="URL",
        help="lineage database, a SQLAlchemy URL (default: $KILN_LINEAGE_DB, else "
        ".kiln/lineage.db beside the notebook)",
    )
    parser.add_argument(
        "--no-lineage", action="store_true", help="do not record this run's lineage"
    )
    parser.add_argument(
        "--output-notebook",
        metavar="PATH",
        help="where to write the executed notebook (default: .kiln/runs/RUN_ID/NOTEBOOK)",
    )
