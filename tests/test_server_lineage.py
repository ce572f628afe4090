"""The lineage, output, export and schedule endpoints under /kiln/, against a live jupyter_server:
a notebook is run for real (on the shared Dask cluster), then asked about as the panel asks."""

# ruff: noqa: F811
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

# See tests/test_server.py for why pytest-jupyter's fixtures are imported, not registered.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from compiler.compile.api import compile_notebook
from compiler.lineage import open_store
from compiler.schedule.scheduler import add_schedule, schedule_run_rows
from tests.nbutil import make_notebook

# The server fixtures and the endpoint client are test_server's (pytest finds imported fixtures;
# the tests' parameters of the same names are what F811 would flag).
from tests.test_server import (  # noqa: F401
    ESCAPES,
    Kiln,
    jp_server_config,
    kiln,
    outside_notebook,
    root,
    run,
)

FLOW = [
    ("import pandas as pd", ["setup"]),
    ("factor = 2", ["parameters"]),
    ("df = pd.read_csv('data/in.csv')", ["task:load"]),
    ("scaled = df * factor\nscaled.to_csv('out.csv')", ["task:scale"]),
]


def flow_notebook(root: Path) -> Path:
    (root / "work" / "data").mkdir(parents=True, exist_ok=True)
    (root / "work" / "data" / "in.csv").write_text("a,b\n1,2\n3,4\n")
    return make_notebook(root / "work" / "flow.ipynb", FLOW, owner="Ana Lima")


def record_run(notebook: Path, scheduler: str, **params: Any) -> str:
    """Run the notebook as `kiln run` would (lineage beside it, output notebook in .kiln/)."""
    from compiler.ops.run import run_spec

    result = run_spec(
        compile_notebook(notebook).spec,
        notebook_path=str(notebook),
        scheduler=scheduler,
        params=params or None,
    ).to_dict()
    assert result["status"] == "succeeded", result
    return str(result["run_id"])


def delete(kiln: Kiln, *parts: str, **params: str) -> int:
    response = kiln.run(kiln.fetch("kiln", *parts, method="DELETE", params=params))
    return int(response.code)


# -- lineage -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_lineage_of_a_task_lists_its_runs_artifacts_and_files(kiln, root, dask_scheduler_address):
    notebook = flow_notebook(root)
    first = record_run(notebook, dask_scheduler_address)
    second = record_run(notebook, dask_scheduler_address, factor=3)

    answer = kiln.get("lineage", path="work/flow.ipynb", task="load")

    assert answer["path"] == "work/flow.ipynb" and answer["task"] == "load"
    assert [r["run_id"] for r in answer["runs"]] == [second, first]  # newest first
    latest = answer["runs"][0]
    assert latest["status"] == "succeeded" and latest["parameters"] == {"factor": 3}
    assert latest["has_output"] is True
    load = latest["task"]
    assert load["status"] == "cached" and load["cached"] is True  # same code and input: a hit
    assert answer["runs"][1]["task"]["cached"] is False
    assert load["version"] and load["attempts"] in (0, 1)
    (artifact,) = load["outputs"]
    assert artifact["name"] == "df" and artifact["type"] == "pandas.DataFrame"
    assert artifact["summary"]["shape"] == [2, 2] and artifact["summary"]["columns"] == ["a", "b"]
    assert load["reads"] == [
        {"name": "data/in.csv", "path": "work/data/in.csv", "digest": load["reads"][0]["digest"]}
    ]

    scale = kiln.get("lineage", path="work/flow.ipynb", task="scale")["runs"][0]["task"]
    assert scale["parameters"] == {"factor": 3} and scale["cached"] is False
    assert scale["inputs"] == [{"name": "df", "producer": "load"}]
    assert [w["name"] for w in scale["writes"]] == ["out.csv"]

    everything = kiln.get("lineage", path="work/flow.ipynb", limit="1")
    assert len(everything["runs"]) == 1 and set(everything["runs"][0]["tasks"]) == {"load", "scale"}
    assert kiln.get("lineage", path="work/flow.ipynb", task="nope")["runs"] == []


