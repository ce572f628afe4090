"""A user's session in JupyterLab: tag cells as tasks, see the DAG, run it, follow the badges.

Runs a real `jupyter lab` (with the built extension installed) and headless Chromium; the
screenshots land in tests/ui/screenshots/.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.nbutil import make_notebook
from tests.ui.conftest import Lab

pytestmark = pytest.mark.timeout(300)

PANEL = "#kiln-pipeline-panel"


def open_notebook(page: Any, lab: Lab, name: str) -> None:
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # The kernel is not needed for Kiln; wait until the page settles so clicks land.
    page.wait_for_selector(".jp-NotebookPanel-toolbar [data-command='kiln:run']")


def open_panel(page: Any) -> None:
    tab = page.locator(".jp-SideBar.jp-mod-right li[data-id='kiln-pipeline-panel']")
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-title")


def cell(page: Any, index: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def select_cell(page: Any, index: int) -> None:
    cell(page, index).locator(".jp-InputPrompt").click()
    page.wait_for_function(
        "i => document.querySelectorAll('.jp-Notebook .jp-Cell')[i]"
        ".classList.contains('jp-mod-active')",
        arg=index,
    )


def tag_in_panel(page: Any, index: int, name: str) -> None:
    """Make cell `index` the start of task `name` with the Pipeline panel's editor."""
    select_cell(page, index)
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cell h3:has-text('Cell {index}')")
    editor = page.locator(f"{PANEL} .kiln-TagEditor")
    editor.locator("select[name=role]").select_option("task")
    editor.locator("input[name=name]").fill(name)
    page.locator(f"{PANEL} .kiln-Panel-apply").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-tags:has-text('task:{name}')")


def tag_with_cell_toolbar(page: Any, index: int, name: str, retries: str = "") -> None:
    """Same, through the cell toolbar's Kiln button and its dialog."""
    select_cell(page, index)
    cell(page, index).hover()
    cell(page, index).locator("[data-command='kiln:edit-cell-tags']").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("select[name=role]").select_option("task")
    dialog.locator("input[name=name]").fill(name)
    if retries:
        dialog.locator(".kiln-TagEditor-options > summary").click()
        dialog.locator("input[name=retries]").fill(retries)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    page.wait_for_selector(".jp-Dialog", state="detached")


def dag_nodes(page: Any) -> list[str]:
    return page.locator(f"{PANEL} .kiln-Dag-node").evaluate_all(
        "nodes => nodes.map(n => n.dataset.task)"
    )


def dag_edges(page: Any) -> set[tuple[str, str]]:
    pairs = page.locator(f"{PANEL} .kiln-Dag-edge").evaluate_all(
        "edges => edges.map(e => [e.dataset.from, e.dataset.to])"
    )
    return {(a, b) for a, b in pairs}


def saved_tags(path: Path) -> list[list[str]]:
    return [c.get("metadata", {}).get("tags", []) for c in json.loads(path.read_text())["cells"]]


def test_tag_three_tasks_see_the_dag_and_run_it(lab: Lab, page: Any, screenshots: Path) -> None:
    path = make_notebook(
        lab.root / "analysis.ipynb",
        [
            "# md: # Sales analysis\nTag the cells below as tasks, then run the pipeline.",
            ("import math\nimport time", ["setup"]),
            ("scale = 3", ["parameters"]),
            "time.sleep(0.5)\nxs = [i * scale for i in range(10)]",
            "time.sleep(0.5)\ntotal = sum(xs)",
            "root = math.sqrt(total)\nprint(f'root = {root:.2f}')",
        ],
    )
    open_notebook(page, lab, "analysis.ipynb")
    open_panel(page)
    # Untagged code cells compile to one task (every notebook runs).
    page.wait_for_function(
        f"document.querySelectorAll('{PANEL} .kiln-Dag-node').length === 1", timeout=30_000
    )

    tag_with_cell_toolbar(page, 3, "load", retries="2")
    tag_in_panel(page, 4, "add")
    tag_in_panel(page, 5, "report")

    page.wait_for_function(
        f"document.querySelectorAll('{PANEL} .kiln-Dag-node').length === 3", timeout=30_000
    )
    assert dag_nodes(page) == ["load", "add", "report"]
    assert dag_edges(page) == {("load", "add"), ("add", "report")}
    badges = page.locator(".kiln-CellBadge:visible .kiln-Chip").all_inner_texts()
    assert badges == ["setup", "parameters", "load", "add", "report"]
    select_cell(page, 4)
    page.screenshot(path=str(screenshots / "01-tagged-dag.png"))

    page.locator(".jp-NotebookPanel-toolbar [data-command='kiln:run']").click()
    page.wait_for_selector(f"{PANEL} .kiln-Run", timeout=30_000)
    page.wait_for_function(
        "document.querySelectorAll('.kiln-CellBadge .kiln-Status[data-status=done]').length === 3",
        timeout=180_000,
    )
    page.wait_for_selector(f"{PANEL} .kiln-mod-run-succeeded")
    statuses = page.locator(".kiln-CellBadge .kiln-Status").all_inner_texts()
    assert len(statuses) == 3 and all(s.startswith("done · ") for s in statuses), statuses
    assert page.locator(f"{PANEL} .kiln-Dag-node.kiln-mod-status-done").count() == 3
    assert page.locator(f"{PANEL} .kiln-Run-output").count() == 1
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "02-run-done.png"))

    tags = saved_tags(path)  # the run saved the notebook: the tags are plain cell tags
    assert tags[3] == ["task:load", "retries:2"]
    assert tags[4] == ["task:add"] and tags[5] == ["task:report"]


