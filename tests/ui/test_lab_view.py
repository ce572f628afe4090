"""The Pipeline view in the main area, run controls and the read-only output notebook.

Shares the session's JupyterLab server (tests/ui/conftest.py); runs go to the shared Dask
cluster. Screenshots go to tests/ui/screenshots/latest/ (git-ignored).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.nbutil import make_notebook

from .conftest import Lab
from .test_lab_pipeline import PANEL, _dismiss_toasts, cell, open_notebook, put_settings

pytestmark = pytest.mark.timeout(300)

VIEW = ".kiln-View"
RUN_BUTTON = ".jp-NotebookPanel-toolbar [data-command='kiln:run']"


def thirty_task_cells() -> list[tuple[str, list[str]] | str]:
    """A realistic 30-task shape: 3 sources, cleaning, 9 features, 3 models, fan-in, reports."""
    sources = ["sales", "customers", "inventory"]
    kinds = ["weekly", "monthly", "trend"]
    cells: list[tuple[str, list[str]] | str] = [("import statistics", ["setup"])]
    for s in sources:
        cells.append((f"raw_{s} = list(range({len(s)}, 60))", [f"task:load_{s}"]))
    for s in sources:
        cells.append((f"clean_{s}_rows = [x for x in raw_{s} if x % 7]", [f"task:clean_{s}"]))
    for s in sources:
        for k in kinds:
            source = f"{s}_{k} = statistics.mean(clean_{s}_rows) * {len(k)}"
            cells.append((source, [f"task:feature_{s}_{k}"]))
    for k in kinds:
        source = f"model_{k} = sales_{k} + customers_{k} - inventory_{k}"
        cells.append((source, [f"task:fit_model_{k}"]))
    for k in kinds:
        cells.append((f"score_{k} = abs(model_{k}) / 100", [f"task:evaluate_{k}"]))
    for k in kinds:
        cells.append((f"plot_{k} = [score_{k}] * 3", [f"task:plot_{k}"]))
    cells.append(("best = max(score_weekly, score_monthly, score_trend)", ["task:compare_models"]))
    for r in ["summary", "appendix", "export_csv", "dashboard", "email"]:
        cells.append((f"report_{r} = f'{r}: {{best:.3f}}'", [f"task:report_{r}"]))
    return cells


def palette(page: Any, text: str) -> None:
    page.keyboard.press("Control+Shift+c")
    page.fill(".lm-CommandPalette-input", text)
    page.keyboard.press("Enter")


def zoom(page: Any) -> float:
    return float(page.locator(f"{VIEW} .kiln-View-graph").get_attribute("data-zoom"))


def smallest_text_px(page: Any) -> float:
    """The smallest rendered text size in the view's graph, in screen pixels."""
    return float(
        page.evaluate(
            """() => {
              const graph = document.querySelector('.kiln-View .kiln-View-graph');
              const k = parseFloat(graph.dataset.zoom);
              const texts = graph.querySelectorAll('text');
              const px = t => parseFloat(getComputedStyle(t).fontSize) * k;
              return Math.min(...Array.from(texts).map(px));
            }"""
        )
    )


def background_point(page: Any) -> tuple[float, float]:
    """A point of the view's graph with no task node under it, far enough from the top-left
    corner to drag up and left from."""
    point = page.evaluate(
        """() => {
          const r = document.querySelector('.kiln-View .kiln-View-graph').getBoundingClientRect();
          for (let y = r.bottom - 8; y > r.top + 100; y -= 12) {
            for (let x = r.right - 8; x > r.left + 130; x -= 12) {
              const hit = document.elementFromPoint(x, y);
              if (hit && hit.closest('.kiln-View-graph') && !hit.closest('.kiln-Dag-node')) {
                return [x, y];
              }
            }
          }
          return null;
        }"""
    )
    assert point, "the graph covers the whole view"
    return float(point[0]), float(point[1])


