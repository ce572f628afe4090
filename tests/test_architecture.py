"""The shape of the code: the layers hold, and the frontend spells the Python vocabulary.

The import contract itself runs as `lint-imports` in tests/run.sh (pyproject's
[tool.importlinter]); this test runs it too, so a forbidden import fails the suite where a
developer runs it, and proves the contract is not vacuous by breaking it on a copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.model.statuses import RunStatus, TaskStatus

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def ts_union(name: str) -> set[str]:
    """The string literals of `export type NAME = 'a' | 'b' ...;` in types.ts."""
    source = (REPO / "jupyter_ext" / "src" / "types.ts").read_text()
    match = re.search(rf"export type {name} =([^;]*);", source)
    assert match, f"types.ts has no union type {name}"
    return set(re.findall(r"'([a-z_]+)'", match.group(1)))


def test_the_frontend_spells_every_task_and_run_status_of_the_python_vocabulary():
    assert ts_union("TaskStatus") == {str(s) for s in TaskStatus}
    assert ts_union("RunStatus") == {str(s) for s in RunStatus}


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")
def test_the_layer_contract_holds_and_fails_on_a_runtime_that_imports_lineage(tmp_path: Path):
    kept = _lint(REPO)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    copy = tmp_path / "repo"
    for part in ("compiler", "jupyter_ext"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("labextension"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    driver = copy / "compiler" / "runtime" / "driver.py"
    driver.write_text("from compiler.lineage.recorder import RunRecorder\n" + driver.read_text())
    broken = _lint(copy)
    assert broken.returncode != 0
    assert "compiler.runtime.driver -> compiler.lineage.recorder" in broken.stdout