def test_split_by_headings_and_diagnostics_lead_to_the_cell(
    lab: Lab, page: Any, screenshots: Path
) -> None:
    make_notebook(
        lab.root / "headings.ipynb",
        [
            ("import statistics", ["setup"]),
            "# md: ## Load the data",
            "values = [3, 1, 4, 1, 5, 9, 2, 6]",
            "# md: ## Summarise\nMean and spread.",
            "mean = statistics.mean(values)",
            "spread = statistics.pstdev(values) / mean_of_values",
        ],
    )
    open_notebook(page, lab, "headings.ipynb")
    open_panel(page)

    page.keyboard.press("Control+Shift+c")
    page.fill(".lm-CommandPalette-input", "Split by Headings")
    page.keyboard.press("Enter")
    dialog = page.locator(".jp-Dialog")
    assert "task:load_the_data" in dialog.inner_text()
    assert "task:summarise" in dialog.inner_text()
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()

    # Cell 5 reads a name nobody defines: an error diagnostic with its cell and line.
    diagnostic = page.locator(f"{PANEL} .kiln-Diagnostic.kiln-mod-error")
    page.wait_for_selector(
        f"{PANEL} .kiln-Diagnostic.kiln-mod-error:has-text(\"task 'summarise'\")",
        timeout=30_000,
    )
    assert "mean_of_values" in diagnostic.first.inner_text()
    # No pipeline while it does not compile; the cells still show their own task tags.
    assert cell(page, 4).locator(".kiln-Chip.kiln-mod-unresolved").inner_text() == "task:summarise"
    assert "cell 5, line 1" in diagnostic.first.inner_text()
    select_cell(page, 0)
    diagnostic.first.click()
    page.wait_for_function(
        "document.querySelectorAll('.jp-Notebook .jp-Cell')[5].classList.contains('jp-mod-active')"
    )
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "03-diagnostics.png"))

    # Fix the cell: the DAG appears, with both tasks from the headings.
    editor = cell(page, 5).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("spread = statistics.pstdev(values) / mean")
    page.wait_for_function(
        f"document.querySelectorAll('{PANEL} .kiln-Dag-node').length === 2", timeout=30_000
    )
    assert dag_edges(page) == {("load_the_data", "summarise")}
    assert page.locator(f"{PANEL} .kiln-Diagnostic.kiln-mod-error").count() == 0
    page.locator(f"{PANEL} .kiln-Dag-node[data-task='load_the_data']").click()
    page.wait_for_function(
        "document.querySelectorAll('.jp-Notebook .jp-Cell')[2].classList.contains('jp-mod-active')"
    )


def put_settings(lab: Lab, plugin: str, values: dict[str, Any]) -> None:
    """Write user settings through JupyterLab's settings API (as the Settings Editor does)."""
    request = urllib.request.Request(
        f"{lab.url}lab/api/settings/{plugin}",
        data=json.dumps({"raw": json.dumps(values)}).encode(),
        method="PUT",
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def run_state(lab: Lab, run_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{lab.url}kiln/runs/{run_id}", headers={"Authorization": f"token {lab.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def test_a_failed_task_points_at_its_cell_and_line(
    lab: Lab, page: Any, screenshots: Path, dask_scheduler_address: str
) -> None:
    # The run goes to the Dask scheduler named in Kiln's settings (settings registry).
    put_settings(lab, "nbkiln:pipeline", {"schedulerAddress": dask_scheduler_address})
    make_notebook(
        lab.root / "failing.ipynb",
        [
            ("rows = [1, 2, 3]", ["task:load"]),
            ("ratio = sum(rows)\nratio = ratio / (len(rows) - 3)", ["task:divide"]),
            ("count = len(rows)", ["task:count"]),
        ],
    )
    open_notebook(page, lab, "failing.ipynb")
    open_panel(page)
    page.wait_for_function(
        f"document.querySelectorAll('{PANEL} .kiln-Dag-node').length === 3", timeout=30_000
    )
    page.locator(f"{PANEL} .kiln-Panel-run-button").click()
    page.wait_for_selector(f"{PANEL} .kiln-mod-run-failed", timeout=180_000)

    error = cell(page, 1).locator(".kiln-CellBadge-error")
    assert "ZeroDivisionError" in error.inner_text() and "line 2" in error.inner_text()
    assert cell(page, 2).locator(".kiln-Status").inner_text().startswith("done")
    error.click()  # puts the cursor on the failing line
    page.wait_for_function(
        "document.querySelectorAll('.jp-Notebook .jp-Cell')[1].classList.contains('jp-mod-active')"
    )
    # The status bar shows where the cursor went: line 2 of that cell.
    page.wait_for_selector(".jp-StatusBar-Widget:has-text('Ln 2, Col 1')")
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "04-failed-task.png"))

    run_id = page.locator(f"{PANEL} .kiln-Run").get_attribute("data-run-id")
    assert run_state(lab, run_id)["scheduler"] == dask_scheduler_address
    assert dask_scheduler_address in page.locator(f"{PANEL} .kiln-Run-where").inner_text()
    put_settings(lab, "nbkiln:pipeline", {})


def _dismiss_toasts(page: Any) -> None:
    """Close JupyterLab's notifications so they do not cover the screenshot."""
    for close in page.locator(".jp-Notification-Toast-Close").all():
        try:
            close.click(timeout=1000)
        except Exception:
            pass  # it closed itself meanwhile
    page.wait_for_function("document.querySelectorAll('.Toastify__toast').length === 0")