def test_pipeline_view_of_thirty_tasks(lab: Lab, page: Any, screenshots: Path) -> None:
    make_notebook(lab.root / "thirty.ipynb", thirty_task_cells())
    open_notebook(page, lab, "thirty.ipynb")
    palette(page, "Open Pipeline View")
    page.wait_for_function(
        f"document.querySelectorAll('{VIEW} .kiln-Dag-node').length === 30", timeout=30_000
    )
    # The side panel keeps its compact overview: names only, scaled to its width.
    page.locator(".jp-SideBar.jp-mod-right li[data-id='kiln-pipeline-panel']").click()
    page.wait_for_selector(f"{PANEL} svg.kiln-Dag.kiln-mod-compact")
    page.locator(f"{VIEW} .kiln-View-fit").click()
    assert smallest_text_px(page) >= 10
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "10-view-30-tasks-1440x900.png"))

    # At 1024x700 a user gives the view the width: the side bars collapsed.
    page.set_viewport_size({"width": 1024, "height": 700})
    page.locator(".jp-SideBar.jp-mod-left li.lm-mod-current").click()
    page.locator(".jp-SideBar.jp-mod-right li.lm-mod-current").click()
    page.locator(f"{VIEW} .kiln-View-fit").click()
    assert zoom(page) >= 0.84 and smallest_text_px(page) >= 10  # panned, never shrunk unreadable
    page.screenshot(path=str(screenshots / "11-view-30-tasks-1024x700.png"))

    before = zoom(page)
    page.locator(f"{VIEW} .kiln-View-zoomin").click()
    assert zoom(page) > before
    graph = page.locator(f"{VIEW} .kiln-Dag-viewport")
    moved_from = graph.get_attribute("transform")
    x, y = background_point(page)  # a drag that starts on a node is a click on it
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 112, y - 72, steps=4)
    page.mouse.up()
    assert graph.get_attribute("transform") != moved_from

    # A task's context menu: rerun from it, open the view.
    page.locator(f"{VIEW} .kiln-View-fit").click()
    # (dispatched: after zooming, the node may lie outside the visible part of the graph)
    page.locator(f"{VIEW} .kiln-Dag-node[data-task='clean_sales']").dispatch_event(
        "contextmenu",
        {"bubbles": True, "cancelable": True, "button": 2, "clientX": 500, "clientY": 300},
    )
    menu = page.locator(".lm-Menu").last
    assert "Rerun From clean_sales" in menu.inner_text()
    assert "Open Pipeline View" in menu.inner_text()
    page.keyboard.press("Escape")

    page.locator(".jp-SideBar.jp-mod-right li[data-id='kiln-pipeline-panel']").click()
    page.locator(".lm-TabBar-tab:has-text('thirty.ipynb')").first.click()
    # Break a cell: the last good graph stays, greyed; each diagnostic is listed once; the
    # editor marks the line.
    editor = cell(page, 4).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\nextra = undefined_name")
    page.wait_for_selector(f"{VIEW} svg.kiln-Dag.kiln-mod-stale", state="attached", timeout=30_000)
    page.wait_for_selector(f"{PANEL} svg.kiln-Dag.kiln-mod-stale")
    assert page.locator(f"{VIEW} .kiln-Dag-node").count() == 30
    errors = page.locator(f"{PANEL} .kiln-Diagnostic.kiln-mod-error")
    errors.first.wait_for()
    count = errors.count()
    assert "undefined_name" in errors.first.inner_text()
    cell(page, 4).locator(".cm-lintRange-error").wait_for()
    page.locator(f"{PANEL} .kiln-Panel-run-button").click()
    page.wait_for_selector(f"{PANEL} .kiln-Run-error")
    page.wait_for_timeout(1500)  # the recompile after the refused run has landed
    assert errors.count() == count  # replaced, not appended
    page.screenshot(path=str(screenshots / "12-stale-graph-and-error-in-editor.png"))

    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("clean_sales_rows = [x for x in raw_sales if x % 7]")
    page.wait_for_function(
        f"!document.querySelector('{VIEW} svg.kiln-Dag').classList.contains('kiln-mod-stale')",
        timeout=30_000,
    )
    page.wait_for_function(
        f"document.querySelectorAll('{PANEL} .kiln-Diagnostic.kiln-mod-error').length === 0"
    )
    assert page.locator(f"{PANEL} .kiln-Run-error").count() == 0  # the old error went too
    assert page.locator(".cm-lintRange-error").count() == 0

    # The dark theme.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.locator(".lm-TabBar-tab:has-text('Pipeline: thirty')").click()
    palette(page, "Use Theme: JupyterLab Dark")
    page.wait_for_selector("body[data-jp-theme-light='false']", state="attached")
    page.wait_for_timeout(500)
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "13-view-dark-theme.png"))
    palette(page, "Use Theme: JupyterLab Light")
    page.wait_for_selector("body[data-jp-theme-light='true']", state="attached")


