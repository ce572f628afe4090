"""GET /kiln/metrics against a live jupyter_server, after real runs of a monitored notebook on
the shared Dask cluster: what the Metrics section of the Pipeline panel reads."""

# ruff: noqa: F811
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# See tests/test_server.py for why pytest-jupyter's fixtures are imported, not registered.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from compiler.cli.main import main
from tests.test_metrics import DECLARED_ORDER
from tests.test_server import Kiln, jp_server_config, kiln, root, run  # noqa: F401

NOTEBOOKS = Path(__file__).parent / "notebooks"


def monitored(root: Path) -> Path:
    (root / "work" / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(NOTEBOOKS / "data" / "wine.csv", root / "work" / "data")
    target = root / "work" / "monitored_wine.ipynb"
    shutil.copy(NOTEBOOKS / "monitored_wine.ipynb", target)
    return target


@pytest.mark.timeout(180)
def test_metrics_lists_each_runs_values_verdicts_and_the_baseline(
    kiln: Kiln, root: Path, dask_scheduler_address: str
):
    notebook = monitored(root)
    for args in ([], ["-p", "n_features", "2"]):
        assert main(["run", str(notebook), "--scheduler", dask_scheduler_address, *args]) == 0
    answer = kiln.get("metrics", path="work/monitored_wine.ipynb")
    assert answer["path"] == "work/monitored_wine.ipynb" and "notebook_path" not in answer
    first, second = answer["runs"]
    assert first["metrics"]["accuracy"] == 1.0 and round(second["metrics"]["accuracy"], 4) == 0.7778
    assert second["flagged"] is True and second["baseline_run"] == first["run_id"]
    warn = next(v for v in second["verdicts"] if v["kind"] == "warn")
    assert warn["passed"] is False and warn["tag"] == "warn:scores.logreg.f1>=0.8"
    assert answer["baseline"] == {"run_id": second["run_id"], "pinned": False}
    # In the notebook's order (the metrics cell's names, then kiln.log_metric's), as the CLI.
    assert answer["metrics"] == DECLARED_ORDER
    assert list(second["metrics"]) == answer["metrics"]
    assert len(kiln.get("metrics", path="work/monitored_wine.ipynb", limit="1")["runs"]) == 1


def test_metrics_of_a_notebook_never_run_is_empty_and_creates_nothing(kiln: Kiln, root: Path):
    notebook = monitored(root)
    answer = kiln.get("metrics", path="work/monitored_wine.ipynb")
    assert answer["runs"] == [] and answer["baseline"] is None
    assert not (notebook.parent / ".kiln").exists()


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({}, 400),
        ({"path": "missing.ipynb"}, 404),
        ({"path": "work/monitored_wine.ipynb", "limit": "0"}, 400),
        ({"path": "../outside.ipynb"}, 403),
    ],
)
def test_metrics_bad_requests_are_4xx_json(kiln: Kiln, root: Path, params, status):
    monitored(root)
    code, answer = kiln.refused("metrics", params=params)
    assert code == status and answer["message"]