def test_lineage_of_a_notebook_never_run_is_empty_and_creates_nothing(kiln, root):
    notebook = flow_notebook(root)
    assert kiln.get("lineage", path="work/flow.ipynb", task="load")["runs"] == []
    assert not (notebook.parent / ".kiln").exists()


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({}, 400),
        ({"path": "missing.ipynb"}, 404),
        ({"path": "work/flow.ipynb", "limit": "x"}, 400),
        ({"path": "work/flow.ipynb", "limit": "0"}, 400),
        ({"path": "work/flow.ipynb", "lineage_db": "nosuchdialect://x"}, 400),
    ],
)
def test_lineage_bad_requests_are_4xx_json(kiln, root, params, status):
    flow_notebook(root)
    code, answer = kiln.refused("lineage", params=params)
    assert code == status and answer["message"]


# -- output notebooks ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_hidden_output_notebook_is_copied_where_jupyterlab_opens_it(
    kiln, root, dask_scheduler_address
):
    notebook = flow_notebook(root)
    run_id = record_run(notebook, dask_scheduler_address)

    code, answer = kiln.post("outputs", {"path": "work/flow.ipynb", "run_id": run_id[:8]})

    assert code == 200
    assert answer["path"] == f"work/kiln-runs/flow/{run_id}.ipynb"
    copied = json.loads((root / answer["path"]).read_text())
    assert copied["metadata"]["kiln"]["run_id"] == run_id
    contents = kiln.run(kiln.fetch("api", "contents", answer["path"]))  # JupyterLab opens it
    assert json.loads(contents.body)["type"] == "notebook"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"path": "work/flow.ipynb"}, 400),
        ({"path": "work/flow.ipynb", "run_id": "abc", "schedule": "x", "run": 1}, 400),
        ({"path": "work/flow.ipynb", "run_id": 5}, 400),
        ({"path": "work/flow.ipynb", "schedule": "x", "run": "1"}, 400),
        ({"path": "work/flow.ipynb", "run_id": "0123456789abcdef"}, 404),
        ({"path": "work/flow.ipynb", "schedule": "nope", "run": 1}, 404),
    ],
)
def test_outputs_bad_requests_are_4xx_json(kiln, root, body, status):
    notebook = flow_notebook(root)
    open_store(None, notebook).close()  # an empty lineage database beside it
    code, answer = kiln.refused("outputs", method="POST", body=json.dumps(body))
    assert code == status and answer["message"]


@pytest.mark.timeout(120)
def test_outputs_of_another_notebooks_run_are_refused(kiln, root, dask_scheduler_address):
    notebook = flow_notebook(root)
    run_id = record_run(notebook, dask_scheduler_address)
    make_notebook(root / "work" / "other.ipynb", [("x = 1", ["task:t"])])
    body = {"path": "work/other.ipynb", "run_id": run_id}
    code, answer = kiln.refused("outputs", method="POST", body=json.dumps(body))
    assert code == 404 and "not a run of this notebook" in answer["message"]


# -- export --------------------------------------------------------------------------------------


def test_export_writes_the_bundle_once_per_version(kiln, root):
    flow_notebook(root)

    code, first = kiln.post("export", {"path": "work/flow.ipynb"})
    assert code == 201 and first["created"] is True
    assert first["path"] == f"work/pipelines/flow/{first['version']}"
    assert {"pipeline.json", "run.py", "tasks.py", "requirements.txt"} <= set(first["files"])
    assert (root / first["path"] / "pipeline.json").is_file()

    code, again = kiln.post("export", {"path": "work/flow.ipynb"})
    assert code == 200 and again["created"] is False and again["path"] == first["path"]


def test_export_of_a_notebook_with_errors_is_400_with_its_message(kiln, root):
    make_notebook(root / "broken.ipynb", [("b = nowhere + 1", ["task:two"])])
    body = json.dumps({"path": "broken.ipynb"})
    code, answer = kiln.refused("export", method="POST", body=body)
    assert code == 400
    assert answer["message"].startswith("cannot export") and "nowhere" in answer["message"]
    assert answer["diagnostics"][0]["cell_index"] == 0
    assert not (root / "pipelines").exists()


