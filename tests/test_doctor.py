"""`kiln doctor`: real checks of this installation, and the failures it must name with a fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from compiler.cli.doctor import render
from compiler.ops import doctor

KILN = [sys.executable, "-m", "compiler.cli"]
CHECKS = [
    "python",
    "nbkiln",
    "labextension",
    "server extension",
    "papermill engine",
    "kernelspec",
    "dask",
    "artifact store",
    "lineage db",
    "ruff",
    "graphviz",
]


def kiln_doctor(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    environment = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS",)}
    environment.pop("KILN_LINEAGE_DB", None)
    environment.update(env or {})
    return subprocess.run(
        [*KILN, "doctor", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def by_name(checks: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in checks}


def test_doctor_passes_on_this_installation_and_leaves_no_trace(tmp_path: Path) -> None:
    done = kiln_doctor(tmp_path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = by_name(json.loads(done.stdout))
    assert list(checks) == CHECKS
    for name in CHECKS:
        if name == "graphviz":  # optional
            assert checks[name]["status"] in ("ok", "warn")
        else:
            assert checks[name]["status"] == "ok", checks[name]
    assert "a local Dask cluster started" in checks["dask"]["detail"]
    assert str(tmp_path / ".kiln") in checks["artifact store"]["detail"]
    # The store probe and the lineage check create nothing in a folder that had no .kiln/.
    assert list(tmp_path.iterdir()) == []


def test_doctor_names_an_unreachable_scheduler_and_an_unwritable_store(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    address = f"tcp://127.0.0.1:{closed_port()}"
    done = kiln_doctor(
        tmp_path,
        "--store",
        str(blocker / "store"),
        "--lineage-db",
        f"sqlite:///{blocker / 'sub' / 'lineage.db'}",
        "--timeout",
        "2",
        env={"DASK_SCHEDULER_ADDRESS": address},  # the environment variable, as a user sets it
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    dask_line = next(line for line in lines if line.split()[1:2] == ["dask"])
    assert dask_line.startswith("FAIL") and address in dask_line
    store_line = next(line for line in lines if "artifact store" in line)
    assert store_line.startswith("FAIL") and str(blocker / "store") in store_line
    db_line = next(line for line in lines if "lineage db" in line)
    assert db_line.startswith("FAIL") and "is a file, not a folder" in db_line
    # Every failure comes with a fix on the next line.
    for failed in (dask_line, store_line, db_line):
        assert lines[lines.index(failed) + 1].strip().startswith("fix: ")
    assert lines[-1].startswith(f"{len(CHECKS)} checks: 3 failed, ")
    # The healthy checks still ran and passed.
    assert any(line.startswith("ok") and "papermill engine" in line for line in lines)


def test_doctor_reaches_a_running_scheduler(dask_scheduler_address: str) -> None:
    check = doctor.check_dask(dask_scheduler_address, timeout=10)
    assert check.status == "ok", check
    assert "2 worker(s), a test task ran" in check.detail


def test_lineage_db_check_writes_to_an_existing_database(tmp_path: Path) -> None:
    from compiler.lineage.store import open_store

    url = f"sqlite:///{tmp_path / 'team.db'}"
    open_store(url).close()
    check = doctor.check_lineage_db(url, timeout=10)
    assert check.status == "ok" and "accepts writes" in check.detail
    unreachable = f"postgresql+psycopg://kiln@127.0.0.1:{closed_port()}/kiln"
    pytest.importorskip("psycopg")
    check = doctor.check_lineage_db(unreachable, timeout=10)
    assert check.status == "FAIL" and "KILN_LINEAGE_DB" in check.fix


def test_a_store_url_without_its_filesystem_fails_with_the_package_to_install(
    tmp_path: Path,
) -> None:
    check = doctor.check_store("kilnnosuchproto://bucket/prefix", timeout=5)
    assert check.status == "FAIL" and "s3fs" in check.fix


def test_render_is_one_line_per_check_plus_fixes() -> None:
    text = render(
        [
            doctor.Check("python", "ok", "Python 3.11"),
            doctor.Check("graphviz", "warn", "no dot", "apt-get install graphviz"),
        ]
    )
    assert text.splitlines() == [
        "ok    python    Python 3.11",
        "warn  graphviz  no dot",
        "                fix: apt-get install graphviz",
        "",
        "2 checks: 0 failed, 1 warning(s)",
    ]
