"""Property: random notebooks built from aliasing and in-place patterns, every cell its own
task, end with the same values as a top-to-bottom run in one namespace.

Each example is a real `kiln run` on the shared Dask cluster (two worker processes, so values
cross process boundaries and aliases must survive the trip), so the examples are few.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.nbutil import make_notebook

pytestmark = pytest.mark.timeout(600)

NAMES = ["a", "b", "c", "d"]
HELPER = "import random\n\ndef add_to(target, value):\n    target.append(value)"


@st.composite
def pattern_notebooks(draw):
    """Cells over list-valued names: binds, aliases, in-place changes through the name, an
    alias, a helper, a loop over a container, `+=`, a seeded shuffle, a branch that may bind."""
    cells = [HELPER, "a = [0]"]
    bound = ["a"]
    for _ in range(draw(st.integers(3, 9))):
        n = draw(st.sampled_from(bound))
        m = draw(st.sampled_from(bound))
        k = draw(st.integers(1, 9))
        fresh = draw(st.sampled_from(NAMES))
        templates = [
            f"{fresh} = [{k}]",
            f"{fresh} = {n}",
            f"{n}.append({k})",
            f"add_to({n}, {k})",
            f"for item in [{n}, {m}]:\n    item.append({k})",
            f"{n} += [{k}]",
            f"random.seed({k})\nrandom.shuffle({n})",
            f"if len({n}) > {k % 3}:\n    {fresh} = [{k}, {k}]",
            f"{fresh} = list({n})",
            f"print(len({n}))",
        ]
        cell = draw(st.sampled_from(templates))
        cells.append(cell)
        if cell.startswith(f"{fresh} =") or f"    {fresh} =" in cell:
            if fresh not in bound and not cell.startswith("if "):
                bound.append(fresh)
    cells.append(f"print(repr([{', '.join(bound)}]))")
    return cells


def top_to_bottom(cells: list[str]) -> str:
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for source in cells:
            exec(compile(source, "<cell>", "exec"), namespace)
    return out.getvalue().splitlines()[-1]


@settings(
    # More for a local hunt: KILN_INFERENCE_EXAMPLES=50 (each example is a pipeline run).
    max_examples=int(os.environ.get("KILN_INFERENCE_EXAMPLES", "4")),
    deadline=None,
    derandomize="KILN_INFERENCE_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pattern_notebooks())
def test_random_pattern_notebooks_end_with_the_kernels_values(
    capsys, dask_scheduler_address, cells
):
    from compiler.cli import main as cli

    expected = top_to_bottom(cells)
    with tempfile.TemporaryDirectory() as tmp:
        tagged = [(source, [f"task:t{i}"]) for i, source in enumerate(cells)]
        notebook = make_notebook(Path(tmp) / "random_patterns.ipynb", tagged)
        code = cli.main(
            ["run", str(notebook), "--json", "--no-cache", "--scheduler", dask_scheduler_address]
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err[-2000:]
        summary = json.loads(captured.out)
        out = nbformat.read(summary["output_notebook"], as_version=4)
    last = out.cells[-1]
    printed = "".join(o.get("text", "") for o in last.outputs if o["output_type"] == "stream")
    assert printed.splitlines()[-1] == expected, "\n---\n".join(cells)