def lineage_runs(lab: Lab, path: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{lab.url}kiln/lineage?path={path}&limit=10",
        headers={"Authorization": f"token {lab.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read())["runs"])


def sessions(lab: Lab) -> int:
    request = urllib.request.Request(
        f"{lab.url}api/sessions", headers={"Authorization": f"token {lab.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return len(json.loads(response.read()))


def wait_running(page: Any, task: str) -> None:
    page.wait_for_selector(
        f"{VIEW} .kiln-Timeline-bar.kiln-mod-open[data-task='{task}']", timeout=120_000
    )


def test_timeline_cancel_reload_and_read_only_output(
    lab: Lab, page: Any, screenshots: Path, dask_scheduler_address: str
) -> None:
    put_settings(lab, "nbkiln:pipeline", {"schedulerAddress": dask_scheduler_address})
    flaky = (
        "if not os.path.exists('fetch.marker'):\n"
        "    open('fetch.marker', 'w').close()\n"
        "    raise ConnectionError('the service hiccuped')\n"
        "rows = list(range(100))"
    )
    make_notebook(
        lab.root / "controls.ipynb",
        [
            ("import os\nimport time", ["setup"]),
            (flaky, ["task:fetch", "retries:1"]),
            ("time.sleep(1)\nclean = [r for r in rows if r % 3]", ["task:prepare"]),
            (
                "steps = 150 if os.path.exists('slow.marker') else 30\n"
                "for _ in range(steps):\n    time.sleep(0.1)\ntotal = sum(clean)",
                ["task:crunch"],
            ),
            ("print(f'total = {total}')", ["task:report"]),
        ],
    )
    open_notebook(page, lab, "controls.ipynb")
    palette(page, "Open Pipeline View")
    page.wait_for_function(
        f"document.querySelectorAll('{VIEW} .kiln-Dag-node').length === 4", timeout=30_000
    )

    # 1. A run with a retry: two bars for fetch on the timeline, the first one retried.
    page.locator(f"{VIEW} .kiln-View-runbutton").click()
    page.wait_for_selector(f"{VIEW} .kiln-Run.kiln-mod-run-succeeded", timeout=180_000)
    bars = page.locator(f"{VIEW} .kiln-Timeline-bar[data-task='fetch']")
    assert [bars.nth(i).get_attribute("data-status") for i in range(bars.count())] == [
        "retried",
        "done",
    ]
    assert page.locator(f"{VIEW} .kiln-Timeline-bar[data-status='done']").count() == 4
    page.wait_for_selector(f"{VIEW} .kiln-History-run")
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "14-timeline-with-retry.png"))

    # 2. Its output notebook, read-only: rendered HTML, no kernel, no pipeline of its own.
    kernels_before = sessions(lab)
    page.locator(f"{VIEW} .kiln-View-output").click()
    frame = page.frame_locator(".kiln-OutputViewer-frame")
    frame.locator(".jp-Cell").first.wait_for(timeout=30_000)
    assert "total = " in frame.locator("body").inner_text()
    assert page.locator(".jp-NotebookPanel").count() == 1  # only the source notebook
    assert sessions(lab) == kernels_before
    page.screenshot(path=str(screenshots / "15-output-notebook-read-only.png"))
    page.locator(".lm-TabBar-tab:has-text('(read-only)') .lm-TabBar-tabCloseIcon").click()

    # 3. Run without cache, cancelled while crunch runs: crunch cancelled on the cluster,
    # report never starts, the lineage database says cancelled.
    page.locator(f"{VIEW} .kiln-View-nocache").click()
    wait_running(page, "crunch")
    page.locator(f"{VIEW} .kiln-View-cancel").click()
    page.wait_for_selector(f"{VIEW} .kiln-Run.kiln-mod-run-cancelled", timeout=60_000)
    assert page.locator(
        f"{VIEW} .kiln-Timeline-bar[data-task='crunch'][data-status='cancelled']"
    ).is_visible()
    assert page.locator(f"{VIEW} .kiln-Dag-node[data-task='report'].kiln-mod-status-cancelled")
    statuses = page.locator(f"{VIEW} .kiln-Timeline-bar").evaluate_all(
        "bars => bars.map(b => [b.dataset.task, b.dataset.status])"
    )
    assert ["fetch", "cached"] not in statuses  # without cache: every task ran again
    assert lineage_runs(lab, "controls.ipynb")[0]["status"] == "cancelled"
    page.wait_for_selector(f"{VIEW} .kiln-History-run .kiln-mod-run-cancelled")
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "16-cancelled-mid-run.png"))

    # 4. Rerun from prepare (context menu), reload the page mid-run: the view, the panel and
    # the Run button come back as they were. (crunch takes 15 s now: the reload fits in it)
    (lab.root / "slow.marker").write_text("")
    page.locator(f"{VIEW} .kiln-Dag-node[data-task='prepare']").click(button="right")
    page.locator(".lm-Menu-item:has-text('Rerun From prepare')").click()
    wait_running(page, "crunch")
    page.locator(".jp-SideBar.jp-mod-right li[data-id='kiln-pipeline-panel']").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-title")
    page.wait_for_timeout(1000)  # the layout restorer saves the workspace (one request)
    page.reload()
    page.wait_for_selector(f"{VIEW} .kiln-Dag-node", timeout=60_000)
    page.wait_for_selector(f"{PANEL} .kiln-Run.kiln-mod-run-running", timeout=30_000)
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cancel-button:not([disabled])")
    assert page.locator(f"{PANEL} .kiln-Panel-run-button").is_disabled()
    assert page.locator(f"{VIEW} .kiln-View-runbutton").is_disabled()
    _dismiss_toasts(page)
    page.screenshot(path=str(screenshots / "17-reload-mid-run.png"))
    page.locator(".lm-TabBar-tab:has-text('controls.ipynb')").first.click()
    # The notebook toolbar's Run (drawn when its tab shows) is disabled while the run goes on.
    assert page.locator(RUN_BUTTON).get_attribute("aria-disabled") == "true"
    page.wait_for_selector(
        f"{VIEW} .kiln-Run.kiln-mod-run-succeeded", state="attached", timeout=120_000
    )
    page.wait_for_function(
        f"document.querySelector(\"{RUN_BUTTON}\").getAttribute('aria-disabled') === 'false'"
    )
    page.locator(".lm-TabBar-tab:has-text('Pipeline: controls')").click()
    assert page.locator(f"{VIEW} .kiln-View-runbutton").is_enabled()
    kinds = dict(
        page.locator(f"{VIEW} .kiln-Timeline-bar").evaluate_all(
            "bars => bars.map(b => [b.dataset.task, b.dataset.status])"
        )
    )
    assert kinds["fetch"] == "cached" and kinds["prepare"] == "done"  # forced from prepare on

    # 5. The run history: the cancelled run's badges and timeline, picked from the list.
    page.locator(f"{VIEW} .kiln-History-run:has(.kiln-mod-run-cancelled)").first.click()
    page.wait_for_selector(f"{VIEW} .kiln-Timeline-bar[data-status='cancelled']")
    page.wait_for_selector(
        ".kiln-CellBadge .kiln-Status[data-status='cancelled']", state="attached"
    )

    # 6. Back to the latest run; change report's code: its badge says the status is outdated.
    page.locator(f"{VIEW} .kiln-View-latest").click()
    page.locator(".lm-TabBar-tab:has-text('controls.ipynb')").first.click()
    cell(page, 4).locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type("  # reworded")
    page.wait_for_selector(".kiln-CellBadge .kiln-Status.kiln-mod-outdated", timeout=30_000)
    assert "outdated" in cell(page, 4).locator(".kiln-Status").inner_text()
    put_settings(lab, "nbkiln:pipeline", {})


