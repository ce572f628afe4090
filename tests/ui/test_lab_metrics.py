"""The Pipeline panel's Metrics section after three recorded runs of a notebook: a Chart.js chart
per metric, the latest run's verdicts, the baseline, and the metrics cell's badge, in a real
JupyterLab in headless Chromium. The runs are made with `kiln run` on the session's cluster,
into the lineage database the server reads.

The screenshot goes to $KILN_SCREENSHOT_DIR, else a temporary folder (never the git tree).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest

from compiler.cli.main import main
from compiler.compile.api import compile_notebook
from tests.nbutil import make_notebook

from .conftest import Lab
from .test_lab_pipeline import PANEL, _dismiss_toasts, open_notebook, open_panel, select_cell

pytestmark = pytest.mark.timeout(300)
NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
RUNS = [
    [],  # every check passes
    ["-p", "n_features", "2"],  # f1 0.76 < 0.8: warn, flagged
    ["-p", "n_features", "1", "-p", "C", "0.001"],  # accuracy 0.39: the checks fail
]


def test_metrics_section_after_three_runs(
    lab: Lab, page: Any, dask_scheduler_address: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    notebook = lab.root / "monitored_wine.ipynb"
    shutil.copy(NOTEBOOKS / "monitored_wine.ipynb", notebook)
    (lab.root / "data").mkdir(exist_ok=True)
    shutil.copy(NOTEBOOKS / "data" / "wine.csv", lab.root / "data" / "wine.csv")
    codes = [
        main(["run", str(notebook), "--scheduler", dask_scheduler_address, *args]) for args in RUNS
    ]
    assert codes == [0, 0, 1]

    open_notebook(page, lab, "monitored_wine.ipynb")
    open_panel(page)
    section = page.locator(f"{PANEL} .kiln-Metrics")
    page.wait_for_selector(f"{PANEL} .kiln-MetricChart[data-metric='accuracy'] canvas")
    charts = section.locator(".kiln-MetricChart").evaluate_all("c => c.map(n => n.dataset.metric)")
    assert {"accuracy", "scores.logreg.f1", "train_rows"} <= set(charts)
    # Chart.js drew on each canvas (a blank canvas has no non-transparent pixel).
    drawn = section.locator(".kiln-MetricChart[data-metric='accuracy'] canvas").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4"
        " === 3 && v > 0)"
    )
    assert drawn
    assert (
        section.locator(
            ".kiln-MetricChart[data-metric='accuracy'] .kiln-MetricChart-value"
        ).inner_text()
        == "0.3889"
    )
    assert "failed" in section.locator(".kiln-Metrics-summary .kiln-Metrics-status").inner_text()
    verdicts = section.locator(".kiln-Verdict.kiln-mod-failed").all_inner_texts()
    assert any("accuracy = 0.388889, needs >= 0.5" in v for v in verdicts), verdicts
    assert section.locator(".kiln-Verdict.kiln-mod-flagged").count() >= 1  # the f1 warn
    baseline = section.locator(".kiln-Metrics-baseline").inner_text()
    assert "last succeeded run" in baseline

    # The metrics cell's badge: the latest values and what failed.
    badge = page.locator(".jp-Notebook .jp-Cell .kiln-MetricsBadge")
    page.wait_for_selector(".jp-Notebook .jp-Cell .kiln-MetricsBadge .kiln-MetricsBadge-value")
    text = badge.inner_text()
    assert "accuracy 0.3889" in text and "check failed: check:accuracy>=0.5" in text, text

    _dismiss_toasts(page)
    section.scroll_into_view_if_needed()
    folder = Path(os.environ.get("KILN_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "08-metrics.png"
    page.screenshot(path=str(shot))
    badge.scroll_into_view_if_needed()
    page.screenshot(path=str(folder / "09-metrics-cell-badge.png"))
    print(f"screenshots: {shot}, {folder / '09-metrics-cell-badge.png'}")


def test_tag_editor_marks_the_metrics_cell_and_checks_its_tags_as_you_type(
    lab: Lab, page: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A user makes cell 7 the metrics cell and adds checks from the Pipeline panel's tag
    editor, then a drift limit on the load task: the compiler's messages appear as they type,
    an error blocks Apply, and the tags written are the ones `kiln run` reads."""
    notebook = lab.root / "wine_untagged_metrics.ipynb"
    nb = nbformat.read(NOTEBOOKS / "monitored_wine.ipynb", as_version=4)
    for c in nb.cells:
        if c.get("id") == "c7":
            del c.metadata["tags"]  # the metrics cell, not yet tagged
        if c.get("id") == "c3":
            c.metadata["tags"] = ["task:load"]  # no drift: limit yet
    nbformat.write(nb, notebook)
    open_notebook(page, lab, notebook.name)
    open_panel(page)

    page.wait_for_selector(f"{PANEL} .kiln-Dag-node")  # compiled: the editor is not redrawn
    select_cell(page, 7)
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cell h3:has-text('Cell 7') .kiln-Chip")
    editor = page.locator(f"{PANEL} .kiln-TagEditor")
    assert editor.locator("textarea[name=checks]").is_hidden()
    editor.locator("select[name=role]").select_option("metrics")
    checks = editor.locator("textarea[name=checks]")
    checks.fill("accuracy>=0.5\nwarn:scores.logreg.f1>=baseline-0.05\naccuracy>>0.8")
    message = f"{PANEL} .kiln-TagEditor-message"
    page.wait_for_selector(f"{message}:has-text(\"bad tag 'check:accuracy>>0.8'\")")
    assert "neither a number" in page.locator(message).inner_text()
    assert page.locator(f"{PANEL} .kiln-Panel-apply").is_disabled()
    # A check on a metric nothing produces is the compiler's warning: shown, Apply allowed.
    checks.fill("accuracy>=0.5\nwarn:scores.logreg.f1>=baseline-0.05\nprecision>=0.9")
    page.wait_for_selector(f"{message}:has-text('warning:')")
    assert "'precision', which the metrics cell does not read" in page.locator(message).inner_text()
    page.wait_for_function(
        f"!document.querySelector('{PANEL} .kiln-Panel-apply').disabled", timeout=10_000
    )
    _dismiss_toasts(page)
    folder = Path(os.environ.get("KILN_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "21-tag-editor-metrics-checks.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    checks.fill("accuracy>=0.5\nwarn:scores.logreg.f1>=baseline-0.05")
    page.wait_for_function(
        f"document.querySelector('{message}').textContent === ''", timeout=10_000
    )
    page.locator(f"{PANEL} .kiln-Panel-apply").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-tags:has-text('check:accuracy>=0.5')")

    # The load task watches its DataFrame with a stricter drift limit.
    select_cell(page, 3)
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cell h3:has-text('Cell 3')")
    editor.locator(".kiln-TagEditor-options > summary").click()
    editor.locator("input[name=drift]").fill("nothing<0.2")
    page.wait_for_selector(f"{message}:has-text('inputs it can watch: raw, data/wine.csv')")
    assert page.locator(f"{PANEL} .kiln-Panel-apply").is_disabled()
    editor.locator("input[name=drift]").fill("raw < 0.3")
    page.wait_for_function(
        f"!document.querySelector('{PANEL} .kiln-Panel-apply').disabled", timeout=10_000
    )
    page.locator(f"{PANEL} .kiln-Panel-apply").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-tags:has-text('drift:raw<0.3')")
    page.keyboard.press("Control+s")
    for _ in range(50):  # the save lands on disk
        saved = nbformat.read(notebook, as_version=4)
        tags = {c.get("id"): c.metadata.get("tags") for c in saved.cells}
        if tags.get("c3") == ["task:load", "drift:raw<0.3"]:
            break
        page.wait_for_timeout(200)
    assert tags["c7"] == ["metrics", "check:accuracy>=0.5", "warn:scores.logreg.f1>=baseline-0.05"]
    assert tags["c3"] == ["task:load", "drift:raw<0.3"]
    # What the editor wrote is what the compiler reads.
    spec = compile_notebook(notebook).spec
    assert [(c["kind"], c["metric"], c["baseline_offset"]) for c in spec["checks"]] == [
        ("check", "accuracy", None),
        ("warn", "scores.logreg.f1", -0.05),
    ]
    assert spec["drift"][0]["key"] == "load.raw" and spec["drift"][0]["threshold"] == 0.3


def test_tag_editor_keeps_kales_pipeline_metrics_tag_when_adding_a_check(
    lab: Lab, page: Any
) -> None:
    """A Kale notebook's `pipeline-metrics` cell reads as the metrics cell in the editor; adding
    a check keeps Kale's tag as written, so the notebook still works in Kale."""
    path = make_notebook(
        lab.root / "kale_peak.ipynb",
        [
            ("import numpy as np", ["imports"]),
            ("n = 5", ["pipeline-parameters"]),
            ("peak = float(np.arange(n).max())", ["step:train"]),
            ("print(peak)", ["pipeline-metrics"]),
        ],
    )
    open_notebook(page, lab, path.name)
    open_panel(page)
    page.wait_for_selector(f"{PANEL} .kiln-Dag-node")
    select_cell(page, 3)
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cell h3:has-text('Cell 3')")
    editor = page.locator(f"{PANEL} .kiln-TagEditor")
    assert editor.locator("select[name=role]").input_value() == "metrics"
    editor.locator("textarea[name=checks]").fill("peak >= 3")
    page.wait_for_function(
        f"!document.querySelector('{PANEL} .kiln-Panel-apply').disabled", timeout=10_000
    )
    page.locator(f"{PANEL} .kiln-Panel-apply").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-tags:has-text('check:peak>=3')")
    page.keyboard.press("Control+s")
    for _ in range(50):
        tags = nbformat.read(path, as_version=4).cells[3].metadata.get("tags")
        if tags and len(tags) == 2:
            break
        page.wait_for_timeout(200)
    assert tags == ["pipeline-metrics", "check:peak>=3"]
    assert compile_notebook(path).spec["checks"][0]["threshold"] == 3.0
