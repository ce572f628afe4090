"""Authorization: every /kiln/ endpoint asks the server's Authorizer, with the action it amounts
to, so a deployment can let some users read pipelines without running notebook code."""

# ruff: noqa: F811
from __future__ import annotations

from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer

# See tests/test_server.py for why pytest-jupyter's fixtures are imported, not registered.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from tests.nbutil import make_notebook
from tests.test_server import THREE_TASKS, Kiln, kiln, root, run  # noqa: F401

DENIED: list[tuple[str, str]] = []  # (action, resource) pairs the server asked about and refused


class ReadOnlyKiln(Authorizer):
    """A viewer: may read anything, may not change or run anything through Kiln."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource == "kiln" and action != "read":
            DENIED.append((action, resource))
            return False
        return True


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_ext": True},
            "authorizer_class": ReadOnlyKiln,
        }
    }


def test_a_read_only_user_can_compile_and_browse_but_not_run_export_or_schedule(kiln, root):
    make_notebook(root / "three.ipynb", THREE_TASKS)
    DENIED.clear()

    code, compiled = kiln.post("compile", {"path": "three.ipynb"})
    assert code == 200 and compiled["ok"]
    assert kiln.get("runs", path="three.ipynb")["runs"] == []
    assert kiln.get("schedules", path="three.ipynb")["schedules"] == []

    body = b'{"path": "three.ipynb"}'
    for endpoint, payload in (
        ("runs", body),
        ("export", body),
        ("schedules", b'{"path": "three.ipynb", "name": "daily", "cron": "0 6 * * *"}'),
    ):
        status, _ = kiln.refused(endpoint, method="POST", body=payload)
        assert status == 403, endpoint
    status, _ = kiln.refused("runs/0123abcd/cancel", method="POST", body=b"{}")
    assert status == 403  # cancelling a run is `execute`, asked before the run is looked up
    assert DENIED == [
        ("execute", "kiln"),
        ("write", "kiln"),
        ("execute", "kiln"),
        ("execute", "kiln"),
    ]
    # Reading a notebook as read-only HTML (the output viewer) is `read`.
    assert "<html" in kiln.get("outputs/html", path="three.ipynb")["html"]
    # Nothing ran and nothing was written beside the notebook.
    assert not (root / ".kiln" / "runs").exists() and not (root / "pipelines").exists()
