"""The Pipeline panel's Metrics section after three recorded runs of a notebook: a Chart.js chart
per metric, the latest run's verdicts, the baseline, and the metrics cell's badge, in a real
JupyterLab in headless Chromium. The runs are made with `kiln run` on the session's cluster,
into the lineage database the server reads.

Screenshots go to the suite's `screenshots` folder (tests/ui/conftest.py: git-ignored).
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest

from compiler.cli.main import main
from compiler.compile.api import compile_notebook
from tests.nbutil import make_notebook
from tests.test_metrics import DECLARED_ORDER

from .conftest import Lab
from .test_lab_pipeline import PANEL, _dismiss_toasts, cell, open_notebook, open_panel, select_cell
from .test_lab_state import model_tags

pytestmark = pytest.mark.timeout(300)
NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
RUNS = [
    [],  # every check passes
    ["-p", "n_features", "2"],  # f1 0.76 < 0.8: warn, flagged
    ["-p", "n_features", "1", "-p", "C", "0.001"],  # accuracy 0.39: the checks fail
]


def test_metrics_section_after_three_runs(
    lab: Lab, page: Any, dask_scheduler_address: str, screenshots: Path
) -> None:
    notebook = lab.root / "monitored_wine.ipynb"
    shutil.copy(NOTEBOOKS / "monitored_wine.ipynb", notebook)
    (lab.root / "data").mkdir(exist_ok=True)
    shutil.copy(NOTEBOOKS / "data" / "wine.csv", lab.root / "data" / "wine.csv")
    codes = []
    for i, args in enumerate(RUNS):
        if i == 2:  # last night's file came with alcohol in other units: the input drifted
            frame = pd.read_csv(lab.root / "data" / "wine.csv")
            frame["alcohol"] = frame["alcohol"] + 1.5
            frame.to_csv(lab.root / "data" / "wine.csv", index=False)
        codes.append(main(["run", str(notebook), "--scheduler", dask_scheduler_address, *args]))
    assert codes == [0, 0, 1]

    open_notebook(page, lab, "monitored_wine.ipynb")
    open_panel(page)
    section = page.locator(f"{PANEL} .kiln-Metrics")
    page.wait_for_selector(f"{PANEL} .kiln-MetricChart[data-metric='accuracy'] canvas")
    charts = section.locator(".kiln-MetricChart").evaluate_all("c => c.map(n => n.dataset.metric)")
    assert {"accuracy", "scores.logreg.f1", "train_rows"} <= set(charts)
    # The charts come in the library's order of the metrics (the server's list), not re-sorted:
    # the metrics cell's names first, as it reads them, then kiln.log_metric's as first logged.
    assert charts == _metrics_api(lab, notebook.name)["metrics"]
    assert charts == DECLARED_ORDER
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
    # The shifted file and the DataFrame read from it: flagged, naming the column.
    drifted = section.locator(".kiln-Verdict.kiln-mod-flagged[data-kind=drift]").all_inner_texts()
    assert any("input data/wine.csv drifted: alcohol" in v for v in drifted), drifted
    assert any("input load.raw drifted: alcohol" in v for v in drifted), drifted

    # The metrics cell's badge: the latest values and what failed.
    badge = page.locator(".jp-Notebook .jp-Cell .kiln-MetricsBadge")
    page.wait_for_selector(".jp-Notebook .jp-Cell .kiln-MetricsBadge .kiln-MetricsBadge-value")
    text = badge.inner_text()
    values = badge.locator(".kiln-MetricsBadge-value").all_inner_texts()
    assert values[:2] == ["accuracy 0.3889", "scores.logreg.f1 0.1867"], values
    assert "accuracy 0.3889" in text and "check failed: check:accuracy>=0.5" in text, text
    # A failed check is a failure (red), a failed warn or a drift a flag (orange).
    assert (
        "check failed"
        in badge.locator(".kiln-MetricsBadge-verdict.kiln-mod-failed").first.inner_text()
    )
    flags = badge.locator(".kiln-MetricsBadge-verdict.kiln-mod-flagged").all_inner_texts()
    assert "warn failed: warn:scores.logreg.f1>=0.8" in flags, flags
    assert "drift: data/wine.csv (alcohol)" in flags, flags

    _dismiss_toasts(page)
    section.scroll_into_view_if_needed()
    shot = screenshots / "08-metrics.png"
    page.screenshot(path=str(shot))
    chart = section.locator(".kiln-MetricChart[data-metric='accuracy']")
    chart.scroll_into_view_if_needed()
    chart.screenshot(path=str(screenshots / "08-metrics-accuracy-chart.png"))
    badge.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "09-metrics-cell-badge.png"))
    print(f"screenshots: {shot}, {screenshots / '09-metrics-cell-badge.png'}")


def _metrics_api(lab: Lab, name: str) -> dict[str, Any]:
    """GET /kiln/metrics, the server's answer the Metrics section draws."""
    query = urllib.parse.urlencode({"path": name, "token": lab.token})
    with urllib.request.urlopen(f"{lab.url}kiln/metrics?{query}", timeout=30) as response:
        return dict(json.loads(response.read()))


