"""`run_pipeline` end to end on a real Dask cluster: what a user sees after a run.

Most tests share one LocalCluster (`dask_scheduler_address`, see conftest.py) to keep the suite
fast; tests/test_runtime_cluster.py covers the embedded cluster and external clusters.
"""

from __future__ import annotations

import nbformat
import pytest

from compiler.runtime import ResourceUnavailable, run_pipeline

pytestmark = pytest.mark.timeout(120)


def _statuses(result):
    return {t.name: t.status for t in result.tasks}


def _cell(nb, source_start):
    return next(c for c in nb.cells if c.source.startswith(source_start))


def test_cells_run_with_ipython_semantics_and_fill_the_output_notebook(
    make_pipeline, dask_scheduler_address, tmp_path
):
    (tmp_path / "greeting.txt").write_text("hello from a file")
    spec, nb_path = make_pipeline(
        tasks=[
            {
                "name": "load",
                "source": [
                    "text = open('greeting.txt').read()\nsize = n * 2",
                    "%time total = size + 1\nprint('total', total)\ntotal",
                ],
                "parameters": ["n"],
                "outputs": ["text", "total"],
            },
            {
                "name": "report",
                "source": [
                    "%%capture hidden\nprint('not shown')",
                    "display({'words': text.split()})\n!echo from-the-shell\n"
                    "import sys\nprint('warn', file=sys.stderr)\nmath.sqrt(total)",
                ],
                "inputs": {"text": "load", "total": "load"},
            },
        ],
        setup="import math",
        parameters={"n": 3},
    )
    result = run_pipeline(
        spec, notebook_path=nb_path, params={"n": 4}, scheduler=dask_scheduler_address
    )

    assert result.status == "succeeded"
    assert _statuses(result) == {"load": "done", "report": "done"}
    assert result.task("load").outputs["total"]["type"] == "builtins.int"
    assert result.task("load").worker.startswith("tcp://127.0.0.1:")
    assert result.parameters == {"n": 4}

    nb = nbformat.read(result.output_notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kiln["run_id"] == result.run_id
    assert nb.metadata.kiln["status"] == "succeeded"
    assert nb.metadata.kiln["parameters"] == {"n": 4}

    timed = _cell(nb, "%time")
    assert "Wall time" in timed.outputs[0]["text"] and "total 9" in timed.outputs[0]["text"]
    assert timed.outputs[-1]["output_type"] == "execute_result"
    assert timed.outputs[-1]["data"]["text/plain"] == "9"
    assert timed.metadata.kiln["task"] == "load" and timed.metadata.kiln["status"] == "done"

    assert _cell(nb, "%%capture").outputs == []
    shown = _cell(nb, "display(")
    kinds = [o["output_type"] for o in shown.outputs]
    assert kinds[0] == "display_data" and "hello" in shown.outputs[0]["data"]["text/plain"]
    stdout = "".join(o.get("text", "") for o in shown.outputs if o.get("name") == "stdout")
    stderr = "".join(o.get("text", "") for o in shown.outputs if o.get("name") == "stderr")
    assert "from-the-shell" in stdout and "warn" in stderr
    assert shown.outputs[-1]["data"]["text/plain"] == "3.0"

    setup_cell = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
    assert setup_cell.outputs == [] and "kiln" not in setup_cell.metadata
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "n = 4" in injected.source


def test_failing_cell_is_reported_and_the_independent_branch_finishes(
    make_pipeline, dask_scheduler_address
):
    spec, nb_path = make_pipeline(
        tasks=[
            {"name": "prepare", "source": "rows = [1, 2, 3]", "outputs": ["rows"]},
            {
                "name": "divide",
                "source": ["print('starting')", "total = sum(rows)\nratio = total / 0\n"],
                "inputs": {"rows": "prepare"},
                "outputs": ["ratio"],
            },
            {"name": "publish", "source": "print(ratio)", "inputs": {"ratio": "divide"}},
            {"name": "count", "source": "n = len(rows)\nn", "inputs": {"rows": "prepare"}},
        ]
    )
    events = []
    result = run_pipeline(
        spec, notebook_path=nb_path, scheduler=dask_scheduler_address, on_event=events.append
    )

    assert result.status == "failed"
    assert _statuses(result) == {
        "prepare": "done",
        "divide": "failed",
        "publish": "upstream_failed",
        "count": "done",
    }
    error = result.task("divide").error
    failing_cell = spec["tasks"][1]["code"][1]
    assert error["cell_index"] == failing_cell["cell_index"]
    assert error["cell_id"] == failing_cell["cell_id"]
    assert error["line"] == 2
    assert error["ename"] == "ZeroDivisionError" and "division by zero" in error["evalue"]
    assert any("ratio = total / 0" in line for line in error["traceback"])

    nb = nbformat.read(result.output_notebook, as_version=4)
    broken = nb.cells[failing_cell["cell_index"]]
    assert broken.outputs[-1]["output_type"] == "error"
    assert broken.outputs[-1]["ename"] == "ZeroDivisionError"
    assert nb.cells[spec["tasks"][1]["code"][0]["cell_index"]].outputs[0]["text"] == "starting\n"
    assert nb.cells[spec["tasks"][2]["code"][0]["cell_index"]].metadata.kiln["status"] == (
        "not_run"
    )
    failed_events = [e for e in events if e.get("status") == "failed"]
    assert failed_events[0]["task"] == "divide" and failed_events[0]["error"]["line"] == 2

    # Fix the cell and run again: the finished tasks come from the cache.
    spec["tasks"][1]["code"][1]["source"] = "total = sum(rows)\nratio = total / 2\n"
    spec["tasks"][1]["version"] = "f" * 16
    spec["tasks"][2]["version"] = "e" * 16
    rerun = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    assert _statuses(rerun) == {
        "prepare": "cached",
        "divide": "done",
        "publish": "done",
        "count": "cached",
    }


def test_events_describe_the_run(make_pipeline, dask_scheduler_address):
    spec, nb_path = make_pipeline(
        tasks=[
            {"name": "a", "source": "x = 1", "outputs": ["x"], "resources": {"cpu": 1}},
            {"name": "b", "source": "y = x + 1", "inputs": {"x": "a"}},
        ]
    )
    events = []
    result = run_pipeline(
        spec, notebook_path=nb_path, scheduler=dask_scheduler_address, on_event=events.append
    )
    run_events = [e["status"] for e in events if e["type"] == "run"]
    assert run_events == ["started", "succeeded"]
    a_statuses = [e["status"] for e in events if e["type"] == "task" and e["task"] == "a"]
    assert a_statuses == ["waiting", "running", "done"]
    done = next(e for e in events if e["type"] == "task" and e["status"] == "done")
    assert done["cache_key"] == result.task("a").cache_key
    assert done["version"] == spec["tasks"][0]["version"]
    assert done["worker"].startswith("tcp://")
    assert done["resources"] == {"cpu": 1}
    assert done["peak_memory"] > 0
    assert done["outputs"]["x"]["digest"]


def test_a_flaky_task_is_retried(make_pipeline, dask_scheduler_address):
    flaky = (
        "import os\n"
        "if not os.path.exists('flaky.marker'):\n"
        "    open('flaky.marker', 'w').close()\n"
        "    raise ConnectionError('the service hiccuped')\n"
        "value = 42"
    )
    spec, nb_path = make_pipeline(
        tasks=[
            {"name": "fetch", "source": flaky, "outputs": ["value"], "retries": 2},
            {"name": "use", "source": "doubled = value * 2\ndoubled", "inputs": {"value": "fetch"}},
        ]
    )
    events = []
    result = run_pipeline(
        spec, notebook_path=nb_path, scheduler=dask_scheduler_address, on_event=events.append
    )
    fetch = result.task("fetch")
    assert result.status == "succeeded" and fetch.status == "done"
    assert fetch.attempts == 2
    first, second = fetch.attempt_log
    assert first["status"] == "failed" and "ConnectionError" in first["error"]
    assert "retried after" in first["retry"]
    assert second["status"] == "done"
    assert any(e.get("status") == "retrying" and e["task"] == "fetch" for e in events)
    nb = nbformat.read(result.output_notebook, as_version=4)
    use_cell = nb.cells[spec["tasks"][1]["code"][0]["cell_index"]]
    assert use_cell.outputs[0]["data"]["text/plain"] == "84"


def test_retries_run_out(make_pipeline, dask_scheduler_address):
    spec, nb_path = make_pipeline(
        tasks=[{"name": "always", "source": "raise ValueError('nope')", "retries": 1}]
    )
    result = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    task = result.task("always")
    assert task.status == "failed" and task.attempts == 2
    assert [a["status"] for a in task.attempt_log] == ["failed", "failed"]


def test_a_task_past_its_timeout_is_stopped(make_pipeline, dask_scheduler_address):
    spec, nb_path = make_pipeline(
        tasks=[
            {
                "name": "spin",
                "source": ["print('begin')", "n = 0\nwhile True:\n    n += 1"],
                "timeout": 1.0,
            },
            {"name": "sleepy", "source": "import time\ntime.sleep(120)", "timeout": 1.0},
            {"name": "quick", "source": "q = 1"},
        ]
    )
    result = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    assert result.status == "failed"
    spin = result.task("spin")
    assert spin.status == "failed"
    assert spin.error["ename"] == "TaskTimeout" and "timeout of 1.0s" in spin.error["evalue"]
    assert spin.error["cell_index"] == spec["tasks"][0]["code"][1]["cell_index"]
    assert spin.error["line"] in (2, 3)
    # time.sleep cannot be interrupted from another thread: its worker process is ended.
    sleepy = result.task("sleepy")
    assert sleepy.status == "failed" and sleepy.error["ename"] == "TaskTimeout"
    assert "worker process" in sleepy.error["evalue"]
    assert result.task("quick").status == "done"

    # The cluster is healthy afterwards: both workers run tasks again.
    spec, nb_path = make_pipeline(
        tasks=[{"name": f"after{i}", "source": f"x = {i}"} for i in range(6)], name="after"
    )
    again = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    assert again.ok


def test_setup_errors_and_missing_outputs_are_reported(make_pipeline, dask_scheduler_address):
    spec, nb_path = make_pipeline(
        tasks=[
            {"name": "maybe", "source": "if False:\n    x = 1", "outputs": ["x"]},
            {"name": "after", "source": "y = x", "inputs": {"x": "maybe"}},
        ],
        setup="import no_such_module_here",
    )
    result = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    error = result.task("maybe").error
    assert error["ename"] == "ModuleNotFoundError" and error["cell_index"] is None
    assert result.task("after").status == "upstream_failed"

    spec["tasks"][0]["setup"] = spec["tasks"][1]["setup"] = ""
    result = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    error = result.task("maybe").error
    assert error["ename"] == "NameError" and "did not define x" in error["evalue"]


def test_unsatisfiable_resources_are_refused_before_the_run(make_pipeline, dask_scheduler_address):
    spec, nb_path = make_pipeline(
        tasks=[
            {"name": "small", "source": "a = 1"},
            {"name": "train", "source": "b = 2", "resources": {"gpu": 1, "memory": 2**40}},
        ]
    )
    events = []
    with pytest.raises(ResourceUnavailable) as refused:
        run_pipeline(
            spec, notebook_path=nb_path, scheduler=dask_scheduler_address, on_event=events.append
        )
    message = str(refused.value)
    assert "'train'" in message and "gpu=1" in message and "memory=1.0 TiB" in message
    assert "MEMORY=4.0 GiB" in message  # what the workers have
    assert events == []  # nothing started


def test_unknown_parameters_and_forced_tasks_are_errors(make_pipeline, dask_scheduler_address):
    spec, nb_path = make_pipeline(tasks=[{"name": "a", "source": "x = 1"}], parameters={"n": 1})
    with pytest.raises(ValueError, match="unknown parameter 'm'.*n"):
        run_pipeline(spec, notebook_path=nb_path, params={"m": 2})
    with pytest.raises(ValueError, match="unknown task.*zzz"):
        run_pipeline(spec, notebook_path=nb_path, force=["zzz"])


def test_matplotlib_figures_appear_in_the_output_notebook(make_pipeline, dask_scheduler_address):
    spec, nb_path = make_pipeline(
        tasks=[{"name": "plot", "source": "fig, ax = plt.subplots()\nax.plot([1, 3, 2]);"}],
        setup="import matplotlib.pyplot as plt",
    )
    result = run_pipeline(spec, notebook_path=nb_path, scheduler=dask_scheduler_address)
    nb = nbformat.read(result.output_notebook, as_version=4)
    figure = nb.cells[spec["tasks"][0]["code"][0]["cell_index"]].outputs
    assert [o["output_type"] for o in figure] == ["display_data"]
    assert figure[0]["data"]["image/png"]


def test_a_task_that_switches_matplotlib_to_agg_does_not_hide_later_figures(make_pipeline):
    # One worker, so both tasks share its process, as tasks of different runs do on a cluster.
    spec, nb_path = make_pipeline(
        tasks=[
            {
                "name": "save",
                "source": "import matplotlib\nmatplotlib.use('Agg')\nn = 3",
                "outputs": ["n"],
            },
            {
                "name": "plot",
                "source": "fig, ax = plt.subplots()\nax.plot(range(n));",
                "inputs": {"n": "save"},
            },
        ],
        setup="import matplotlib.pyplot as plt",
    )
    result = run_pipeline(spec, notebook_path=nb_path, workers=1)
    assert result.ok
    nb = nbformat.read(result.output_notebook, as_version=4)
    plot = next(t for t in spec["tasks"] if t["name"] == "plot")
    figure = nb.cells[plot["code"][0]["cell_index"]].outputs
    assert [o["output_type"] for o in figure] == ["display_data"]
