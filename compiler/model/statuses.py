"""One status vocabulary for tasks and runs: the runtime's states and those only lineage knows.

StrEnum members are plain strings to JSON, SQL and the frontend (`jupyter_ext/src/types.ts`
spells the same values; tests/test_architecture.py fails when the two differ).
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    # In the order a task can pass through them.
    WAITING = "waiting"
    RUNNING = "running"
    RETRYING = "retrying"
    CACHED = "cached"
    DONE = "done"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"  # the run was cancelled before this task finished
    # Lineage only: the run ended (killed client, crash) before the task did, or never reached it.
    INTERRUPTED = "interrupted"
    NOT_RUN = "not_run"


class RunStatus(StrEnum):
    STARTING = "starting"  # the server's run record, before the runtime reports
    STARTED = "started"  # the runtime's first run event: the cluster is ready, tasks follow
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"  # the server's run record: Cancel asked, the runtime not yet done
    CANCELLED = "cancelled"  # stopped by Cancel: its running tasks were cancelled on the cluster
    INTERRUPTED = "interrupted"  # lineage: the process running it went away


WAITING = TaskStatus.WAITING
RUNNING = TaskStatus.RUNNING
RETRYING = TaskStatus.RETRYING
CACHED = TaskStatus.CACHED
DONE = TaskStatus.DONE
FAILED = TaskStatus.FAILED
UPSTREAM_FAILED = TaskStatus.UPSTREAM_FAILED
CANCELLED = TaskStatus.CANCELLED

SUCCEEDED_STATES = frozenset({TaskStatus.DONE, TaskStatus.CACHED})
# The runtime's final states; lineage adds INTERRUPTED and NOT_RUN.
FINAL_STATES = frozenset(
    {
        TaskStatus.DONE,
        TaskStatus.CACHED,
        TaskStatus.FAILED,
        TaskStatus.UPSTREAM_FAILED,
        TaskStatus.CANCELLED,
    }
)
RECORDED_FINAL_STATES = FINAL_STATES | {TaskStatus.INTERRUPTED, TaskStatus.NOT_RUN}
FINAL_RUN_STATES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}
)
