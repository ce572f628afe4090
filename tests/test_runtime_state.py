"""The run's decisions without a cluster: the pure state machine of compiler/runtime/state.py.

Each test plays what a cluster would report (a task started, failed for memory, went silent
past its timeout) and checks what the run decides: which attempt is submitted when, what the
user is told, which tasks never run. The cluster tests (test_runtime*.py) check that the driver
carries these decisions out on real Dask workers.
"""

from __future__ import annotations

from typing import Any

import pytest

from compiler.model.spec import PipelineSpec
from compiler.runtime.cluster import Placement
from compiler.runtime.plan import PlannedTask, RunPlan
from compiler.runtime.state import (
    AttemptFailed,
    AttemptRunning,
    AttemptSucceeded,
    Cancel,
    CancelRun,
    CellProgress,
    Emit,
    FindMoreMemory,
    KillWorker,
    MemoryPlacement,
    Release,
    RunState,
    Started,
    StoreManifest,
    Submit,
    Tick,
    backoff_delay,
)

RUN_ID = "0123456789abcdef"


def task(name: str, *, inputs: dict[str, str] | None = None, **policy: Any) -> dict[str, Any]:
    inputs = inputs or {}
    return {
        "name": name,
        "version": (name * 16)[:16],
        "upstream": sorted(set(inputs.values())),
        "inputs": inputs,
        "outputs": [],
        "parameters": [],
        "cells": [f"c-{name}"],
        "code": [{"cell_id": f"c-{name}", "cell_index": 0, "source": "pass"}],
        "setup": "",
        "resources": policy.get("resources", {}),
        "retries": policy.get("retries", 0),
        "timeout": policy.get("timeout"),
        "cache": policy.get("cache", True),
        "datasets": {"reads": [], "writes": []},
        "imports": [],
    }


def pipeline(*tasks: dict[str, Any]) -> PipelineSpec:
    return PipelineSpec.from_dict(
        {
            "name": "p",
            "version": "f" * 16,
            "notebook": {"file": "p.ipynb", "digest": "0" * 64},
            "parameters": {},
            "tasks": list(tasks),
        }
    )


def state_for(spec: PipelineSpec, hits: dict[str, dict[str, Any]] | None = None) -> RunState:
    hits = hits or {}
    plan = RunPlan(
        {
            t.name: PlannedTask(f"{t.name}-key-0123", hits.get(t.name), hits.get(t.name), None)
            for t in spec.tasks
        },
        [t.name for t in spec.tasks if t.name not in hits],
    )
    return RunState(spec, plan, run_id=RUN_ID, use_cache=True)


def submits(instructions: list[Any]) -> list[str]:
    return [i.task for i in instructions if isinstance(i, Submit)]


def statuses(instructions: list[Any]) -> list[tuple[str, str]]:
    return [
        (i.event["task"], i.event["status"])
        for i in instructions
        if isinstance(i, Emit) and i.event["type"] == "task"
    ]


def key_of(state: RunState, name: str) -> str:
    key = state.current_key(name)
    assert key is not None, f"{name} has no attempt in flight"
    return key


OK = {"duration": 0.1, "outputs": {}, "cells": [], "worker": "tcp://w1"}


def test_tasks_start_when_their_inputs_are_done_and_a_chain_finishes():
    state = state_for(pipeline(task("load"), task("fit", inputs={"df": "load"})))
    first = state.handle(Started(0.0))
    assert submits(first) == ["load"]
    assert ("fit", "waiting") in statuses(first)
    assert state.in_flight() == ["load"]
    state.handle(AttemptRunning("load", key_of(state, "load"), "tcp://w1", 0.1))
    after_load = state.handle(AttemptSucceeded("load", key_of(state, "load"), OK, 0.5))
    assert state.in_flight() == ["fit"]
    assert statuses(after_load)[0] == ("load", "done")
    assert submits(after_load) == ["fit"]
    done = state.handle(AttemptSucceeded("fit", key_of(state, "fit"), OK, 0.9))
    assert state.finished
    # Once fit (load's only reader) is done, load's value can be freed on the cluster.
    assert Release("load") in done
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.status == "succeeded" and [t.status for t in result.tasks] == ["done", "done"]


