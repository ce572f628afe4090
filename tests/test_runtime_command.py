"""`kiln run`: what the user sees on the terminal, and the exit code."""

from __future__ import annotations

import argparse
import json

import pytest

from compiler.cli.run import ProgressDisplay, add_run_arguments, run_command

pytestmark = pytest.mark.timeout(120)


def _args(*argv):
    parser = argparse.ArgumentParser(prog="kiln run")
    parser.add_argument("notebook")  # compiler/cli.py adds it before the run options
    add_run_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def pipeline(make_pipeline):
    return make_pipeline(
        tasks=[
            {
                "name": "load",
                "source": "rows = list(range(n))",
                "parameters": ["n"],
                "outputs": ["rows"],
            },
            {
                "name": "total",
                "source": "t = sum(rows)\nprint('sum', t)",
                "inputs": {"rows": "load"},
            },
        ],
        parameters={"n": 4},
    )


def test_a_run_prints_progress_a_table_and_the_output_notebook(
    pipeline, dask_scheduler_address, capsys
):
    spec, nb = pipeline
    code = run_command(
        _args(str(nb), "-p", "n", "10", "--scheduler", dask_scheduler_address), spec, nb
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert "load: running" in err and "total: done" in err
    assert "task" in out and "peak memory" in out
    assert "output notebook:" in out
    table = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    assert table["load"][1] == "done" and table["total"][1] == "done"

    code = run_command(_args(str(nb), "-p", "n", "10", "--json"), spec, nb)
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["status"] == "succeeded"
    assert summary["output_notebook"].endswith(".ipynb")
    assert [(t["name"], t["status"], t["cached"], t["attempts"]) for t in summary["tasks"]] == [
        ("load", "cached", True, 0),
        ("total", "cached", True, 0),
    ]
    assert all("duration" in t for t in summary["tasks"])


def test_no_cache_and_force_flags(pipeline, dask_scheduler_address, capsys):
    spec, nb = pipeline
    base = ["--scheduler", dask_scheduler_address, "--json"]
    assert run_command(_args(str(nb), *base), spec, nb) == 0
    capsys.readouterr()
    assert run_command(_args(str(nb), *base, "--no-cache"), spec, nb) == 0
    statuses = [t["status"] for t in json.loads(capsys.readouterr().out)["tasks"]]
    assert statuses == ["done", "done"]
    assert run_command(_args(str(nb), *base, "--force", "load"), spec, nb) == 0
    statuses = [t["status"] for t in json.loads(capsys.readouterr().out)["tasks"]]
    assert statuses == ["done", "cached"]


def test_a_failed_run_exits_1_and_shows_where(make_pipeline, dask_scheduler_address, capsys):
    spec, nb = make_pipeline(tasks=[{"name": "oops", "source": "x = 1\nx.missing"}])
    code = run_command(_args(str(nb), "--scheduler", dask_scheduler_address), spec, nb)
    out, err = capsys.readouterr()
    assert code == 1
    assert "oops: FAILED" in err and "AttributeError" in err and "line 2" in err
    assert "failed" in out


def test_bad_parameters_and_unavailable_resources_exit_2(
    pipeline, make_pipeline, dask_scheduler_address, capsys
):
    spec, nb = pipeline
    assert run_command(_args(str(nb), "-p", "m", "1"), spec, nb) == 2
    assert "unknown parameter 'm'" in capsys.readouterr().err
    assert run_command(_args(str(nb), "-p", "n", "lots"), spec, nb) == 2

    spec, nb = make_pipeline(tasks=[{"name": "gpu", "source": "a = 1", "resources": {"gpu": 1}}])
    code = run_command(_args(str(nb), "--scheduler", dask_scheduler_address), spec, nb)
    assert code == 2
    assert "'gpu' asks for gpu=1" in capsys.readouterr().err


def test_live_progress_redraws_one_line_per_task(tmp_path):
    import io

    stream = io.StringIO()
    show = ProgressDisplay(stream, live=True)
    show({"type": "run", "run_id": "r1", "status": "started", "dashboard": "http://x/status"})
    for task in ("a", "b"):
        show({"type": "task", "task": task, "status": "waiting", "attempt": 0})
    show({"type": "task", "task": "a", "status": "done", "attempt": 1, "duration": 0.5})
    text = stream.getvalue()
    assert "dashboard: http://x/status" in text
    assert "\x1b[2F" in text  # moved back up over the two task lines
    assert text.rstrip().endswith("b: waiting")
    assert "a: done in 0.50 s" in text