@pytest.mark.parametrize(
    ("body", "status"), [("nope", 400), ("{}", 400), ('{"path": "missing.ipynb"}', 404)]
)
def test_export_bad_requests_are_4xx_json(kiln, body, status):
    code, answer = kiln.refused("export", method="POST", body=body)
    assert code == status and answer["message"]


# -- schedules -----------------------------------------------------------------------------------


def test_schedules_create_list_pause_resume_remove(kiln, root):
    notebook = flow_notebook(root)
    assert kiln.get("schedules", path="work/flow.ipynb")["schedules"] == []

    code, created = kiln.post(
        "schedules",
        {
            "path": "work/flow.ipynb",
            "name": "nightly",
            "cron": "0 6 * * *",
            "timezone": "Europe/Paris",
            "parameters": {"factor": 5},
            "engine": "papermill",
        },
    )
    assert code == 201
    assert created["name"] == "nightly" and created["notebook"] == "work/flow.ipynb"
    assert created["state"] == "active" and created["last_runs"] == []
    assert created["parameters"] == {"factor": 5} and created["engine"] == "papermill"
    due = dt.datetime.fromisoformat(created["next_due_at"])
    assert due.astimezone(dt.timezone(dt.timedelta(hours=1))).hour in (6, 7)  # 6:00 Paris
    assert created["scheduler"] == {"enabled": False, "serving": False}

    listed = kiln.get("schedules", path="work/flow.ipynb")
    assert [s["name"] for s in listed["schedules"]] == ["nightly"]
    with open_store(None, notebook) as store:  # in the lineage database beside the notebook
        assert schedule_run_rows(store, "nightly") == []

    code, paused = kiln.post("schedules/nightly/pause", {}, path="work/flow.ipynb")
    assert code == 200 and paused["paused"] is True and paused["state"] == "paused"
    code, resumed = kiln.post("schedules/nightly/resume", {}, path="work/flow.ipynb")
    assert resumed["paused"] is False and resumed["state"] == "active"
    assert kiln.get("schedules", "nightly", "runs", path="work/flow.ipynb") == {
        "name": "nightly",
        "runs": [],
    }

    assert delete(kiln, "schedules", "nightly", path="work/flow.ipynb") == 204
    assert kiln.get("schedules", path="work/flow.ipynb")["schedules"] == []


def test_schedule_name_defaults_to_the_notebook_and_is_unique(kiln, root):
    flow_notebook(root)
    body = {"path": "work/flow.ipynb", "cron": "*/5 * * * *"}
    code, created = kiln.post("schedules", body)
    assert code == 201 and created["name"] == "flow" and created["engine"] == "kiln"
    code, answer = kiln.refused("schedules", method="POST", body=json.dumps(body))
    assert code == 409 and "already exists" in answer["message"]


def test_parameter_values_typed_in_the_panel_are_read_like_the_cli_reads_them(kiln, root):
    make_notebook(
        root / "typed.ipynb",
        [("factor = 2\nlabel = 'v1'\nlimits = [1, 2]", ["parameters"]), ("y = factor", ["task:a"])],
        owner="Ana Lima",
    )
    texts = {"factor": "3", "label": "1.10", "limits": "[5, 6]"}
    code, created = kiln.post(
        "schedules", {"path": "typed.ipynb", "cron": "0 6 * * *", "parameter_texts": texts}
    )
    assert code == 201
    # The default's type (int, str), else YAML: "1.10" stays text, as with `-p label 1.10`.
    assert created["parameters"] == {"factor": 3, "label": "1.10", "limits": [5, 6]}
    for texts, fragment in (
        ({"factor": "three"}, "is an int"),
        ({"rate": "0.5"}, "unknown parameter 'rate'"),
    ):
        code, answer = kiln.refused(
            "schedules",
            method="POST",
            body=json.dumps(
                {"path": "typed.ipynb", "name": "x", "cron": "0 6 * * *", "parameter_texts": texts}
            ),
        )
        assert code == 400 and fragment in answer["message"], answer