def test_tag_form_checks_as_you_type_and_keeps_other_tags(lab: Lab, page: Any) -> None:
    path = make_notebook(
        lab.root / "tagform.ipynb",
        [
            ("import math", ["setup"]),
            ("model = math.sqrt(2)", ["task:train", "resources:cpu=1", "resources:memory=1GiB"]),
        ],
    )
    open_notebook(page, lab, "tagform.ipynb")
    page.locator(".jp-SideBar.jp-mod-right li[data-id='kiln-pipeline-panel']").click()
    cell(page, 1).locator(".jp-InputPrompt").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cell h3:has-text('Cell 1')")
    editor = page.locator(f"{PANEL} .kiln-TagEditor")
    assert editor.locator("input[name=retries]").get_attribute("placeholder").startswith("e.g.")
    editor.locator("input[name=name]").fill("Logistic Regression")
    note = page.locator(f"{PANEL} .kiln-TagEditor-note")
    page.wait_for_selector(f"{PANEL} .kiln-TagEditor-note:has-text('keeps the lineage')")
    assert "logistic_regression" in note.inner_text()
    editor.locator("input[name=retries]").fill("three")
    # The compiler's message, under the Retries field (retries, timeout and cache share a row).
    field = f"{PANEL} .kiln-TagEditor-fieldMessage[data-field=retries]"
    page.wait_for_selector(f"{field}:has-text('retries must be a number')")
    assert "invalid literal" not in page.locator(field).inner_text()
    assert page.locator(f"{PANEL} .kiln-Panel-apply").is_disabled()
    assert editor.locator("input[name=retries]").evaluate("e => !e.validity.valid")
    editor.locator("input[name=retries]").fill("2")
    page.wait_for_function(
        f"!document.querySelector('{PANEL} .kiln-Panel-apply').disabled", timeout=10_000
    )
    page.locator(f"{PANEL} .kiln-Panel-apply").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-tags:has-text('task:logistic_regression')")
    page.keyboard.press("Control+s")
    for _ in range(50):  # the save lands on disk
        tags = json.loads(path.read_text())["cells"][1]["metadata"]["tags"]
        if "task:logistic_regression" in tags:
            break
        page.wait_for_timeout(200)
    # The resources tags stay as written (not merged into one); the task tags are replaced.
    assert tags == [
        "resources:cpu=1",
        "resources:memory=1GiB",
        "task:logistic_regression",
        "retries:2",
    ]

    # A tag that changed some other way (the property inspector's tag list here): Run shows it
    # and saves nothing unless the user confirms.
    page.locator(".jp-SideBar.jp-mod-right li[data-id='jp-property-inspector']").click()
    cell(page, 1).locator(".jp-InputPrompt").click()
    unapplied = page.locator(".jp-CellTags-Tag.jp-CellTags-Unapplied:has-text('setup')")
    if not unapplied.is_visible():
        page.locator(".jp-PropertyInspector :text('Common Tools')").first.click()
    unapplied.click()
    page.wait_for_selector(".jp-CellTags-Tag.jp-CellTags-Applied:has-text('setup')")
    page.locator(".jp-SideBar.jp-mod-right li[data-id='kiln-pipeline-panel']").click()
    page.locator(f"{PANEL} .kiln-Panel-run-button").click()
    dialog = page.locator(".jp-Dialog")
    assert "Cell 1" in dialog.inner_text() and "setup" in dialog.inner_text()
    dialog.locator(".jp-Dialog-button:not(.jp-mod-accept)").click()
    assert "setup" not in json.loads(path.read_text())["cells"][1]["metadata"]["tags"]
    assert page.locator(f"{PANEL} .kiln-Run").count() == 0  # nothing started