def _untagged_wine(lab: Lab, name: str) -> Path:
    """The monitored wine notebook with its metrics cell (7) untagged and no drift limit."""
    notebook = lab.root / name
    nb = nbformat.read(NOTEBOOKS / "monitored_wine.ipynb", as_version=4)
    for c in nb.cells:
        if c.get("id") == "c7":
            del c.metadata["tags"]  # the metrics cell, not yet tagged
        if c.get("id") == "c3":
            c.metadata["tags"] = ["task:load"]  # no drift: limit yet
    nbformat.write(nb, notebook)
    return notebook


def _field_message(scope: str, field: str) -> str:
    return f"{scope} .kiln-TagEditor-fieldMessage[data-field={field}]"


def _is_invalid(page: Any, selector: str) -> bool:
    """The field's constraint-validation state (what a JupyterLab dialog reads to refuse OK)."""
    return bool(page.locator(selector).evaluate("e => !e.validity.valid"))


def _wait_enabled(page: Any, selector: str) -> None:
    page.wait_for_function(f"!document.querySelector({selector!r}).disabled", timeout=10_000)


# Mistakes a user makes typing a check, and the compiler's words shown for each.
CHECK_MISTAKES = [
    ("accuracy=>0.8", "expected METRIC OP VALUE with OP one of < <= > >= =="),
    ("accuracy>=", "expected METRIC OP VALUE with OP one of < <= > >= =="),
    ("accuracy>=baseline+x", "'baseline+x' is neither a number nor baseline±NUMBER"),
    ("warn:f1 != 0.7", "expected METRIC OP VALUE"),
]


