"""The panel's production endpoints (/kiln/alerts, /kiln/cost) against a live jupyter_server:
the routes are the ones `kiln alert` edits, mistakes are 4xx with a message."""

# ruff: noqa: F811
from __future__ import annotations

import json
from pathlib import Path

# See tests/test_server.py for why pytest-jupyter's fixtures are imported, not registered.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from compiler.lineage import open_store
from compiler.lineage.alerts import list_routes
from tests.nbutil import make_notebook

# The server fixtures and the endpoint client are test_server's.
from tests.test_server import Kiln, jp_server_config, kiln, root, run  # noqa: F401
from tests.test_server_lineage import delete, record_run


def test_alert_routes_added_in_the_panel_are_the_ones_kiln_alert_lists(kiln: Kiln, root: Path):
    notebook = make_notebook(root / "report.ipynb", [("x = 1", ["task:t"])], owner="Ana Lima")
    answer = kiln.get("alerts", path="report.ipynb")
    assert answer == {"routes": [], "owner": "Ana Lima", "team": None, "budget": None}

    code, route = kiln.post(
        "alerts",
        {"path": "report.ipynb", "kind": "webhook", "target": "${TEAM_HOOK}", "events": "failed"},
    )
    assert code == 201 and route["events"] == ["failed"] and "notebook" not in route
    with open_store(None, notebook) as store:
        assert [r.target for r in list_routes(store, notebook=notebook)] == ["${TEAM_HOOK}"]

    code, body = kiln.refused(
        "alerts",
        method="POST",
        body=json.dumps({"path": "report.ipynb", "kind": "email", "target": "not-an-address"}),
    )
    assert code == 400 and "is not an email address" in body["message"]
    code, body = kiln.refused(
        "alerts",
        method="POST",
        body=json.dumps(
            {
                "path": "report.ipynb",
                "kind": "webhook",
                "target": "https://a.example/x",
                "events": "fire",
            }
        ),
    )
    assert code == 400 and "unknown alert event(s) fire" in body["message"]

    assert delete(kiln, "alerts", str(route["id"]), path="report.ipynb") == 204
    assert kiln.get("alerts", path="report.ipynb")["routes"] == []
    code, body = kiln.refused(
        "alerts", str(route["id"]), method="DELETE", params={"path": "report.ipynb"}
    )
    assert code == 404


def test_the_cost_endpoint_reports_a_recorded_run(kiln: Kiln, root: Path, dask_scheduler_address):
    notebook = make_notebook(root / "sum.ipynb", [("total = sum(range(10**6))", ["task:add"])])
    run_id = record_run(notebook, dask_scheduler_address)
    report = kiln.get("cost", path="sum.ipynb")
    assert [r["run_id"] for r in report["runs"]] == [run_id]
    task = report["runs"][0]["tasks"][0]
    assert task["task"] == "add" and task["cost"]["cpu_s"] > 0
    assert report["prices"] == {"cpu_hour": 0.0, "gb_hour": 0.0, "gpu_hour": 0.0}
