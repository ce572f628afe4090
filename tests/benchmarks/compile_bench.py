"""Compile time for generated 100-, 1,000- and 5,000-cell notebooks.

Run: .venv/bin/python tests/benchmarks/compile_bench.py [--quick]
Prints seconds per notebook, cells per second and the growth ratio (linear growth means
time(5000)/time(1000) close to 5). Target: 1,000 cells in under 0.5 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compiler.compile.analysis import _analyse_cell_cached  # noqa: E402
from compiler.compile.api import compile_notebook  # noqa: E402
from tests.nbutil import make_notebook  # noqa: E402

CELL_TEMPLATES = [
    "frame_{i} = pd.DataFrame({{'x': np.arange({i} % 50 + 5)}})\n"
    "frame_{i}['y'] = frame_{i}['x'] * 2",
    "total_{i} = float(frame_{p}['y'].sum()) + {i}\nprint(total_{i})",
    "%time values_{i} = np.linspace(0, 1, {i} % 20 + 2)\nvalues_{i}.mean()",
    "def helper_{i}(v):\n    # a helper that reads a global at call time\n"
    "    return v + total_{q}\n\n"
    "result_{i} = helper_{i}(len(values_{r}))",
    "data_{i} = pd.read_csv('data/table_{i}.csv')\ndata_{i}.to_parquet('out/table_{i}.parquet')",
]


def generated_cells(n: int) -> list:
    cells: list = [
        ("import numpy as np\nimport pandas as pd", ["setup"]),
        ("scale = 2", ["parameters"]),
    ]
    for i in range(n - 2):
        kind = i % len(CELL_TEMPLATES)
        base = i - kind
        src = CELL_TEMPLATES[kind].format(i=i, p=base, q=base + 1, r=base + 2)
        tags = [f"task:t{i}"] if i % 2 == 0 else []  # tasks of two cells each
        cells.append((src, tags))
    return cells


def time_compile(path: Path, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        _analyse_cell_cached.cache_clear()  # measure cold analysis, not the memo
        start = time.perf_counter()
        result = compile_notebook(path)
        samples.append(time.perf_counter() - start)
        assert result.ok, [d.render() for d in result.diagnostics[:3]]
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (CI smoke)")
    args = parser.parse_args()
    sizes = [100, 1000] if args.quick else [100, 1000, 5000]
    repeats = 1 if args.quick else 3
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = make_notebook(Path(tmp) / f"gen_{n}.ipynb", generated_cells(n))
            results[n] = time_compile(path, repeats)
    print(f"{'cells':>6} {'seconds':>9} {'cells/s':>9}")
    for n, t in results.items():
        print(f"{n:>6} {t:>9.3f} {n / t:>9.0f}")
    print(f"target: 1000 cells < 0.500 s -> {'met' if results[1000] < 0.5 else 'missed'}")
    if 5000 in results:
        print(f"growth 1000->5000 cells: x{results[5000] / results[1000]:.2f} (linear = x5)")


if __name__ == "__main__":
    main()