def test_two_clients_adding_the_same_schedule_at_once_get_201_and_409(kiln, root):
    flow_notebook(root)
    body = json.dumps({"path": "work/flow.ipynb", "name": "twice", "cron": "0 * * * *"})

    async def post() -> int:
        response = await kiln.fetch(
            "kiln", "schedules", method="POST", body=body, raise_error=False
        )
        return int(response.code)

    async def both() -> list[int]:
        return list(await asyncio.gather(post(), post()))

    assert sorted(kiln.run(both())) == [201, 409]
    assert [s["name"] for s in kiln.get("schedules", path="work/flow.ipynb")["schedules"]] == [
        "twice"
    ]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({}, "'cron' is required"),
        ({"cron": "every day"}, "invalid cron expression"),
        ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 6 * * *", "engine": "airflow"}, "engine"),
        ({"cron": "0 6 * * *", "missed": "panic"}, "missed-run policy"),
        ({"cron": "0 6 * * *", "name": "../x"}, "schedule name"),
        ({"cron": "0 6 * * *", "parameters": [1]}, "'parameters' must be an object"),
        ({"cron": "0 6 * * *", "parameters": {"nope": 1}}, "unknown parameter 'nope'"),
        ({"cron": 5}, "'cron' must be a string"),
    ],
)
def test_schedule_bad_input_is_400_with_a_clear_message(kiln, root, extra, fragment):
    flow_notebook(root)
    body = json.dumps({"path": "work/flow.ipynb", **extra})
    code, answer = kiln.refused("schedules", method="POST", body=body)
    assert code == 400 and fragment in answer["message"], answer


def test_schedule_actions_on_unknown_or_foreign_schedules_are_404(kiln, root):
    notebook = flow_notebook(root)
    other = make_notebook(root / "work" / "other.ipynb", [("x = 1", ["task:t"])], owner="Bo")
    with open_store(None, notebook) as store:  # same folder: same database
        add_schedule(store, "theirs", other, "0 6 * * *")
    for endpoint, method in [
        ("schedules/theirs/pause", "POST"),
        ("schedules/ghost/resume", "POST"),
        ("schedules/theirs", "DELETE"),
        ("schedules/theirs/runs", "GET"),
    ]:
        body = "{}" if method == "POST" else None
        params = {"path": "work/flow.ipynb"}
        code, answer = kiln.refused(endpoint, method=method, body=body, params=params)
        assert code == 404 and answer["message"], endpoint
    assert kiln.get("schedules", path="work/flow.ipynb")["schedules"] == []
    assert [s["name"] for s in kiln.get("schedules", path="work/other.ipynb")["schedules"]] == [
        "theirs"
    ]


# -- the server's own scheduler -------------------------------------------------------------------


class TestServerScheduler:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
            "KilnExtension": {"run_scheduler": True, "scheduler_poll_seconds": 0.2},
        }

    @pytest.mark.timeout(120)
    def test_a_due_schedule_runs_in_the_server_and_its_output_opens(self, kiln, root):
        flow_notebook(root)
        code, created = kiln.post(
            "schedules",
            {
                "path": "work/flow.ipynb",
                "name": "every-second",
                "cron": "* * * * * *",
                "engine": "papermill",
                "parameters": {"factor": 4},
            },
        )
        assert code == 201 and created["scheduler"] == {"enabled": True, "serving": True}

        deadline = time.monotonic() + 90
        while True:
            runs = kiln.get("schedules", "every-second", "runs", path="work/flow.ipynb")["runs"]
            done = [r for r in runs if r["status"] in ("succeeded", "failed")]
            if done:
                break
            assert time.monotonic() < deadline, runs
            kiln.run(asyncio.sleep(0.3))
        kiln.post("schedules/every-second/pause", {}, path="work/flow.ipynb")
        assert done[-1]["status"] == "succeeded", done[-1]
        assert done[-1]["has_output"] is True

        code, answer = kiln.post(
            "outputs",
            {"path": "work/flow.ipynb", "schedule": "every-second", "run": done[-1]["id"]},
        )
        assert code == 200
        assert answer["path"].startswith("work/kiln-runs/flow/schedules/every-second/")
        output = json.loads((root / answer["path"]).read_text())
        assert any("factor = 4" in "".join(c["source"]) for c in output["cells"])  # injected
        listed = kiln.get("schedules", path="work/flow.ipynb")["schedules"][0]
        assert listed["last_runs"] and listed["state"] == "paused"


