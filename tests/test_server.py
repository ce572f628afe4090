"""The /kiln/ REST endpoints, called as JupyterLab calls them, against a live jupyter_server."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

# pytest-jupyter's fixtures (jp_fetch, jp_serverapp, ...), imported rather than registered with
# `pytest_plugins`, so that its autouse fixtures (an event loop closed after every test, a
# ServerApp cleanup) stay inside this module instead of running around every test of the suite.
from pytest_jupyter.jupyter_server import *  # noqa: F403
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from compiler.lineage import open_store
from tests.nbutil import make_notebook

NOTEBOOKS = Path(__file__).parent / "notebooks"

THREE_TASKS = [
    ("import math", ["setup"]),
    ("n = 4", ["parameters"]),
    ("# md: ## Load"),
    ("xs = list(range(n))", ["task:load"]),
    ("total = sum(xs)", ["task:add"]),
    ("root = math.sqrt(total)\nprint(root)", ["task:report"]),
]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ext": True}}}


@pytest.fixture
def root(jp_root_dir: Path) -> Path:
    return Path(jp_root_dir)


@pytest.fixture
def run(jp_asyncio_loop: Any) -> Any:
    """Await a coroutine on the server's event loop (the tests themselves are plain functions)."""
    return jp_asyncio_loop.run_until_complete


class Kiln:
    """The /kiln/ endpoints as JupyterLab calls them (token header, JSON bodies)."""

    def __init__(self, jp_fetch: Any, run: Any):
        self.fetch = jp_fetch
        self.run = run

    def get(self, *parts: str, **params: str) -> dict[str, Any]:
        response = self.run(self.fetch("kiln", *parts, params=params))
        return json.loads(response.body)

    def post(self, endpoint: str, body: Any, **params: str) -> tuple[int, dict[str, Any]]:
        response = self.run(
            self.fetch("kiln", endpoint, method="POST", body=json.dumps(body), params=params)
        )
        return response.code, json.loads(response.body)

    def refused(self, *parts: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """Status and JSON body of a request that must fail."""
        with pytest.raises(HTTPClientError) as caught:
            self.run(self.fetch("kiln", *parts, **kwargs))
        response = caught.value.response
        assert response is not None
        return caught.value.code, json.loads(response.body)


@pytest.fixture
def kiln(jp_fetch: Any, run: Any) -> Kiln:
    return Kiln(jp_fetch, run)


# -- compile -------------------------------------------------------------------------------


def test_compile_saved_notebook_returns_spec_and_diagnostics(kiln, root):
    make_notebook(root / "work" / "three.ipynb", THREE_TASKS)

    code, result = kiln.post("compile", {"path": "work/three.ipynb"})

    assert code == 200
    assert result["ok"] is True
    tasks = {t["name"]: t for t in result["spec"]["tasks"]}
    assert list(tasks) == ["load", "add", "report"]
    assert tasks["add"]["upstream"] == ["load"]
    assert tasks["report"]["inputs"] == {"total": "add"}
    assert isinstance(result["diagnostics"], list)


def test_compile_posted_content_follows_unsaved_edits(kiln, root):
    path = make_notebook(root / "edit.ipynb", THREE_TASKS)
    notebook = json.loads(path.read_text())
    notebook["cells"][5]["metadata"]["tags"] = ["task:report", "after:load"]
    new_cell = {
        "cell_type": "code",
        "id": "new",
        "metadata": {"tags": ["task:extra"]},
        "source": "more = total + 1",
        "outputs": [],
        "execution_count": None,
    }
    notebook["cells"].append(new_cell)

    _, result = kiln.post("compile", {"path": "edit.ipynb", "notebook": notebook})

    tasks = {t["name"]: t for t in result["spec"]["tasks"]}
    assert set(tasks) == {"load", "add", "report", "extra"}
    assert set(tasks["report"]["upstream"]) == {"add", "load"}
    assert tasks["extra"]["cells"] == ["new"]


def test_compile_errors_are_diagnostics_with_their_cell_and_line(kiln, root):
    make_notebook(
        root / "broken.ipynb",
        [("a = 1", ["task:one"]), ("b = a + undefined_name", ["task:two"])],
    )

    code, result = kiln.post("compile", {"path": "broken.ipynb"})

    assert code == 200
    assert result["ok"] is False and result["spec"] is None
    errors = [d for d in result["diagnostics"] if d["severity"] == "error"]
    assert errors, result["diagnostics"]
    assert errors[0]["cell_index"] == 1 and errors[0]["line"] == 1
    assert "undefined_name" in errors[0]["message"]


def test_compile_unreadable_notebook_is_400_with_message(kiln, root):
    (root / "bad.ipynb").write_text("{ this is not json")

    code, body = kiln.refused("compile", method="POST", body=json.dumps({"path": "bad.ipynb"}))

    assert code == 400
    assert body["message"]


def test_compile_invalid_posted_notebook_is_400(kiln, root):
    body = {"path": "x.ipynb", "notebook": {"cells": "not a list", "nbformat": 4}}
    code, answer = kiln.refused("compile", method="POST", body=json.dumps(body))
    assert code == 400 and answer["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("not json", 400),
        ("[1, 2]", 400),
        (json.dumps({}), 400),
        (json.dumps({"path": 3}), 400),
        (json.dumps({"path": "missing.ipynb"}), 404),
        (json.dumps({"path": "x.ipynb", "notebook": 42}), 400),
    ],
)
def test_compile_bad_requests_are_4xx_json(kiln, body, status):
    code, answer = kiln.refused("compile", method="POST", body=body)
    assert code == status
    assert isinstance(answer["message"], str) and answer["message"]


