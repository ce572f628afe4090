"""A real `jupyter lab` on loopback in a temporary folder, and Chromium driven by Playwright.

Skipped (with the reason shown) only when /usr/bin/chromium is missing; install it with
`apt-get install -y chromium` (never `playwright install`, which downloads browsers).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where the tests write their screenshots: a git-ignored folder (or $KILN_SCREENSHOTS), so a
# test run never rewrites the committed ones in tests/ui/screenshots/ (copied there on purpose).
SCREENSHOTS = Path(
    os.environ.get("KILN_SCREENSHOTS") or Path(__file__).parent / "screenshots" / "latest"
)

# User settings for the test's JupyterLab: no news toast, no update check.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"browser tests need {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True
    )


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}lab/tree/{name}?token={self.token}&reset"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lab_environment(base: Path, tree: Path | None = None) -> dict[str, str]:
    """The environment of a JupyterLab kept apart from the user's: its settings (LAB_SETTINGS),
    workspaces and runtime files under `base`, and the `compiler` of `tree` (default: this
    checkout) importable. The browser tests and tests/benchmarks/ui_bench.py start their labs
    with it."""
    settings = base / "settings"
    for name, content in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(content))
    return dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        PYTHONPATH=os.pathsep.join(
            [str(tree or Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    )


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    env = lab_environment(base)
    env["KILN_RUN_SCHEDULER"] = "1"  # the server runs due schedules (c.KilnExtension.run_scheduler)
    port = _free_port()
    token = secrets.token_hex(16)
    log = base / "lab.log"
    jupyter = Path(sys.executable).parent / "jupyter"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(jupyter),
                "lab",
                "--no-browser",
                f"--port={port}",
                "--ip=127.0.0.1",
                f"--ServerApp.token={token}",
                "--allow-root",
                "--LabApp.news_url=",
                # window.jupyterapp: tests read the notebook model itself (tags, dirty flag)
                "--LabApp.expose_app_in_browser=True",
                f"--ServerApp.root_dir={root}",
            ],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"jupyter lab did not start:\n{log.read_text()[-3000:]}"
                ) from None
            time.sleep(0.3)
    with urllib.request.urlopen(f"{url}lab?token={token}", timeout=10) as response:
        page_config = response.read().decode()
    if '"name": "nbkiln"' not in page_config and '"name":"nbkiln"' not in page_config:
        process.kill()
        pytest.fail(
            "the Kiln JupyterLab extension is not installed in this environment: "
            "run `npm ci && npm run build` and `pip install -e .` first"
        )
    try:
        yield Lab(url=url, token=token, root=root, process=process, log=log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope: Playwright's sync API holds an event loop open in this thread while it
    # runs, which asyncio-based tests collected after this module must not inherit.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(
    browser: Any, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        if request.node.stash.get(_FAILED, False):
            # What the browser showed when the test failed (outside the repository).
            shot = tmp_path_factory.mktemp("failed") / f"{request.node.name}.png"
            page.screenshot(path=str(shot))
            print(f"screenshot of the failure: {shot}")
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def copy_notebook(lab: Lab, source: Path, name: str) -> Path:
    target = lab.root / name
    shutil.copy(source, target)
    return target