# -- confinement and authentication ----------------------------------------------------------------


@pytest.mark.parametrize("path", ESCAPES)
def test_new_endpoints_refuse_paths_outside_the_root(kiln, outside_notebook, path):
    requests = [
        ("lineage", {"params": {"path": path}}),
        ("schedules", {"params": {"path": path}}),
        ("schedules/x/runs", {"params": {"path": path}}),
        ("schedules/x/pause", {"method": "POST", "body": "{}", "params": {"path": path}}),
        ("schedules/x", {"method": "DELETE", "params": {"path": path}}),
        ("export", {"method": "POST", "body": json.dumps({"path": path})}),
        ("outputs", {"method": "POST", "body": json.dumps({"path": path, "run_id": "abcd"})}),
        ("schedules", {"method": "POST", "body": json.dumps({"path": path, "cron": "* * * * *"})}),
    ]
    for endpoint, kwargs in requests:
        code, answer = kiln.refused(endpoint, **kwargs)
        assert code in (403, 404), (endpoint, path, code)
        assert "secret" not in json.dumps(answer).replace(path, "")
    assert not (outside_notebook.parent / "pipelines").exists()
    assert not (outside_notebook.parent / ".kiln").exists()


@pytest.mark.parametrize(
    ("endpoint", "method", "request_options", "status", "fragment"),
    [
        ("lineage", "GET", {"lineage_db": "sqlite:////tmp/kiln-elsewhere.db"}, 403, "inside"),
        ("lineage", "GET", {"lineage_db": "sqlite:///../up.db"}, 403, "inside"),
        ("lineage", "GET", {"lineage_db": "not a url"}, 400, "not a database URL"),
        ("schedules", "POST", {"lineage_db": "sqlite:////tmp/kiln-elsewhere.db"}, 403, "inside"),
        ("runs", "POST", {"lineage_db": "sqlite:////tmp/kiln-elsewhere.db"}, 403, "inside"),
        ("runs", "POST", {"store_url": "/tmp/kiln-elsewhere"}, 403, "inside"),
        ("runs", "POST", {"store_url": "file:///tmp/kiln-elsewhere"}, 403, "inside"),
        ("runs", "POST", {"params": {"nope": 1}}, 400, "unknown parameter 'nope'"),
        ("runs", "POST", {"force": ["ghost"]}, 400, "'force' names no task ghost"),
    ],
)
def test_databases_and_stores_a_request_names_stay_inside_the_root(
    kiln, root, endpoint, method, request_options, status, fragment
):
    flow_notebook(root)
    if method == "GET":
        code, answer = kiln.refused(endpoint, params={"path": "work/flow.ipynb", **request_options})
    else:
        body = {"path": "work/flow.ipynb", "cron": "0 6 * * *", **request_options}
        code, answer = kiln.refused(endpoint, method="POST", body=json.dumps(body))
    assert code == status and fragment in answer["message"], answer
    assert not Path("/tmp/kiln-elsewhere.db").exists()
    assert not Path("/tmp/kiln-elsewhere").exists()


def test_a_lineage_database_inside_the_root_is_accepted(kiln, root):
    flow_notebook(root)
    answer = kiln.get("lineage", path="work/flow.ipynb", lineage_db="sqlite:///team/lineage.db")
    assert answer["runs"] == []  # nothing recorded there yet, and nothing created by a GET
    assert not (root / "team" / "lineage.db").exists()


def test_hidden_notebooks_are_not_served(kiln, root):
    make_notebook(root / ".private" / "secret.ipynb", [("x = 1", ["task:t"])])
    code, answer = kiln.refused(
        "compile", method="POST", body=json.dumps({"path": ".private/secret.ipynb"})
    )
    assert code == 404 and "x = 1" not in json.dumps(answer)