def test_tag_editor_checks_metrics_fields_as_you_type(
    lab: Lab, page: Any, screenshots: Path
) -> None:
    """A user makes cell 7 the metrics cell and types checks in the Pipeline panel's tag
    editor, then a drift limit on the load task: each mistake shows the compiler's message
    under the field, naming the line of the Checks box, and Apply stays off until it is fixed
    (also when Apply is clicked before the message had time to come back); a check on a metric
    the cell does not read is a warning; valid input shows nothing."""
    notebook = _untagged_wine(lab, "wine_metrics_typing.ipynb")
    open_notebook(page, lab, notebook.name)
    open_panel(page)

    page.wait_for_selector(f"{PANEL} .kiln-Dag-node")  # compiled: the editor is not redrawn
    select_cell(page, 7)
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cell h3:has-text('Cell 7') .kiln-Chip")
    editor = page.locator(f"{PANEL} .kiln-TagEditor")
    assert editor.locator("textarea[name=checks]").is_hidden()
    editor.locator("select[name=role]").select_option("metrics")
    checks_box = f"{PANEL} textarea[name=checks]"
    checks = page.locator(checks_box)
    messages = _field_message(PANEL, "checks")
    summary = f"{PANEL} .kiln-TagEditor-message"
    apply = f"{PANEL} .kiln-Panel-apply"

    valid = "accuracy>=0.5\nwarn:scores.logreg.f1>=baseline-0.05"
    checks.fill(valid)
    _wait_enabled(page, apply)
    assert page.locator(messages).inner_text() == ""
    assert not _is_invalid(page, checks_box)

    for mistake, words in CHECK_MISTAKES:
        checks.fill(f"accuracy>=0.5\n{mistake}")
        tag = mistake.replace(" ", "")
        tag = tag if tag.startswith("warn:") else f"check:{tag}"
        page.wait_for_selector(f'{messages}:has-text("line 2: bad tag {tag!r}")')
        assert words in page.locator(messages).inner_text(), mistake
        assert page.locator(apply).is_disabled(), mistake
        assert _is_invalid(page, checks_box), mistake
        assert "Cannot apply" in page.locator(summary).inner_text()

    # A check on a metric the metrics cell does not read: the compiler's warning, Apply allowed;
    # with an error on another line the screenshot shows both.
    checks.fill("accuracy>=0.5\nprecision>=0.9\naccuracy>=baseline+x")
    page.wait_for_selector(f"{messages}:has-text('line 3: bad tag')")
    warning = page.locator(f"{messages} .kiln-mod-warning").inner_text()
    assert warning.startswith("warning: line 2: 'check:precision>=0.9' checks 'precision'")
    assert "which the metrics cell does not read" in warning
    _dismiss_toasts(page)
    shot = screenshots / "21-tag-editor-metrics-checks.png"
    page.locator(f"{PANEL} .kiln-Panel-cell").screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    checks.fill("accuracy>=0.5\nprecision>=0.9")
    page.wait_for_selector(f"{messages}:not(:has(.kiln-mod-error))")
    _wait_enabled(page, apply)
    assert not _is_invalid(page, checks_box)
    assert page.locator(summary).inner_text() == ""

    # Apply clicked at once after typing a mistake: the compiler is asked first, nothing written.
    checks.fill("accuracy>=0.5\naccuracy>>0.8")
    page.locator(apply).click()
    page.wait_for_selector(f"{messages}:has-text(\"bad tag 'check:accuracy>>0.8'\")")
    assert model_tags(page, notebook.name)[7] == []
    assert page.locator(apply).is_disabled()

    checks.fill(valid)
    page.wait_for_function(
        f"document.querySelector({summary!r}).textContent === ''", timeout=10_000
    )
    _wait_enabled(page, apply)
    page.locator(apply).click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-tags:has-text('check:accuracy>=0.5')")

    # The load task's drift limit: an input the task does not have, a limit out of range.
    select_cell(page, 3)
    page.wait_for_selector(f"{PANEL} .kiln-Panel-cell h3:has-text('Cell 3')")
    editor.locator(".kiln-TagEditor-options > summary").click()
    drift_box = f"{PANEL} input[name=drift]"
    drift = _field_message(PANEL, "drift")
    page.locator(drift_box).fill("nothing<0.2")
    page.wait_for_selector(f"{drift}:has-text('inputs it can watch: raw, data/wine.csv')")
    assert "task 'load' neither binds 'nothing'" in page.locator(drift).inner_text()
    assert page.locator(apply).is_disabled() and _is_invalid(page, drift_box)
    page.locator(drift_box).fill("raw<1.5")
    page.wait_for_selector(f"{drift}:has-text('drift score limit 1.5 must be in (0, 1]')")
    assert page.locator(apply).is_disabled()
    page.locator(drift_box).fill("raw < 0.3")
    _wait_enabled(page, apply)
    assert page.locator(drift).inner_text() == "" and not _is_invalid(page, drift_box)
    page.locator(apply).click()
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


