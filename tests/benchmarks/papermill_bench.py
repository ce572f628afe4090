"""papermill's default engine vs `--engine kiln` over papermill's own test notebooks.

    python tests/benchmarks/papermill_bench.py [--scheduler tcp://HOST:PORT] [--only NAME ...]

Both engines run in this process through papermill.execute_notebook, one notebook at a time, in
the same working folder with the same parameters. Prints, per notebook, both times and whether
the results agree (tests/papermill_parity.py's comparison, with the differences), then the parity
count and the median seconds `--engine kiln` adds per notebook. With no --scheduler a
LocalCluster (2 workers) is started once and kept warm for all notebooks, as a long-lived
cluster would be (target: <= 0.3 s added per notebook). Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests import papermill_parity as parity  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scheduler", help="a running Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--only", nargs="*", help="case names")
    parser.add_argument("--quiet", action="store_true", help="no per-cell differences")
    args = parser.parse_args()
    logging.getLogger("papermill").setLevel(logging.ERROR)

    cluster = None
    scheduler = args.scheduler
    if not scheduler:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
        )
        scheduler = cluster.scheduler_address
    same = 0
    added: list[float] = []
    ratios: list[float] = []
    cases = [c for c in parity.cases() if not args.only or c.name in args.only]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for case in cases:
                root = Path(tmp)
                notebook = parity.stage(case, root)
                default = parity.run_engine(
                    case, notebook, notebook.with_name("default.ipynb"), None
                )
                kiln = parity.run_engine(
                    case, notebook, notebook.with_name("kiln.ipynb"), "kiln", scheduler=scheduler
                )
                diffs = parity.compare(default, kiln)
                same += not diffs
                added.append(kiln.seconds - default.seconds)
                ratios.append(kiln.seconds / max(default.seconds, 1e-6))
                mark = "same" if not diffs else f"{len(diffs)} differences"
                print(
                    f"{case.name:28s} papermill {default.seconds:6.2f} s"
                    f"  kiln {kiln.seconds:6.2f} s  {mark}",
                    flush=True,
                )
                if diffs and not args.quiet:
                    for line in diffs:
                        print(f"    {line[:2000]}")
    finally:
        if cluster is not None:
            cluster.close()
    print(f"\nparity: {same}/{len(cases)} notebooks give the same result")
    print(f"median added seconds per notebook (kiln - papermill): {statistics.median(added):+.2f}")
    print(f"median time ratio kiln/papermill: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
