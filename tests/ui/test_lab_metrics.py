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

import pytest

from compiler.cli.main import main

from .conftest import Lab
from .test_lab_pipeline import PANEL, _dismiss_toasts, open_notebook, open_panel

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
