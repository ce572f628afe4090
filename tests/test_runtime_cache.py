"""The cache: reruns skip what did not change, and a damaged artifact is recomputed."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.runtime import run_pipeline
from compiler.runtime.cache import ArtifactStore, cache_key

pytestmark = pytest.mark.timeout(120)


def _statuses(result):
    return {t.name: t.status for t in result.tasks}


def _ran(events):
    return sorted({e["task"] for e in events if e.get("status") == "running"})


@pytest.fixture
def three_step(make_pipeline, tmp_path):
    """read a CSV -> clean -> summarize, plus an independent task."""
    (tmp_path / "sales.csv").write_text("amount\n3\n4\n5\n")

    def build(clean_source="rows = [r * 2 for r in raw]"):
        return make_pipeline(
            tasks=[
                {
                    "name": "load",
                    "source": "raw = [int(x) for x in open('sales.csv').read().split()[1:]]",
                    "outputs": ["raw"],
                    "reads": ["sales.csv"],
                },
                {
                    "name": "clean",
                    "source": clean_source,
                    "inputs": {"raw": "load"},
                    "outputs": ["rows"],
                },
                {
                    "name": "summarize",
                    "source": "total = sum(rows) * factor\nprint('total', total)",
                    "inputs": {"rows": "clean"},
                    "parameters": ["factor"],
                    "outputs": ["total"],
                },
                {"name": "other", "source": "other = 'independent'", "outputs": ["other"]},
            ],
            parameters={"factor": 1},
        )

    return build


def test_a_rerun_with_nothing_changed_computes_nothing(three_step, dask_scheduler_address):
    spec, nb = three_step()
    first = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert first.ok and not any(t.cached for t in first.tasks)

    events = []
    # No scheduler given: when everything is cached, no cluster is started at all.
    second = run_pipeline(spec, notebook_path=nb, on_event=events.append)
    assert set(_statuses(second).values()) == {"cached"}
    assert _ran(events) == []
    assert second.dashboard is None
    assert second.task("summarize").outputs == first.task("summarize").outputs
    # The output notebook still shows what the cached task printed.
    import nbformat

    out = nbformat.read(second.output_notebook, as_version=4)
    printed = out.cells[spec["tasks"][2]["code"][0]["cell_index"]]
    assert printed.outputs[0]["text"] == "total 24\n"
    assert printed.metadata.kiln["status"] == "cached"


def test_editing_a_task_reruns_it_and_its_downstream_only(three_step, dask_scheduler_address):
    spec, nb = three_step()
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    edited, nb = three_step(clean_source="rows = [r * 3 for r in raw]")
    assert edited["tasks"][0]["version"] == spec["tasks"][0]["version"]
    events = []
    result = run_pipeline(
        edited, notebook_path=nb, scheduler=dask_scheduler_address, on_event=events.append
    )
    assert _statuses(result) == {
        "load": "cached",
        "clean": "done",
        "summarize": "done",
        "other": "cached",
    }
    assert _ran(events) == ["clean", "summarize"]


def test_a_changed_parameter_reruns_only_its_readers(three_step, dask_scheduler_address):
    spec, nb = three_step()
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    result = run_pipeline(
        spec, notebook_path=nb, scheduler=dask_scheduler_address, params={"factor": 10}
    )
    assert _statuses(result)["summarize"] == "done"
    assert {t.name for t in result.tasks if t.cached} == {"load", "clean", "other"}


def test_changing_a_csv_reruns_the_task_that_reads_it(three_step, dask_scheduler_address, tmp_path):
    spec, nb = three_step()
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    (tmp_path / "sales.csv").write_text("amount\n3\n4\n5\n6\n")
    events = []
    result = run_pipeline(
        spec, notebook_path=nb, scheduler=dask_scheduler_address, on_event=events.append
    )
    assert _ran(events) == ["clean", "load", "summarize"]
    assert result.task("other").cached


def test_a_corrupted_artifact_is_detected_and_recomputed(three_step, dask_scheduler_address):
    spec, nb = three_step()
    first = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    store = ArtifactStore(first.store_url)
    damaged = Path(store.artifact_path(first.task("clean").outputs["rows"]["digest"]))
    damaged.write_bytes(b"not a pickle")

    events = []
    result = run_pipeline(
        spec, notebook_path=nb, scheduler=dask_scheduler_address, on_event=events.append
    )
    clean = result.task("clean")
    assert clean.status == "done" and not clean.cached
    assert "damaged" in clean.cache_note
    # Same outputs as before: the downstream task stays cached.
    assert _ran(events) == ["clean"]
    assert store.artifact_intact(first.task("clean").outputs["rows"]["digest"])  # rewritten

    # A deleted artifact is the same story.
    damaged.unlink()
    result = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert result.task("clean").status == "done"


def test_a_cached_value_feeds_a_task_that_must_run(three_step, dask_scheduler_address):
    spec, nb = three_step()
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    result = run_pipeline(
        spec, notebook_path=nb, scheduler=dask_scheduler_address, params={"factor": 2}
    )
    assert result.task("clean").cached  # its value was loaded from the store on a worker
    assert result.task("summarize").status == "done"


def test_no_cache_and_force(three_step, dask_scheduler_address):
    spec, nb = three_step()
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)

    events = []
    result = run_pipeline(
        spec,
        notebook_path=nb,
        scheduler=dask_scheduler_address,
        use_cache=False,
        on_event=events.append,
    )
    assert set(_statuses(result).values()) == {"done"}
    assert _ran(events) == ["clean", "load", "other", "summarize"]

    # --force reruns a task; its outputs did not change, so downstream stays cached.
    events = []
    result = run_pipeline(
        spec,
        notebook_path=nb,
        scheduler=dask_scheduler_address,
        force=["clean"],
        on_event=events.append,
    )
    assert _ran(events) == ["clean"]
    assert _statuses(result)["summarize"] == "cached"


def test_force_reruns_downstream_when_outputs_change(make_pipeline, dask_scheduler_address):
    # A task reading the clock produces new outputs every time.
    spec, nb = make_pipeline(
        tasks=[
            {"name": "stamp", "source": "import time\nstamp = time.time()", "outputs": ["stamp"]},
            {"name": "show", "source": "print(stamp)", "inputs": {"stamp": "stamp"}},
        ]
    )
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    events = []
    run_pipeline(
        spec,
        notebook_path=nb,
        scheduler=dask_scheduler_address,
        force=["stamp"],
        on_event=events.append,
    )
    assert _ran(events) == ["show", "stamp"]


def test_cache_off_tasks_always_run(make_pipeline, dask_scheduler_address):
    spec, nb = make_pipeline(
        tasks=[
            {"name": "fetch", "source": "value = 1", "outputs": ["value"], "cache": False},
            {"name": "use", "source": "twice = value * 2", "inputs": {"value": "fetch"}},
        ]
    )
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    result = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert _statuses(result) == {"fetch": "done", "use": "cached"}


def test_the_store_can_be_any_fsspec_url(three_step, dask_scheduler_address, tmp_path):
    spec, nb = three_step()
    url = f"file://{tmp_path / 'elsewhere'}"
    run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address, store_url=url)
    assert any((tmp_path / "elsewhere" / "artifacts").iterdir())
    again = run_pipeline(spec, notebook_path=nb, store_url=url)
    assert set(_statuses(again).values()) == {"cached"}
    assert not (tmp_path / ".kiln" / "cache").exists()


def test_cache_key_depends_on_everything_that_decides_outputs():
    base = cache_key("a" * 16, {"n": 1}, ["k1"], {"x.csv": "d1"})
    assert base == cache_key("a" * 16, {"n": 1}, ["k1"], {"x.csv": "d1"})
    assert base != cache_key("b" * 16, {"n": 1}, ["k1"], {"x.csv": "d1"})
    assert base != cache_key("a" * 16, {"n": 2}, ["k1"], {"x.csv": "d1"})
    assert base != cache_key("a" * 16, {"n": 1}, ["k2"], {"x.csv": "d1"})
    assert base != cache_key("a" * 16, {"n": 1}, ["k1"], {"x.csv": "missing"})


def test_artifacts_are_content_addressed_and_written_whole(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    digest, size = store.put_value({"a": [1, 2, 3]})
    assert store.put_value({"a": [1, 2, 3]})[0] == digest
    assert store.get_value(digest) == {"a": [1, 2, 3]}
    assert store.artifact_intact(digest) and size > 0
    assert [p.name for p in (tmp_path / "store" / "artifacts").iterdir()] == [digest]
    key = "c" * 64
    store.write_manifest(key, {"outputs": {"a": {"digest": digest}}})
    assert store.manifest_intact(store.read_manifest(key))
    assert store.read_manifest("absent") is None


def test_equal_models_get_one_digest_whether_or_not_their_inputs_came_through_pickle(tmp_path):
    """A model trained on labels that crossed a worker boundary (pickled, so with a private copy
    of numpy's int64 dtype) pickled to other bytes than the same model trained in place: a
    bundle run elsewhere then reported different digests for identical outputs."""
    import pickle

    import numpy as np
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_wine(return_X_y=True)
    y_received = pickle.loads(pickle.dumps(y, protocol=5))
    assert y_received.dtype == y.dtype and y_received.dtype is not y.dtype
    store = ArtifactStore(str(tmp_path / "store"))
    here = store.put_value(RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y))
    received = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y_received)
    assert store.put_value(received) == here
    loaded = store.get_value(here[0])
    assert (loaded.predict(X) == received.predict(X)).all()
    assert loaded.classes_.dtype is np.dtype("int64")  # loads with numpy's own dtype again
    # Structured dtypes and datetimes still round-trip.
    table = np.zeros(2, dtype=[("x", "<f8"), ("when", "<M8[ns]")])
    assert store.get_value(store.put_value(table)[0]).dtype == table.dtype


def test_a_computed_set_parameter_gives_the_same_key_in_every_process():
    import os
    import subprocess
    import sys

    program = (
        "from compiler.runtime.cache import cache_key; "
        "print(cache_key('v1', {'cols': {'alpha', 'beta', 'gamma', 'delta'}}, [], {}))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(keys) == 1


def test_a_manifest_cannot_make_the_store_delete_or_read_files_outside_it(tmp_path):
    """A manifest is data: a digest such as '../../../victim.txt' once made discard_artifacts
    delete that file. Digests are checked (64 hex digits) before any path is built."""
    from compiler.runtime.cache import ArtifactStore

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = ArtifactStore(str(tmp_path / "project" / ".kiln"))
    real, _ = store.put_value([1, 2, 3])
    hostile = ["../../../victim.txt", "../../victim.txt", str(victim), "", None, "A" * 64]
    manifest = {"outputs": {f"o{i}": {"digest": d} for i, d in enumerate([real, *hostile])}}
    damaged = store.damaged_artifacts(manifest)
    assert real not in damaged and len(damaged) == len(hostile)
    store.discard_artifacts(damaged)
    assert victim.read_text() == "precious"
    assert store.get_value(real) == [1, 2, 3]
    with pytest.raises(ValueError, match="not a content digest"):
        store.get_value("../../../victim.txt")
    assert store.read_manifest("../../victim") is None
