"""The server extension's pieces without a server: path confinement and the run registry."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from jupyter_ext.paths import PathRefused, api_path_of, resolve_api_path
from jupyter_ext.runs import RunConflict, RunManager, output_notebook_for


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "nb.ipynb").write_text("{}")
    (tmp_path / "outside.ipynb").write_text("{}")
    return tmp_path / "root"


def test_api_paths_resolve_inside_the_root(root: Path):
    assert resolve_api_path(root, "sub/nb.ipynb") == (root / "sub" / "nb.ipynb").resolve()
    assert resolve_api_path(root, "sub/./nb.ipynb") == (root / "sub" / "nb.ipynb").resolve()
    assert api_path_of(root, root / "sub" / "nb.ipynb") == "sub/nb.ipynb"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("", 400),
        ("   ", 400),
        (None, 400),
        (["a"], 400),
        ("a\x00b", 400),
        ("/etc/passwd", 403),
        ("\\\\server\\share\\x.ipynb", 403),
        ("C:\\Windows\\x.ipynb", 403),
        ("../outside.ipynb", 403),
        ("sub/../../outside.ipynb", 403),
        ("sub\\..\\..\\outside.ipynb", 403),
    ],
)
def test_bad_and_escaping_paths_are_refused(root: Path, path: Any, status: int):
    with pytest.raises(PathRefused) as caught:
        resolve_api_path(root, path)
    assert caught.value.status == status


def test_symlinks_out_of_the_root_are_refused(root: Path):
    os.symlink(root.parent / "outside.ipynb", root / "link.ipynb")
    os.symlink(root.parent, root / "up")
    for path in ("link.ipynb", "up/outside.ipynb"):
        with pytest.raises(PathRefused) as caught:
            resolve_api_path(root, path)
        assert caught.value.status == 403


def test_symlinks_inside_the_root_are_fine(root: Path):
    os.symlink(root / "sub", root / "alias")
    assert resolve_api_path(root, "alias/nb.ipynb") == (root / "sub" / "nb.ipynb").resolve()


class FakeResult:
    def __init__(self, data: dict[str, Any]):
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


def test_run_manager_records_events_and_result(root: Path):
    seen: dict[str, Any] = {}

    def runner(spec, *, notebook_path, params, output_notebook, on_event, run_id, **options):
        seen.update(spec=spec, notebook_path=notebook_path, params=params, **options)
        on_event({"type": "run", "run_id": run_id, "status": "started", "dashboard": "http://d"})
        on_event({"type": "task", "run_id": run_id, "task": "a", "status": "running"})
        on_event({"type": "task", "run_id": run_id, "task": "a", "status": "done", "duration": 1.5})
        Path(output_notebook).parent.mkdir(parents=True)
        Path(output_notebook).write_text("{}")
        return FakeResult(
            {
                "status": "succeeded",
                "output_notebook": output_notebook,
                "dashboard": "http://d",
                "tasks": [{"name": "a", "status": "done", "duration": 1.5, "attempts": 1}],
            }
        )

    manager = RunManager(root, runner=runner)
    notebook = root / "sub" / "nb.ipynb"
    record = manager.start(
        {"tasks": []},
        notebook,
        parameters={"n": 2},
        options={"scheduler": "tcp://x:1", "workers": 3},
    )
    _wait(lambda: record.done)

    data = record.to_dict()
    assert data["status"] == "succeeded"
    assert data["tasks"] == {"a": {"status": "done", "duration": 1.5, "attempts": 1}}
    assert data["dashboard"] == "http://d"
    assert data["output_notebook"] == f"sub/kiln-runs/nb/{record.run_id}.ipynb"
    assert [e["status"] for e in data["events"]] == ["started", "running", "done"]
    assert seen["params"] == {"n": 2} and seen["scheduler"] == "tcp://x:1"
    assert seen["workers"] == 3  # every option reaches the library (no signature guessing)
    assert manager.list("sub/nb.ipynb") == [record] and manager.list("other.ipynb") == []
    assert record.to_dict(since=2)["events"] == [data["events"][2]]


def test_one_live_run_per_notebook_and_crashes_become_failed_runs(root: Path):
    release = threading.Event()

    def runner(spec, **kwargs):
        release.wait(10)
        raise RuntimeError("cluster went away")

    manager = RunManager(root, runner=runner)
    notebook = root / "sub" / "nb.ipynb"
    first = manager.start({"tasks": []}, notebook)
    with pytest.raises(RunConflict):
        manager.start({"tasks": []}, notebook)
    release.set()
    _wait(lambda: first.done)
    assert first.status == "failed"
    assert first.error == "RuntimeError: cluster went away"
    second = manager.start({"tasks": []}, notebook)  # the notebook is free again
    _wait(lambda: second.done)


def test_output_notebooks_are_visible_beside_the_notebook(root: Path):
    out = output_notebook_for(root / "sub" / "nb.ipynb", "abc")
    assert out == root / "sub" / "kiln-runs" / "nb" / "abc.ipynb"
    assert not any(part.startswith(".") for part in out.relative_to(root).parts)


def _wait(condition, timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_cancel_reaches_the_runner_and_the_run_ends_cancelled(root: Path):
    seen: dict[str, Any] = {}

    def runner(spec, *, on_event, run_id, cancel, **kwargs):
        on_event({"type": "run", "run_id": run_id, "status": "started", "dashboard": None})
        seen["set"] = cancel.wait(10)  # the runtime's loop checks the same event
        return FakeResult({"status": "cancelled", "tasks": [{"name": "a", "status": "cancelled"}]})

    manager = RunManager(root, runner=runner)
    record = manager.start({"tasks": []}, root / "sub" / "nb.ipynb")
    _wait(lambda: record.status == "running")
    assert record.request_cancel()
    assert record.summary()["status"] == "cancelling"
    _wait(lambda: record.done)
    assert seen["set"] is True
    assert record.status == "cancelled" and record.tasks["a"]["status"] == "cancelled"
    assert not record.request_cancel()  # already ended: the handler answers 409
    assert all("at" in event for event in record.events)  # the timeline's clock


def test_the_dashboard_goes_through_the_jupyter_server(root: Path):
    pytest.importorskip("jupyter_server_proxy")
    from jupyter_ext.runs import dashboard_proxy_path

    assert dashboard_proxy_path("http://127.0.0.1:8787/status") == "proxy/8787/status"
    assert dashboard_proxy_path("http://10.0.0.5:8787/status") is None  # not this machine