def test_a_failure_retries_with_growing_backoff_then_fails_and_blocks_downstream():
    state = state_for(pipeline(task("fetch", retries=2), task("use", inputs={"x": "fetch"})))
    state.handle(Started(0.0))
    error = {"ename": "ConnectionError", "evalue": "flaky", "cell_index": 0, "line": 3}
    first = state.handle(AttemptFailed("fetch", key_of(state, "fetch"), error, None, 10.0))
    assert statuses(first) == [("fetch", "retrying")]
    assert submits(first) == []  # not before its backoff
    assert submits(state.handle(Tick(10.0 + backoff_delay(0) - 0.01))) == []
    second = state.handle(Tick(10.0 + backoff_delay(0)))
    assert submits(second) == ["fetch"]
    assert key_of(state, "fetch").endswith("-2")  # each attempt is its own Dask key
    state.handle(AttemptFailed("fetch", key_of(state, "fetch"), error, None, 20.0))
    assert state.next_due() == pytest.approx(20.0 + backoff_delay(1))  # 1 s after 0.5 s
    state.handle(Tick(21.0))
    last = state.handle(AttemptFailed("fetch", key_of(state, "fetch"), error, None, 30.0))
    assert statuses(last) == [("fetch", "failed"), ("use", "upstream_failed")]
    assert state.finished
    result = state.result(parameters={}, dashboard=None, store_url=None)
    fetch = result.task("fetch")
    assert fetch.attempts == 3 and fetch.error["line"] == 3
    assert [a["retry"] for a in fetch.attempt_log[:2]] == [
        "retried after 0.5 s (retry 1)",
        "retried after 1 s (retry 2)",
    ]
    assert result.status == "failed" and result.task("use").attempts == 0


def test_a_task_out_of_memory_asks_for_a_bigger_worker_and_retries_there():
    state = state_for(pipeline(task("big")))
    state.handle(Started(0.0))
    oom = {"ename": "MemoryError", "evalue": "", "reason": "memory"}
    record = {"worker": "tcp://w1", "memory_limit": 1000}
    asked = state.handle(AttemptFailed("big", key_of(state, "big"), oom, record, 1.0))
    ask = next(i for i in asked if isinstance(i, FindMoreMemory))
    assert ask.memory_limit == 1000 and statuses(asked) == []
    bigger = Placement(resources={"MEMORY": 2000.0})
    answered = state.handle(MemoryPlacement("big", bigger, 2000.0, 1.1))
    assert statuses(answered) == [("big", "retrying")]
    assert submits(answered) == ["big"]  # at once: memory retries wait for no backoff
    assert state.placement("big") == bigger
    reason = answered[0].event["reason"]
    assert "more memory" in reason and "KiB" in reason


def test_out_of_memory_with_no_bigger_worker_falls_back_to_the_retry_policy():
    state = state_for(pipeline(task("big", retries=0)))
    state.handle(Started(0.0))
    oom = {"ename": "KilledWorker", "evalue": "", "reason": "worker_died"}
    state.handle(AttemptFailed("big", key_of(state, "big"), oom, None, 1.0))
    final = state.handle(MemoryPlacement("big", None, None, 1.1))
    assert statuses(final) == [("big", "failed")]
    assert state.finished


def test_a_task_blocked_past_its_timeout_is_cancelled_its_worker_ended_and_retried():
    state = state_for(pipeline(task("stuck", timeout=10.0, retries=1)))
    state.handle(Started(0.0))
    state.handle(AttemptRunning("stuck", key_of(state, "stuck"), "tcp://w2", 5.0))
    assert state.handle(Tick(17.0)) == []  # within timeout + grace (3 s)
    ended = state.handle(Tick(18.5))
    assert Cancel("stuck") in ended and KillWorker("tcp://w2") in ended
    assert statuses(ended) == [("stuck", "retrying")]
    retried = state.handle(Tick(18.5 + backoff_delay(0)))
    assert submits(retried) == ["stuck"]
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.task("stuck").attempt_log[0]["error"].startswith("TaskTimeout: task exceeded")


