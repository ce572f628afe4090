"""Property tests: random valid notebooks compile to acyclic graphs with stable versions."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.compile.api import compile_notebook
from tests.nbutil import make_notebook

NAMES = ["a", "b", "c", "d", "e", "f"]


@st.composite
def notebooks(draw):
    """Tasks that each bind one new name from names bound earlier (always valid)."""
    n_tasks = draw(st.integers(min_value=1, max_value=8))
    bound: list[str] = []
    cells = []
    for i in range(n_tasks):
        reads = draw(st.lists(st.sampled_from(bound), unique=True, max_size=3)) if bound else []
        target = draw(st.sampled_from(NAMES))
        expr = " + ".join(reads) if reads else str(draw(st.integers(0, 9)))
        mutate = bool(reads) and draw(st.booleans())
        lines = [f"{target} = {expr}"]
        if mutate:
            # A method call for its effect: the task re-exports the received name.
            lines.insert(0, f"{reads[0]}.bit_length()")
        extra_cells = draw(st.integers(0, 1))
        tags = [f"task:t{i}"]
        if i > 0 and draw(st.booleans()):
            tags.append(f"after:t{draw(st.integers(0, i - 1))}")
        cells.append(("\n".join(lines), tags))
        for _ in range(extra_cells):
            cells.append(f"print({target})")
        bound.append(target)
    return cells


def restyle(cells):
    out = []
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        styled = "# reformatted\n" + source.replace(" = ", "=").replace(" + ", "  +  ") + "\n\n"
        out.append((styled, tags))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notebooks())
def test_random_notebooks_compile_acyclic_with_stable_versions(cells):
    with tempfile.TemporaryDirectory() as tmp:
        one = compile_notebook(make_notebook(Path(tmp) / "one.ipynb", cells))
        two = compile_notebook(make_notebook(Path(tmp) / "two.ipynb", restyle(cells)))
    assert one.ok, [d.render() for d in one.diagnostics]
    spec = one.spec
    # Topological order: every upstream task comes earlier in the list.
    seen: set[str] = set()
    for task in spec["tasks"]:
        assert set(task["upstream"]) <= seen
        assert set(task["inputs"].values()) <= set(task["upstream"])
        seen.add(task["name"])
    assert [t["version"] for t in spec["tasks"]] == [t["version"] for t in two.spec["tasks"]]
    assert spec["version"] == two.spec["version"]