# -- confinement to the server root ----------------------------------------------------------


@pytest.fixture
def outside_notebook(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid notebook outside the server root, and a symlink to it inside."""
    outside = make_notebook(
        tmp_path_factory.mktemp("outside") / "secret.ipynb", [("x = 1", ["task:t"])]
    )
    os.symlink(outside, root / "link.ipynb")
    os.symlink(outside.parent, root / "linkdir")
    return outside


ESCAPES = [
    "../../etc/passwd",
    "/etc/passwd",
    "sub/../../outside.ipynb",
    "link.ipynb",
    "linkdir/secret.ipynb",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_compile_refuses_paths_outside_the_root(kiln, outside_notebook, path):
    for body in ({"path": path}, {"path": path, "notebook": {"cells": []}}):
        code, answer = kiln.refused("compile", method="POST", body=json.dumps(body))
        assert code in (403, 404), (path, code)
        assert "secret" not in json.dumps(answer).replace(path, "")


@pytest.mark.parametrize("path", ESCAPES)
def test_runs_refuse_paths_outside_the_root(kiln, outside_notebook, path):
    code, _ = kiln.refused("runs", method="POST", body=json.dumps({"path": path}))
    assert code in (403, 404)
    code, _ = kiln.refused("runs", params={"path": path})
    assert code in (403, 404)


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "endpoint", "body"),
    [
        ("POST", "kiln/compile", json.dumps({"path": "a.ipynb"})),
        ("POST", "kiln/runs", json.dumps({"path": "a.ipynb"})),
        ("GET", "kiln/runs", None),
        ("GET", "kiln/runs/0123abcd", None),
        ("GET", "kiln/lineage?path=a.ipynb", None),
        ("POST", "kiln/outputs", json.dumps({"path": "a.ipynb", "run_id": "abcd"})),
        ("POST", "kiln/export", json.dumps({"path": "a.ipynb"})),
        ("GET", "kiln/schedules?path=a.ipynb", None),
        ("POST", "kiln/schedules", json.dumps({"path": "a.ipynb", "cron": "* * * * *"})),
        ("POST", "kiln/schedules/a/pause?path=a.ipynb", "{}"),
        ("DELETE", "kiln/schedules/a?path=a.ipynb", None),
        ("GET", "kiln/schedules/a/runs?path=a.ipynb", None),
    ],
)
def test_requests_without_token_are_refused(
    jp_serverapp, http_server_client, jp_http_port, jp_base_url, run, root, method, endpoint, body
):
    make_notebook(root / "a.ipynb", [("x = 1", ["task:t"])])
    url = f"http://localhost:{jp_http_port}{jp_base_url}{endpoint}"

    with pytest.raises(HTTPClientError) as caught:
        run(AsyncHTTPClient().fetch(url, method=method, body=body, raise_error=True))

    assert caught.value.code in (401, 403)
    assert not (root / "pipelines").exists() and not (root / ".kiln").exists()


def test_post_with_cookie_but_without_xsrf_is_refused(
    jp_serverapp, http_server_client, jp_http_port, jp_base_url, run, root
):
    """A browser session cookie alone (no token, no _xsrf) cannot start a run: XSRF holds."""
    make_notebook(root / "a.ipynb", [("x = 1", ["task:t"])])
    url = f"http://localhost:{jp_http_port}{jp_base_url}kiln/runs"
    with pytest.raises(HTTPClientError) as caught:
        run(
            AsyncHTTPClient().fetch(
                url,
                method="POST",
                body=json.dumps({"path": "a.ipynb"}),
                headers={"Cookie": "username-localhost=forged"},
            )
        )
    assert caught.value.code in (401, 403)


# -- runs ----------------------------------------------------------------------------------


def wait_for_run(kiln: Kiln, run_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = kiln.get("runs", run_id)
        if state["status"] in ("succeeded", "failed"):
            return state
        assert time.monotonic() < deadline, f"run still {state['status']} after {timeout}s"
        kiln.run(asyncio.sleep(0.2))  # the server works on this loop meanwhile


@pytest.mark.timeout(300)
def test_run_reports_every_task_and_the_output_notebook(kiln, root, dask_scheduler_address):
    make_notebook(root / "work" / "three.ipynb", THREE_TASKS)

    code, started = kiln.post(
        "runs",
        {"path": "work/three.ipynb", "scheduler": dask_scheduler_address, "params": {"n": 5}},
    )
    assert code == 202
    state = wait_for_run(kiln, started["run_id"])

    assert state["status"] == "succeeded", state
    assert {name: t["status"] for name, t in state["tasks"].items()} == {
        "load": "done",
        "add": "done",
        "report": "done",
    }
    assert all(t["duration"] is not None for t in state["tasks"].values())
    statuses = [e["status"] for e in state["events"] if e["type"] == "task"]
    assert "running" in statuses and "done" in statuses
    out = state["output_notebook"]
    assert out and not out.startswith("/") and (root / out).is_file()
    assert state["parameters"] == {"n": 5}

    with open_store(None, root / "work" / "three.ipynb") as store:  # lineage beside it
        assert store.show_run(started["run_id"])["status"] == "succeeded"

    listed = kiln.get("runs", path="work/three.ipynb")
    assert [r["run_id"] for r in listed["runs"]] == [started["run_id"]]
    later = kiln.get("runs", started["run_id"], since="1000")
    assert later["events"] == [] and later["event_count"] == len(state["events"])


@pytest.mark.timeout(300)
def test_the_ui_follows_a_run_with_long_polls_that_answer_each_change(
    kiln, root, dask_scheduler_address
):
    """As the Pipeline panel follows a run: each request names the version it has and the
    server answers when the run changed, so every answer brings something new, the task's
    `running` comes while the task runs, and the last answer is the settled run."""
    make_notebook(
        root / "slow.ipynb",
        [
            ("import time", ["setup"]),
            ("time.sleep(1.5)\nx = 1", ["task:slow"]),
            ("y = x + 1", ["task:after"]),
        ],
    )
    _, started = kiln.post("runs", {"path": "slow.ipynb", "scheduler": dask_scheduler_address})
    run_id = started["run_id"]
    state = kiln.get("runs", run_id)  # the first poll answers at once
    events = list(state["events"])
    answers = [state]
    while not state["settled"]:
        state = kiln.get(
            "runs", run_id, since=str(len(events)), after=str(state["version"]), wait="30"
        )
        assert state["version"] > answers[-1]["version"] or state["settled"]
        events += state["events"]
        answers.append(state)

    assert state["status"] == "succeeded" and state["output_notebook"]
    assert events == kiln.get("runs", run_id)["events"]  # nothing missed, nothing twice
    seen = [a["tasks"].get("slow", {}).get("status") for a in answers]
    assert "running" in seen and seen.index("running") < seen.index("done")
    # A settled run answers at once, whatever version the reader has.
    again = kiln.get("runs", run_id, after=str(state["version"]), wait="30")
    assert again["settled"] and again["version"] == state["version"]
    code, body = kiln.refused("runs", run_id, params={"after": "soon"})
    assert code == 400 and "'after' must be an integer" in body["message"]


@pytest.mark.timeout(300)
def test_a_run_reuses_the_compile_of_the_content_the_ui_posted(
    kiln, root, monkeypatch, dask_scheduler_address
):
    """The UI compiles the notebook as it is edited; Run saves it and the server finds that
    compile instead of analysing the same content again."""
    import compiler.compile.api as api

    path = make_notebook(root / "once.ipynb", THREE_TASKS)
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:  # as JupyterLab's model posts it: outputs left out
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    _, compiled = kiln.post("compile", {"path": "once.ipynb", "notebook": notebook})
    assert compiled["ok"]
    calls: list[Any] = []
    for name in ("compile_notebook", "compile_notebook_json"):
        real = getattr(api, name)
        monkeypatch.setattr(
            api, name, lambda *a, _real=real, **k: calls.append(a) or _real(*a, **k)
        )

    code, started = kiln.post("runs", {"path": "once.ipynb", "scheduler": dask_scheduler_address})

    assert code == 202 and calls == []
    assert wait_for_run(kiln, started["run_id"])["status"] == "succeeded"
    path.write_text(path.read_text().replace("n = 4", "n = 6"))  # edited on disk: compiled anew
    kiln.post("export", {"path": "once.ipynb"})
    assert len(calls) == 1


@pytest.mark.timeout(300)
def test_failed_task_points_at_its_cell_and_line(kiln, root, dask_scheduler_address):
    make_notebook(
        root / "fails.ipynb",
        [
            ("a = 1", ["task:one"]),
            ("b = a + 1\nc = b / 0", ["task:two"]),
            ("d = a * 2", ["task:three"]),
        ],
    )

    lineage_db = root / "team-lineage.db"
    _, started = kiln.post(
        "runs",
        {
            "path": "fails.ipynb",
            "scheduler": dask_scheduler_address,
            "lineage_db": f"sqlite:///{lineage_db}",
        },
    )
    state = wait_for_run(kiln, started["run_id"])

    assert state["status"] == "failed"
    two = state["tasks"]["two"]
    assert two["status"] == "failed"
    assert two["error"]["cell_index"] == 1 and two["error"]["line"] == 2
    assert two["error"]["ename"] == "ZeroDivisionError"
    assert state["tasks"]["three"]["status"] == "done"  # independent branches still finish
    with open_store(f"sqlite:///{lineage_db}") as store:  # the lineage URL from the settings
        assert store.show_run(started["run_id"])["status"] == "failed"


def test_run_of_a_notebook_with_errors_is_400_with_diagnostics(kiln, root):
    make_notebook(root / "broken.ipynb", [("b = nowhere + 1", ["task:two"])])

    code, body = kiln.refused("runs", method="POST", body=json.dumps({"path": "broken.ipynb"}))

    assert code == 400
    assert "nowhere" in body["message"]
    assert body["diagnostics"][0]["cell_index"] == 0


@pytest.mark.parametrize(
    "extra",
    [{"params": [1]}, {"scheduler": 5}, {"workers": "two"}, {"workers": True}, {"force": "x"}],
)
def test_run_bad_options_are_400(kiln, root, extra):
    make_notebook(root / "a.ipynb", [("x = 1", ["task:t"])])
    code, body = kiln.refused("runs", method="POST", body=json.dumps({"path": "a.ipynb", **extra}))
    assert code == 400 and body["message"]


def test_unknown_run_is_404(kiln):
    code, body = kiln.refused("runs", "0123456789abcdef")
    assert code == 404 and "0123456789abcdef" in body["message"]


def test_runs_list_is_empty_in_a_fresh_server(kiln):
    assert kiln.get("runs") == {"runs": []}