def test_a_cell_past_the_cell_timeout_is_stopped_and_each_cell_is_an_event():
    """papermill's --execution-timeout: the limit counts from each cell's start."""
    spec = pipeline(task("nb"))
    plan = RunPlan({"nb": PlannedTask("nb-key-0123", None, None, None)}, ["nb"])
    state = RunState(spec, plan, run_id=RUN_ID, use_cache=True, cell_timeout=2.0)
    state.handle(Started(0.0))
    key = key_of(state, "nb")
    state.handle(AttemptRunning("nb", key, "tcp://w1", 1.0))
    started = state.handle(CellProgress("nb", key, True, {"cell_index": 0}, 1.0))
    cells = [i.event for i in started if isinstance(i, Emit) and i.event["type"] == "cell"]
    assert [(c["task"], c["status"], c["cell"]) for c in cells] == [
        ("nb", "running", {"cell_index": 0})
    ]
    state.handle(CellProgress("nb", key, False, {"cell_index": 0, "status": "ok"}, 2.5))
    state.handle(CellProgress("nb", key, True, {"cell_index": 1}, 2.5))
    assert state.handle(Tick(7.0)) == []  # the second cell: 2 s + 3 s grace from 2.5
    ended = state.handle(Tick(7.6))
    assert Cancel("nb") in ended and KillWorker("tcp://w1") in ended
    assert statuses(ended) == [("nb", "failed")]
    error = state.result(parameters={}, dashboard=None, store_url=None).task("nb").error
    assert error["reason"] == "timeout" and "timeout of 2s" in error["evalue"]


def test_reports_about_an_attempt_that_was_already_decided_are_ignored():
    state = state_for(pipeline(task("t", retries=1)))
    state.handle(Started(0.0))
    old_key = key_of(state, "t")
    state.handle(AttemptFailed("t", old_key, {"ename": "E", "evalue": ""}, None, 1.0))
    state.handle(Tick(5.0))
    # The first attempt's late "record" must not finish the second attempt.
    assert state.handle(AttemptSucceeded("t", old_key, OK, 5.1)) == []
    assert not state.finished


def test_cache_hits_resolve_without_submitting_and_a_changed_upstream_reruns_its_readers():
    hit = {"outputs": {"x": {"digest": "a" * 64}}, "cells": [], "peak_memory": 10}
    spec = pipeline(task("a"), task("b", inputs={"x": "a"}), task("c"))
    state = state_for(spec, hits={"b": hit, "c": hit})
    first = state.handle(Started(0.0))
    assert submits(first) == ["a"]
    assert ("c", "cached") in statuses(first)
    produced = {**OK, "outputs": {"x": {"digest": "b" * 64}}}  # a's value changed
    after = state.handle(AttemptSucceeded("a", key_of(state, "a"), produced, 1.0))
    assert submits(after) == ["b"]  # its cache entry was made from the old value
    assert any(isinstance(i, StoreManifest) and i.task == "a" for i in after)


def test_cancel_stops_what_runs_ends_the_rest_cancelled_and_submits_nothing_more():
    state = state_for(
        pipeline(
            task("load"),
            task("fit", inputs={"df": "load"}, retries=3),
            task("report", inputs={"m": "fit"}),
        )
    )
    state.handle(Started(0.0))
    state.handle(AttemptSucceeded("load", key_of(state, "load"), OK, 0.5))
    state.handle(AttemptRunning("fit", key_of(state, "fit"), "tcp://w1", 0.6))
    stopped = state.handle(CancelRun(1.0))
    assert Cancel("fit") in stopped  # the attempt on the cluster is cancelled
    assert statuses(stopped) == [("fit", "cancelled"), ("report", "cancelled")]
    assert state.finished and state.next_due() is None
    assert state.in_flight() == [] and not state.any_in_flight()  # the driver polls nothing
    assert submits(state.handle(Tick(100.0))) == []  # no retry, no downstream task
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.status == "cancelled"
    assert [t.status for t in result.tasks] == ["done", "cancelled", "cancelled"]
