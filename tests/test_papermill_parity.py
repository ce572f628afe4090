"""`--engine kiln` gives what papermill's default engine gives, on papermill's own test notebooks.

Each case runs one of the notebooks papermill ships for its tests (tests/papermill_parity.py
lists them, with the parameters and options a user would pass) through both engines in the same
working folder, and compares the exception, the injected cell and every cell's outputs, status
and exception. The default engine's runs start an ipykernel each; they run on a few threads at
once, before the Kiln runs (which share the session's LocalCluster).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import papermill_parity as parity

# Covered by the benchmark (tests/benchmarks/papermill_bench.py), not here: it sleeps 14 s and
# is simple_execute's cells again.
SLOW = {"gcs-simple_notebook"}
CASES = [c for c in parity.cases() if c.name not in SLOW]


@pytest.fixture(scope="module")
def staging_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the cases are staged, and the working folder of both engines (without --cwd a
    notebook runs in the caller's folder: never the repository's)."""
    root = tmp_path_factory.mktemp("papermill-parity")
    previous = os.getcwd()
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def default_outcomes(staging_root: Path) -> dict[str, tuple[Path, parity.Outcome]]:
    """Every case through papermill's default engine (cases with --cwd one at a time:
    papermill changes this process's folder for them)."""
    logging.getLogger("papermill").setLevel(logging.ERROR)
    staged = {c.name: parity.stage(c, staging_root) for c in CASES}

    def run(case: parity.Case) -> parity.Outcome:
        notebook = staged[case.name]
        return parity.run_engine(case, notebook, notebook.with_name("default.ipynb"), None)

    outcomes: dict[str, tuple[Path, parity.Outcome]] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = [c for c in CASES if c.cwd is None]
        for case, outcome in zip(parallel, pool.map(run, parallel), strict=True):
            outcomes[case.name] = (staged[case.name], outcome)
    for case in CASES:
        if case.cwd is not None:
            outcomes[case.name] = (staged[case.name], run(case))
    return outcomes


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kiln_engine_gives_what_papermill_gives(
    case: parity.Case,
    default_outcomes: dict[str, tuple[Path, parity.Outcome]],
    dask_scheduler_address: str,
):
    notebook, default = default_outcomes[case.name]
    kiln = parity.run_engine(
        case, notebook, notebook.with_name("kiln.ipynb"), "kiln", scheduler=dask_scheduler_address
    )
    assert parity.compare(default, kiln) == []
