"""binder/: the environment mybinder would build installs here and serves Kiln in JupyterLab.

What repo2docker does, in a fresh copy of the repository and a fresh virtualenv: from the
repository root, `pip install -r binder/requirements.txt`, then `binder/postBuild`; then start
JupyterLab and check it the way a visitor's browser would use it (the lab page, kernelspecs, the
Kiln server extension compiling the demo, the demo as the default page). Slow (a minute or two:
npm ci, the extension build and the install); pip's and npm's caches are reused.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_newcomer import bash, clean_environment, copy_as_cloned

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"
pytestmark = pytest.mark.timeout(900)


def test_binder_files_are_what_repo2docker_reads() -> None:
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    requirements = [
        line.strip()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "jupyterlab>=4.5,<4.6" in requirements  # the extension build needs 4.5 (NOTES.md)
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK)
    assert post_build.read_text().startswith("#!/usr/bin/env bash\n")


def test_the_demo_notebooks_are_clean_and_compile(tmp_path: Path) -> None:
    from compiler.compile.api import compile_notebook

    for name, tasks in (("demo.ipynb", 6), ("demo_untagged.ipynb", 1)):
        notebook = json.loads((BINDER / name).read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, name
        result = compile_notebook(BINDER / name)
        assert result.ok, name
        assert len(result.pipeline.tasks) == tasks, name
        assert [d for d in result.diagnostics if d.severity != "info"] == [], name
    untagged = json.loads((BINDER / "demo_untagged.ipynb").read_text())
    assert not any(c["metadata"].get("tags") for c in untagged["cells"])
    headings = [
        line
        for c in untagged["cells"]
        if c["cell_type"] == "markdown"
        for line in "".join(c["source"]).splitlines()
        if line.startswith("## ")
    ]
    assert len(headings) >= 5  # Split by Headings has sections to turn into tasks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, token: str, body: Any = None) -> tuple[int, str, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.status, response.geturl(), response.read()


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("binder")
    repo = copy_as_cloned(root / "repo")
    home = root / "home"
    home.mkdir()
    venv = root / "venv"
    env = clean_environment(home)
    made = subprocess.run(["python3", "-m", "venv", str(venv)], env=env, capture_output=True)
    assert made.returncode == 0, made.stderr
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    steps = {}
    for name, command in (
        ("requirements", "python -m pip install -q -r binder/requirements.txt"),
        ("postBuild", "binder/postBuild"),
    ):
        steps[name] = done = bash(command, repo, env)
        assert done.returncode == 0, f"{name}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    yield {"repo": repo, "home": home, "venv": venv, "env": env, "steps": steps}


@pytest.fixture(scope="module")
def lab(binder_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    port, token = free_port(), secrets.token_hex(16)
    log = (binder_env["repo"].parent / "lab.log").open("w")
    process = subprocess.Popen(
        [
            str(binder_env["venv"] / "bin" / "jupyter"),
            "lab",
            "--no-browser",
            "--ip",
            "127.0.0.1",
            f"--port={port}",
            f"--ServerApp.token={token}",
            "--allow-root",
        ],
        cwd=binder_env["repo"],
        env=binder_env["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                request(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        "JupyterLab did not start:\n"
                        + (binder_env["repo"].parent / "lab.log").read_text()[-4000:]
                    )
                time.sleep(0.5)
        yield {"base": base, "token": token, **binder_env}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_binder_environment_serves_jupyterlab_with_kiln(lab: dict[str, Any]) -> None:
    base, token = lab["base"], lab["token"]
    status, _, page = request(f"{base}/lab", token)
    assert status == 200 and b"JupyterLab" in page
    # The default page is the demo notebook (postBuild's default_url).
    _, landed, _ = request(f"{base}/", token)
    assert landed.endswith("/lab/tree/binder/demo.ipynb")
    _, _, body = request(f"{base}/api/kernelspecs", token)
    assert "python3" in json.loads(body)["kernelspecs"]
    # The prebuilt frontend extension is installed and enabled in this JupyterLab.
    _, _, body = request(f"{base}/lab/api/extensions", token)
    extensions = {e["name"]: e for e in json.loads(body)}
    assert extensions["nbkiln"]["enabled"] and extensions["nbkiln"]["installed"]
    # The server extension compiles the demo.
    _, _, body = request(f"{base}/kiln/compile", token, {"path": "binder/demo.ipynb"})
    compiled = json.loads(body)
    assert compiled["ok"] is True
    assert {t["name"] for t in compiled["spec"]["tasks"]} == {
        "load",
        "clean",
        "features",
        "train_logreg",
        "train_forest",
        "evaluate",
    }


def test_binder_environment_passes_kiln_doctor(binder_env: dict[str, Any], tmp_path: Path) -> None:
    done = subprocess.run(
        [str(binder_env["venv"] / "bin" / "kiln"), "doctor", "--json"],
        cwd=tmp_path,
        env=binder_env["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {c["name"]: c["status"] for c in json.loads(done.stdout)}
    assert statuses["labextension"] == statuses["server extension"] == "ok"
    assert statuses["papermill engine"] == statuses["dask"] == "ok"
