"""What a run records about where it ran: user, host, process, Python and package versions, the
notebook's git state, and digests of the files it reads and writes."""

from __future__ import annotations

import functools
import getpass
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One digest for files everywhere: lineage digests and the runtime's cache inputs must agree.
from compiler.model.hashing import MISSING as MISSING
from compiler.model.hashing import file_digest as file_digest

# Packages whose version can change a result; the ones not installed are left out.
KEY_PACKAGES = (
    "nbkiln",
    "dask",
    "distributed",
    "pandas",
    "numpy",
    "scikit-learn",
    "scipy",
    "pyarrow",
    "ipython",
    "cloudpickle",
)


@functools.cache
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for name in KEY_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None


def process_started_at(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def process_alive(pid: int | None, started_at: float | None) -> bool:
    """The process is there and is the same one (not a later process given the same pid)."""
    if pid is None:
        return False
    now_started = process_started_at(pid)
    if now_started is None:
        return False
    return started_at is None or abs(now_started - started_at) < 1.0


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None  # the notebook differs from that commit (or is not tracked)


def git_state(notebook_path: Path) -> GitState:
    """The commit checked out where the notebook lives, and whether the notebook is modified."""
    git = shutil.which("git")
    if git is None:
        return GitState(None, None)
    folder = notebook_path.parent

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(
                [git, "-C", str(folder), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if not commit:
        return GitState(None, None)
    status = run("status", "--porcelain", "--", notebook_path.name)
    return GitState(commit, None if status is None else bool(status))


def run_environment() -> dict[str, Any]:
    """Columns of the runs table that describe this process."""
    pid = os.getpid()
    return {
        "user": current_user(),
        "host": socket.gethostname(),
        "pid": pid,
        "pid_started_at": process_started_at(pid),
        "python_version": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "packages": package_versions(),
    }
