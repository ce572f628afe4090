"""Large outputs are written after their task returned (store_writes.py): the reader starts at
once, and the cache still only ever holds entries whose artifacts are whole and right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.runtime import run_pipeline
from compiler.runtime.cache import ArtifactStore
from compiler.runtime.store_writes import DEFERRED_BYTES

pytestmark = pytest.mark.timeout(180)

ROWS = 3_000_000  # 24 MB of float64 features: over DEFERRED_BYTES, cheap on two cores
assert ROWS * 8 > DEFERRED_BYTES


def _statuses(result):
    return {t.name: t.status for t in result.tasks}


def _entries(folder: Path) -> dict[str, dict]:
    """task name -> its cache manifest, as on disk."""
    found = {}
    for path in (folder / ".kiln" / "cache").glob("*.json"):
        manifest = json.loads(path.read_text())
        found[manifest["task"]] = manifest
    return found


def _stored_value(folder: Path, manifest: dict, name: str):
    return ArtifactStore(str(folder / ".kiln")).get_value(manifest["outputs"][name]["digest"])


@pytest.fixture
def features_pipeline(make_pipeline):
    """features (a 24 MB array) -> two models trained on it -> evaluation."""
    return make_pipeline(
        tasks=[
            {
                "name": "features",
                "source": (
                    "import numpy as np\n"
                    "rng = np.random.default_rng(seed)\n"
                    f"features = rng.normal(size={ROWS})"
                ),
                "parameters": ["seed"],
                "outputs": ["features"],
            },
            {
                "name": "mean_model",
                "source": "mean_model = float(features.mean())",
                "inputs": {"features": "features"},
                "outputs": ["mean_model"],
            },
            {
                "name": "spread_model",
                "source": "spread_model = float(features.std())",
                "inputs": {"features": "features"},
                "outputs": ["spread_model"],
            },
            {
                "name": "evaluate",
                "source": "report = {'mean': mean_model, 'std': spread_model}\nprint(report)",
                "inputs": {"mean_model": "mean_model", "spread_model": "spread_model"},
                "outputs": ["report"],
            },
        ],
        parameters={"seed": 7},
    )


def test_a_large_output_serves_the_next_run_of_the_same_process(
    features_pipeline, dask_scheduler_address
):
    spec, nb = features_pipeline
    first = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert first.ok, first.error
    assert set(_statuses(first).values()) == {"done"}

    again = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert again.ok, again.error
    # The 24 MB output was still being written when the first run returned; this run waited
    # for its entry instead of computing the features again.
    assert _statuses(again) == dict.fromkeys(_statuses(first), "cached")
    entries = _entries(nb.parent)
    expected = np.random.default_rng(7).normal(size=ROWS)
    assert np.array_equal(_stored_value(nb.parent, entries["features"], "features"), expected)
    assert (
        again.task("evaluate").outputs["report"]["digest"]
        == (first.task("evaluate").outputs["report"]["digest"])
    )


def test_a_value_changed_in_place_by_its_reader_is_never_stored_changed(
    make_pipeline, dask_scheduler_address
):
    # The reader changes the array in place while (or before) its worker writes it.
    spec, nb = make_pipeline(
        tasks=[
            {
                "name": "zeros",
                "source": f"import numpy as np\nweights = np.zeros({ROWS})",
                "outputs": ["weights"],
            },
            {
                "name": "update",
                "source": "weights += 1.0\ntotal = float(weights.sum())",
                "inputs": {"weights": "zeros"},
                "outputs": ["total"],
            },
        ]
    )
    first = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert first.ok, first.error
    again = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert again.ok, again.error
    # Whatever the timing, an entry for `zeros` holds zeros (the value its task made), or the
    # entry was not kept and the task ran again: never the reader's changed array.
    entry = _entries(nb.parent).get("zeros")
    if entry is not None:
        assert not _stored_value(nb.parent, entry, "weights").any()
    else:
        assert _statuses(again)["zeros"] == "done"
    total = again.task("update")
    assert total.status in ("done", "cached")


FLAKY = f"""
class Telemetry:
    '''Pickles twice (its digests), then fails: a store write that breaks after the task.'''
    pickled = 0

    def __sizeof__(self):
        return {2 * DEFERRED_BYTES}

    def __reduce__(self):
        kind = type(self)  # the task's namespace is cleared before its outputs are stored
        kind.pickled += 1
        if kind.pickled > 2:
            raise OSError("the disk is full")
        return (kind, ())