def test_tag_editor_shows_a_bad_check_written_by_hand_when_the_cell_is_selected(
    lab: Lab, page: Any
) -> None:
    """Tags typed into the notebook file by hand (or by another tool): selecting the metrics
    cell shows the compiler's message under Checks at once, and Apply is off until it is fixed."""
    notebook = lab.root / "wine_hand_tags.ipynb"
    nb = nbformat.read(NOTEBOOKS / "monitored_wine.ipynb", as_version=4)
    for c in nb.cells:
        if c.get("id") == "c7":
            c.metadata["tags"] = ["metrics", "check:accuracy>=0.5", "warn:f1>=baseline+x"]
    nbformat.write(nb, notebook)
    open_notebook(page, lab, notebook.name)
    open_panel(page)
    page.wait_for_selector(f"{PANEL} .kiln-Diagnostic")  # the notebook's compile is in
    select_cell(page, 7)
    messages = _field_message(PANEL, "checks")
    page.wait_for_selector(f"{messages}:has-text(\"line 2: bad tag 'warn:f1>=baseline+x'\")")
    assert page.locator(f"{PANEL} textarea[name=checks]").input_value() == (
        "check:accuracy>=0.5\nwarn:f1>=baseline+x"
    )
    assert page.locator(f"{PANEL} .kiln-Panel-apply").is_disabled()
    page.locator(f"{PANEL} textarea[name=checks]").fill(
        "accuracy>=0.5\nwarn:accuracy>=baseline-0.1"
    )
    _wait_enabled(page, f"{PANEL} .kiln-Panel-apply")
    assert page.locator(messages).inner_text() == ""
    page.locator(f"{PANEL} .kiln-Panel-apply").click()
    page.wait_for_selector(f"{PANEL} .kiln-Panel-tags:has-text('warn:accuracy>=baseline-0.1')")
    assert model_tags(page, notebook.name)[7] == [
        "metrics",
        "check:accuracy>=0.5",
        "warn:accuracy>=baseline-0.1",
    ]


def test_cell_toolbar_tag_dialog_refuses_a_bad_check(
    lab: Lab, page: Any, screenshots: Path
) -> None:
    """The same editor in the cell toolbar's dialog: a bad check shows the compiler's message
    under Checks, the dialog's Apply is off and Enter does not close it; Apply clicked before the
    message came back opens the dialog again on what was typed; a valid check is written."""
    notebook = _untagged_wine(lab, "wine_metrics_dialog.ipynb")
    open_notebook(page, lab, notebook.name)
    open_panel(page)
    page.wait_for_selector(f"{PANEL} .kiln-Dag-node")
    dialog = ".jp-Dialog"
    accept = f"{dialog} .jp-Dialog-button.jp-mod-accept"
    messages = _field_message(dialog, "checks")

    def open_dialog() -> None:
        select_cell(page, 7)
        cell(page, 7).hover()
        cell(page, 7).locator("[data-command='kiln:edit-cell-tags']").click()
        page.wait_for_selector(f"{dialog} .kiln-TagEditor")

    open_dialog()
    page.locator(f"{dialog} select[name=role]").select_option("metrics")
    page.locator(f"{dialog} textarea[name=checks]").fill("accuracy>=0.8\naccuracy>=baseline+x")
    page.wait_for_selector(f"{messages}:has-text(\"line 2: bad tag 'check:accuracy>=baseline+x'\")")
    assert page.locator(accept).is_disabled()
    page.locator(f"{dialog} select[name=role]").focus()
    page.keyboard.press("Enter")  # the dialog's default button: refused while a field is invalid
    assert page.locator(dialog).is_visible()
    _dismiss_toasts(page)
    shot = screenshots / "22-tag-dialog-bad-check.png"
    page.locator(f"{dialog} .jp-Dialog-content").screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    page.locator(f"{dialog} .jp-Dialog-button:not(.jp-mod-accept)").click()
    page.wait_for_selector(dialog, state="detached")
    assert model_tags(page, notebook.name)[7] == []

    # Apply at once after typing the mistake: the dialog comes back with the message.
    open_dialog()
    page.locator(f"{dialog} select[name=role]").select_option("metrics")
    page.locator(f"{dialog} textarea[name=checks]").fill("accuracy>=")
    page.locator(accept).click()
    page.wait_for_selector(f"{messages}:has-text(\"bad tag 'check:accuracy>='\")")
    assert page.locator(f"{dialog} textarea[name=checks]").input_value() == "check:accuracy>="
    assert model_tags(page, notebook.name)[7] == []
    page.locator(f"{dialog} textarea[name=checks]").fill("accuracy >= 0.8")
    _wait_enabled(page, accept)
    assert page.locator(messages).inner_text() == ""
    page.locator(accept).click()
    page.wait_for_selector(dialog, state="detached")
    page.wait_for_function(
        "name => { for (const w of window.jupyterapp.shell.widgets('main')) {"
        " if (w.context && w.context.path === name) {"
        " return (w.content.widgets[7].model.getMetadata('tags') ?? []).length === 2; } }"
        " return false; }",
        arg=notebook.name,
    )
    assert model_tags(page, notebook.name)[7] == ["metrics", "check:accuracy>=0.8"]


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
