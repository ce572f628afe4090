"""A newcomer follows the README literally: the set-up command, then the tour's commands.

The commands are parsed from README.md itself (the fenced bash blocks under the set-up and tour
headings), run with bash in a fresh copy of the repository (the files git would clone: no .venv,
no node_modules, no built frontend) with a fresh virtualenv. Slow (about two minutes: the npm
build of the JupyterLab extension and the install); pip's and npm's caches are reused.
The README's test command is not run here (it would run this suite again): the test only checks
that it is exactly what `.ci/run` runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SETUP_HEADING = "## Set-up"
TOUR_HEADING = "## Five-minute tour"
SLOW = pytest.mark.timeout(900)


def section(markdown: str, heading: str) -> str:
    """The text under the `## ...` heading that starts with `heading`, up to the next `## `."""
    start = next(
        m.end() for m in re.finditer(r"^## .*$", markdown, re.M) if m.group().startswith(heading)
    )
    following = re.search(r"^## ", markdown[start:], re.M)
    return markdown[start : start + following.start() if following else len(markdown)]


def bash_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^```bash\n(.*?)^```", text, re.M | re.S)]


def setup_commands() -> tuple[str, str]:
    """(the demo command, the test command): the first two bash blocks under the set-up heading."""
    blocks = bash_blocks(section(README.read_text(), SETUP_HEADING))
    assert len(blocks) >= 2, "the README's set-up section must hold two bash blocks"
    return blocks[0], blocks[1]


def tour_commands() -> list[str]:
    return bash_blocks(section(README.read_text(), TOUR_HEADING))


def copy_as_cloned(destination: Path) -> Path:
    """The files a fresh clone would have: tracked plus untracked-but-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():  # a file deleted in the work tree is still listed
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def clean_environment(home: Path | None = None) -> dict[str, str]:
    """This machine's environment minus anything of the test's own virtualenv or Kiln."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "KILN_", "DASK_", "JUPYTER", "PYTHON"))
    }
    venv_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    # Reuse the machine's caches even when HOME is a temporary folder.
    real_home = Path(os.environ.get("HOME", str(Path.home())))
    env.setdefault("PIP_CACHE_DIR", str(real_home / ".cache" / "pip"))
    env.setdefault("npm_config_cache", str(real_home / ".npm"))
    if home is not None:
        env["HOME"] = str(home)
    return env


def bash(command: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> Any:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class NewcomerSession:
    clone: Path
    setup: Any  # the CompletedProcess of the README's demo command
    tour: list[Any]


_SESSION: dict[str, NewcomerSession] = {}


def newcomer_session(tmp_path_factory: pytest.TempPathFactory) -> NewcomerSession:
    """Run once per test session: the README's set-up command, then its tour blocks."""
    if "session" not in _SESSION:
        clone = copy_as_cloned(tmp_path_factory.mktemp("newcomer") / "kiln")
        env = clean_environment()
        demo_command, _ = setup_commands()
        setup = bash(demo_command, clone, env)
        tour = []
        if setup.returncode == 0:
            for block in tour_commands():
                tour.append(bash(block, clone, env, timeout=300))
                if tour[-1].returncode != 0:
                    break
        _SESSION["session"] = NewcomerSession(clone, setup, tour)
    return _SESSION["session"]


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> NewcomerSession:
    return newcomer_session(tmp_path_factory)


def test_the_readme_test_command_is_what_ci_runs() -> None:
    _, test_command = setup_commands()
    ci = (REPO / ".ci" / "run").read_text()
    executed = [line.strip() for line in ci.splitlines() if line.strip().startswith("exec ")]
    assert executed == [f"exec {test_command}"]


def test_the_readme_demo_command_is_one_line_from_a_fresh_clone() -> None:
    demo_command, _ = setup_commands()
    assert "\n" not in demo_command
    assert demo_command.startswith("python3 -m venv .venv")
    assert demo_command.endswith("kiln run binder/demo.ipynb")


@SLOW
def test_a_newcomer_runs_the_demo_from_the_readme(newcomer: NewcomerSession) -> None:
    setup = newcomer.setup
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-5000:]
    assert re.search(r"^run [0-9a-f]+: succeeded$", setup.stdout, re.M), setup.stdout
    run_id = re.search(r"^run ([0-9a-f]+): succeeded$", setup.stdout, re.M).group(1)  # type: ignore[union-attr]
    # The output notebook: every task's cell with this run's outputs and metadata.kiln.
    output = newcomer.clone / "binder" / ".kiln" / "runs" / run_id / "demo.ipynb"
    assert output.is_file()
    cells = json.loads(output.read_text())["cells"]
    ran = [c for c in cells if c["cell_type"] == "code" and "kiln" in c["metadata"]]
    assert {c["metadata"]["kiln"]["task"] for c in ran} >= {"load", "train_forest", "evaluate"}
    assert all(c["metadata"]["kiln"]["run_id"] == run_id for c in ran)
    assert any(c["outputs"] for c in ran)
    # What the demo writes beside itself.
    for written in ("wine.csv", "metrics.json", "accuracy.png"):
        assert (newcomer.clone / "binder" / written).is_file(), written
    # It was installed from source: the JupyterLab extension was built on the way.
    assert (newcomer.clone / "jupyter_ext" / "labextension" / "package.json").is_file()


@SLOW
def test_the_readme_tour_commands_work_as_written(newcomer: NewcomerSession) -> None:
    assert newcomer.setup.returncode == 0
    blocks = tour_commands()
    assert len(newcomer.tour) == len(blocks)
    for block, done in zip(blocks, newcomer.tour, strict=True):
        assert done.returncode == 0, f"{block}\n--\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    text = "\n".join(d.stdout for d in newcomer.tour)
    # `kiln runs` lists the demo's run, `kiln lineage` traces the file it wrote to its cells.
    assert re.search(r"^[0-9a-f]{16}\s+\S+ \S+\s+succeeded\s+\S+\s+demo\s", text, re.M), text
    assert "written by task evaluate in run" in text
    assert "exported demo version" in text
    assert "schedule demo: 0 6 * * * (UTC), engine kiln" in text
    assert re.search(r"^demo\s+0 6 \* \* \*\s+UTC\s+kiln\s+active", text, re.M), text
