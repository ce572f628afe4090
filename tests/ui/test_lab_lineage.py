"""After a run: the active cell's lineage, one-click export, and a schedule the Jupyter server
runs, all from the Pipeline panel of a real JupyterLab in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.nbutil import make_notebook
from tests.ui.conftest import Lab
from tests.ui.test_lab_pipeline import (
    PANEL,
    _dismiss_toasts,
    open_notebook,
    open_panel,
    select_cell,
)

pytestmark = pytest.mark.timeout(300)

CELLS = [
    "# md: # Wine report\nLoad, scale and report; every task's runs are in the panel.",
    ("import pandas as pd", ["setup"]),
    ("factor = 2", ["parameters"]),
    ("df = pd.read_csv('data/in.csv')", ["task:load"]),
    ("scaled = df * factor", ["task:scale"]),
    ("scaled.to_csv('out.csv')\nprint(scaled.shape)", ["task:report"]),
]


def show(page: Any, selector: str) -> None:
    """Scroll the panel so `selector` is in view (for the screenshot)."""
    page.locator(selector).first.scroll_into_view_if_needed()


def open_tab(page: Any, label: str) -> None:
    page.locator(f"#jp-main-dock-panel .lm-TabBar-tab:has-text('{label}')").first.click()
    page.wait_for_selector(f"#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current:has-text('{label}')")


def test_lineage_export_and_a_scheduled_run(lab: Lab, page: Any, screenshots: Path) -> None:
    (lab.root / "data").mkdir(exist_ok=True)
    (lab.root / "data" / "in.csv").write_text("a,b\n1,2\n3,4\n")
    make_notebook(lab.root / "wine.ipynb", CELLS, owner="Ana Lima")
    open_notebook(page, lab, "wine.ipynb")
    open_panel(page)
    page.wait_for_function(
        f"document.querySelectorAll('{PANEL} .kiln-Dag-node').length === 3", timeout=30_000
    )
    select_cell(page, 3)
    page.wait_for_selector(f"{PANEL} .kiln-Lineage:has-text('No recorded runs')")

    # Run, then the active cell's task shows the run just recorded.
    page.locator(".jp-NotebookPanel-toolbar [data-command='kiln:run']").click()
    page.wait_for_selector(f"{PANEL} .kiln-mod-run-succeeded", timeout=180_000)
    lineage = page.locator(f"{PANEL} .kiln-Lineage")
    page.wait_for_selector(f"{PANEL} .kiln-LineageRun", timeout=30_000)
    run_id = page.locator(f"{PANEL} .kiln-Run").get_attribute("data-run-id")
    assert lineage.locator(".kiln-LineageRun").first.get_attribute("data-run-id") == run_id
    assert "Lineage · load" in lineage.locator("h3").inner_text()
    assert lineage.locator(".kiln-LineageRun-status").first.inner_text().lower() == "done"
    assert lineage.locator(".kiln-Artifact-name").inner_text() == "df"
    summary = lineage.locator(".kiln-Artifact-summary").inner_text()
    assert "2×2" in summary and "a, b" in summary, summary
    assert lineage.locator(".kiln-File.kiln-mod-read .kiln-File-name").inner_text() == "data/in.csv"

    select_cell(page, 5)  # another task: its parameters-free record and the file it wrote
    page.wait_for_selector(f"{PANEL} .kiln-Lineage h3:has-text('report')")
    page.wait_for_selector(f"{PANEL} .kiln-File.kiln-mod-wrote:has-text('out.csv')")
    assert "scaled ← scale" in lineage.locator(".kiln-LineageRun-inputs").inner_text()
    select_cell(page, 3)
    page.wait_for_selector(f"{PANEL} .kiln-Lineage h3:has-text('load')")
    page.wait_for_selector(f"{PANEL} .kiln-Artifact")
    _dismiss_toasts(page)
    show(page, f"{PANEL} .kiln-Lineage")
    page.screenshot(path=str(screenshots / "05-cell-lineage.png"))

    # One click opens the run's output notebook (copied where JupyterLab can open it).
    lineage.locator(".kiln-LineageRun-output").first.click()
    page.wait_for_selector(f".lm-TabBar-tab:has-text('{run_id}.ipynb')")
    assert (lab.root / "kiln-runs" / "wine" / f"{run_id}.ipynb").is_file()
    open_tab(page, "wine.ipynb")

    # Export: toolbar button → the bundle's path and version in the panel.
    page.locator(".jp-NotebookPanel-toolbar:visible [data-command='kiln:export']").click()
    export = page.locator(f"{PANEL} .kiln-Panel-export")
    page.wait_for_selector(f"{PANEL} .kiln-Export-path:has-text('pipelines/wine/')")
    bundle = export.locator(".kiln-Export-path").inner_text().rstrip("/")
    assert (lab.root / bundle / "pipeline.json").is_file()
    assert export.locator(".kiln-Export-state").inner_text().lower() == "exported"
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "06-export.png"))
    page.locator(f"{PANEL} .kiln-Panel-export-button").click()  # same notebook: same version
    page.wait_for_selector(f"{PANEL} .kiln-Export-state:has-text('already exported')")

    # A schedule every 5 seconds, run by the Jupyter server's scheduler through papermill.
    page.locator(f"{PANEL} .kiln-Schedules-new").click()
    form = page.locator(f"{PANEL} .kiln-Schedules-form")
    assert form.locator("input[name=name]").input_value() == "wine"
    form.locator("input[name=cron]").fill("* * * * * */5")
    form.locator("input[name=timezone]").fill("UTC")
    form.locator("input[name=parameters]").fill("factor=3")
    form.locator("select[name=engine]").select_option("papermill")
    form.locator(".kiln-Schedules-create").click()
    item = page.locator(f"{PANEL} .kiln-Schedule[data-schedule='wine']")
    item.wait_for()
    # Cron read out (cronstrue; seconds last, as croniter has them), the raw text on hover.
    assert "Every 5 seconds (UTC)" in item.locator(".kiln-Schedule-cron").inner_text()
    assert item.locator(".kiln-Schedule-cron").get_attribute("title") == "cron: * * * * * */5"
    assert "factor=3" in item.locator(".kiln-Schedule-params").inner_text()
    page.wait_for_selector(
        f"{PANEL} .kiln-ScheduleRun.kiln-mod-status-succeeded .kiln-ScheduleRun-output",
        timeout=60_000,
    )
    item.locator(".kiln-Schedule-pause").click()  # stop firing while we look
    page.wait_for_selector(f"{PANEL} .kiln-Schedule.kiln-mod-paused")
    _dismiss_toasts(page)
    show(page, f"{PANEL} .kiln-Schedules")
    page.screenshot(path=str(screenshots / "07-schedule.png"))

    item.locator(
        ".kiln-ScheduleRun.kiln-mod-status-succeeded .kiln-ScheduleRun-output"
    ).first.click()
    page.wait_for_selector(".lm-TabBar-tab:has-text('-wine.ipynb')")
    outputs = list((lab.root / "kiln-runs" / "wine" / "schedules" / "wine").glob("*.ipynb"))
    assert outputs, "the scheduled run's output was not copied beside the notebook"
    injected = json.loads(outputs[0].read_text())["cells"]
    assert any("factor = 3" in "".join(c["source"]) for c in injected)

    open_tab(page, "wine.ipynb")
    item.locator(".kiln-Schedule-remove").click()
    dialog = page.locator(".jp-Dialog")
    assert "run" in dialog.inner_text()  # says what removing deletes, before it does
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    page.wait_for_selector(f"{PANEL} .kiln-Schedules:has-text('No schedules for this notebook')")