telemetry = Telemetry()
"""


def test_an_entry_whose_write_failed_is_computed_again_and_says_why(
    make_pipeline, dask_scheduler_address
):
    spec, nb = make_pipeline(tasks=[{"name": "collect", "source": FLAKY, "outputs": ["telemetry"]}])
    first = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert first.ok, first.error
    again = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert again.ok, again.error
    collect = again.tasks[0]
    assert collect.status == "done"  # computed again: its entry was never written
    assert "not stored" in (collect.cache_note or "")
    assert "the disk is full" in (collect.cache_note or "")
    assert "collect" not in _entries(nb.parent)


def test_a_cluster_kiln_started_has_stored_everything_when_the_run_returns(features_pipeline):
    # `kiln run` without a scheduler: its own LocalCluster ends with the run, so the workers'
    # writes are finished first and the entries are on disk when the process exits.
    spec, nb = features_pipeline
    result = run_pipeline(spec, notebook_path=nb, workers=1)
    assert result.ok, result.error
    entries = _entries(nb.parent)
    assert set(entries) == {"features", "mean_model", "spread_model", "evaluate"}
    expected = np.random.default_rng(7).normal(size=ROWS)
    assert np.array_equal(_stored_value(nb.parent, entries["features"], "features"), expected)


def test_clearing_the_cache_after_a_run_leaves_nothing_to_wait_for(
    features_pipeline, dask_scheduler_address
):
    # `rm -rf .kiln` while the server (one process) stays up: the next run computes afresh. It
    # used to wait for the deleted entry until its deadline, then call it "not written in time".
    import shutil

    from distributed import Client

    from compiler.runtime.store_writes import flush_store_writes

    spec, nb = features_pipeline
    first = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert first.ok, first.error
    with Client(dask_scheduler_address) as client:
        client.run(flush_store_writes)  # the entry is on disk...
    assert "features" in _entries(nb.parent)
    shutil.rmtree(nb.parent / ".kiln")  # ...and the user clears the cache
    again = run_pipeline(spec, notebook_path=nb, scheduler=dask_scheduler_address)
    assert again.ok, again.error
    assert set(_statuses(again).values()) == {"done"}
    assert [t.cache_note for t in again.tasks] == [None] * len(again.tasks)


def test_a_large_output_is_written_once_its_reader_on_that_worker_is_done(make_pipeline):
    # Dask runs the reader where the value is. Writing 24 MB (500 MB in the run benchmark)
    # while the reader computes would share the worker's memory bandwidth and cores with it,
    # so the write waits for a quiet moment on the worker (up to WRITE_YIELD_S).
    spec, nb = make_pipeline(
        tasks=[
            {
                "name": "features",
                "source": f"import numpy as np\nfeatures = np.arange({ROWS}, dtype=float)",
                "outputs": ["features"],
            },
            {
                "name": "train",
                "source": (
                    "import pathlib, time\n"
                    "time.sleep(0.4)  # training\n"
                    "model = float(features.mean())\n"
                    "pathlib.Path('trained_at.txt').write_text(repr(time.time()))"
                ),
                "inputs": {"features": "features"},
                "outputs": ["model"],
            },
        ]
    )
    result = run_pipeline(spec, notebook_path=nb, workers=1)  # one worker: both tasks on it
    assert result.ok, result.error
    trained_at = float((nb.parent / "trained_at.txt").read_text())
    features = _entries(nb.parent)["features"]
    digest = features["outputs"]["features"]["digest"]
    artifact = Path(ArtifactStore(str(nb.parent / ".kiln")).artifact_path(digest))
    assert artifact.stat().st_mtime >= trained_at  # written after the reader, not beside it
    assert np.array_equal(
        _stored_value(nb.parent, features, "features"),
        np.arange(ROWS, dtype=float),
    )
