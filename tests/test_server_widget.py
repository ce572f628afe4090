"""The ipywidgets PipelineWidget: the same compile result and run progress as the Lab panel."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_ext import PipelineWidget
from jupyter_ext.render import render_run, render_svg, status_text
from tests.nbutil import make_notebook

CELLS = [
    ("import math", ["setup"]),
    ("xs = list(range(5))", ["task:load"]),
    ("total = sum(xs)", ["task:add"]),
    ("n = len(xs)", ["task:count"]),
    ("mean = total / n\nprint(math.floor(mean))", ["task:report"]),
]


def test_widget_shows_the_compiled_graph(tmp_path: Path):
    widget = PipelineWidget(make_notebook(tmp_path / "w.ipynb", CELLS))

    svg = widget.graph.value
    for name in ("load", "add", "count", "report"):
        assert f'data-task="{name}"' in svg
    for edge in (("load", "add"), ("load", "count"), ("add", "report"), ("count", "report")):
        assert f'data-from="{edge[0]}" data-to="{edge[1]}"' in svg
    assert "4 tasks" in widget.title.value
    assert widget.diagnostics.value == ""
    assert not widget.run_button.disabled


def test_widget_lists_diagnostics_and_cannot_run_a_broken_notebook(tmp_path: Path):
    widget = PipelineWidget(make_notebook(tmp_path / "b.ipynb", [("y = missing", ["task:a"])]))

    assert widget.graph.value == ""
    assert "missing" in widget.diagnostics.value and "cell 0, line 1" in widget.diagnostics.value
    assert widget.run_button.disabled
    assert widget.run() is None


def test_widget_reports_an_unreadable_notebook(tmp_path: Path):
    (tmp_path / "bad.ipynb").write_text("not json")
    widget = PipelineWidget(tmp_path / "bad.ipynb")
    assert "error" in widget.diagnostics.value and widget.run_button.disabled


@pytest.mark.timeout(300)
def test_widget_run_follows_every_task_to_done(tmp_path: Path, dask_scheduler_address: str):
    widget = PipelineWidget(
        make_notebook(tmp_path / "w.ipynb", CELLS), scheduler=dask_scheduler_address
    )
    seen: list[str] = []
    widget.graph.observe(lambda change: seen.append(change["new"]), names="value")

    record = widget.run()

    assert record is not None and record.status == "succeeded", record and record.to_dict()
    assert {t: s["status"] for t, s in record.tasks.items()} == dict.fromkeys(
        ("load", "add", "count", "report"), "done"
    )
    assert any('data-status="running"' in svg for svg in seen)  # live progress
    assert widget.graph.value.count('data-status="done"') == 4
    assert "SUCCEEDED" in widget.run_status.value.upper() and "4/4 tasks done" in (
        widget.run_status.value
    )
    assert not widget.run_button.disabled


def test_renderers_escape_and_describe_states():
    spec = {
        "name": "p",
        "tasks": [
            {"name": "a<b", "upstream": [], "inputs": {}, "code": [{"cell_index": 0}]},
            {"name": "c", "upstream": ["a<b"], "inputs": {}, "code": [{"cell_index": 1}]},
        ],
    }
    svg = render_svg(spec, {"a<b": {"status": "failed", "duration": 0.25}})
    assert "a&lt;b" in svg and "a<b" not in svg
    assert 'stroke-dasharray="4 3"' in svg  # an `after:` edge, no data along it
    assert status_text({"status": "done", "duration": 75}) == "done · 1 min 15 s"
    run = {
        "run_id": "0123456789",
        "status": "failed",
        "tasks": {
            "a": {
                "status": "failed",
                "error": {"ename": "KeyError", "evalue": "'x'", "cell_index": 3, "line": 2},
            }
        },
    }
    html = render_run(run)
    assert "KeyError" in html and "cell 3, line 2" in html and "0/1 tasks done" in html
    assert render_svg(None) == "" and render_run(None) == ""
