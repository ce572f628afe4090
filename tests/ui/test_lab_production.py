"""Production from the Pipeline panel of a real JupyterLab in headless Chromium: naming the owner,
adding an alert route, the cost of a run on the lineage card and in the run summary, and a
schedule that runs its promoted version."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from compiler.lineage.store import open_store
from compiler.ops.promotion import promote
from tests.nbutil import make_notebook

from .conftest import Lab
from .test_lab_lineage import show
from .test_lab_pipeline import PANEL, _dismiss_toasts, open_notebook, open_panel, select_cell

pytestmark = pytest.mark.timeout(300)

CELLS = [
    "# md: # Costly report\nA task that burns CPU, so its cost shows on its lineage card.",
    ("import time", ["setup"]),
    (
        "started = time.process_time()\nspins = 0\n"
        "while time.process_time() - started < 0.5:\n    spins += 1",
        ["task:burn"],
    ),
    ("print('spins', spins)", ["task:report"]),
]

# Records which of these classes were ever put into the page (a MutationObserver sees a node
# that is added and replaced before any test code could look).
SEEN = """
window.kilnSeen = {'kiln-Production-loading': false, 'kiln-Owner-missing': false};
new MutationObserver(records => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (!(node instanceof Element)) continue;
      for (const name of Object.keys(window.kilnSeen)) {
        if (node.classList.contains(name) || node.querySelector('.' + name)) {
          window.kilnSeen[name] = true;
        }
      }
    }
  }
}).observe(document, {childList: true, subtree: true});
"""


def test_owner_routes_cost_and_a_promoted_schedule_in_the_panel(
    lab: Lab, page: Any, screenshots: Path
) -> None:
    notebook = make_notebook(lab.root / "costly.ipynb", CELLS)
    open_notebook(page, lab, "costly.ipynb")
    open_panel(page)
    production = page.locator(f"{PANEL} .kiln-Production")
    production.locator(".kiln-Owner-missing").wait_for()

    # The owner goes into the notebook's metadata; saving writes it to the file.
    production.locator(".kiln-Owner-name").fill("Ana Lima")
    production.locator(".kiln-Owner-team").fill("analytics")
    production.locator(".kiln-Owner-save").click()
    page.wait_for_function(
        f"!document.querySelector('{PANEL} .kiln-Owner-missing')", timeout=10_000
    )
    kiln: dict[str, Any] = {}
    for _attempt in range(3):  # File > Save Notebook; on a loaded machine a click can be lost
        production.locator(".kiln-Owner-save").click()  # (again: idempotent)
        select_cell(page, 2)  # the notebook is the current widget: Save applies to it
        page.locator(".lm-MenuBar-item:has-text('File')").click()
        page.locator(".lm-Menu-item[data-command='docmanager:save']").click()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and kiln.get("owner") != "Ana Lima":
            try:  # JupyterLab writes the file in place: a read can meet it half written
                kiln = nbformat.read(notebook, as_version=4).metadata.get("kiln", {})
            except nbformat.reader.NotJSONError:
                kiln = {}
            time.sleep(0.3)
        if kiln.get("owner") == "Ana Lima":
            break
    assert kiln == {"owner": "Ana Lima", "team": "analytics"}

    # An alert route, with its secret left in the server's environment.
    production.locator(".kiln-RouteForm-kind").select_option("webhook")
    production.locator(".kiln-RouteForm-target").fill("${TEAM_WEBHOOK_URL}")
    production.locator(".kiln-RouteForm-events").fill("failed,late,recovered")
    production.locator(".kiln-RouteForm-add").click()
    route = production.locator(".kiln-Route").first
    route.wait_for()
    assert "${TEAM_WEBHOOK_URL}" in route.locator(".kiln-Route-target").inner_text()
    assert route.locator(".kiln-Route-events").inner_text() == "failed, late, recovered"
    _dismiss_toasts(page)
    show(page, f"{PANEL} .kiln-Production")
    page.screenshot(path=str(screenshots / "18-owner-and-routes.png"))

    # A run: its summary and the task's lineage card show what it used.
    page.locator(".jp-NotebookPanel-toolbar [data-command='kiln:run']").click()
    page.wait_for_selector(f"{PANEL} .kiln-mod-run-succeeded", timeout=180_000)
    run_cost = page.locator(f"{PANEL} .kiln-Run-cost")
    run_cost.wait_for()
    assert "CPU-s" in run_cost.inner_text()
    select_cell(page, 2)
    page.wait_for_selector(f"{PANEL} .kiln-Lineage h3:has-text('burn')")
    card = page.locator(f"{PANEL} .kiln-LineageRun").first
    card.locator(".kiln-Cost").wait_for(timeout=30_000)
    cpu = float(card.locator(".kiln-Cost-value").inner_text().split(" CPU-s")[0])
    assert 0.35 <= cpu <= 0.7, cpu
    _dismiss_toasts(page)
    show(page, f"{PANEL} .kiln-Lineage")
    page.screenshot(path=str(screenshots / "19-cost-on-lineage-card.png"))

    # A schedule made in the panel runs the live notebook; promoted, it runs that version.
    page.locator(f"{PANEL} .kiln-Schedules-new").click()
    form = page.locator(f"{PANEL} .kiln-Schedules-form")
    form.locator("input[name=name]").fill("nightly")
    form.locator("input[name=cron]").fill("0 3 * * *")
    form.locator("input[name=timezone]").fill("UTC")
    form.locator(".kiln-Schedules-create").click()
    item = page.locator(f"{PANEL} .kiln-Schedule[data-schedule='nightly']")
    item.wait_for(timeout=30_000)
    assert item.locator(".kiln-Schedule-version").inner_text() == "runs the live notebook"
    with open_store(None, notebook) as store:  # what `kiln promote costly.ipynb` does
        version = promote(store, notebook, user="ana")[0].version
    promoted = item.locator(".kiln-Schedule-version.kiln-mod-promoted")
    promoted.wait_for(timeout=30_000)  # the section polls while a schedule is active
    assert promoted.inner_text() == f"runs promoted {version[:12]}"
    _dismiss_toasts(page)
    show(page, f"{PANEL} .kiln-Schedules")
    page.screenshot(path=str(screenshots / "20-promoted-schedule.png"))

    # Opened again, the notebook (its file names the owner) shows a loading line until the
    # section's data is in, never "No owner" for a moment.
    page.add_init_script(SEEN)
    open_notebook(page, lab, "costly.ipynb")
    open_panel(page)
    page.wait_for_function(
        f"document.querySelector('{PANEL} .kiln-Owner-name')?.value === 'Ana Lima'",
        timeout=30_000,
    )
    seen = page.evaluate("window.kilnSeen")
    assert seen["kiln-Production-loading"] and not seen["kiln-Owner-missing"], seen
