"""The lineage store on a real SQLite file and a real PostgreSQL server: schema migrations,
recording event by event, concurrent writers, interrupted runs, queries, OpenLineage events.

Runs here are driven by the event stream a run emits (tests/lineage_fixtures.py), so they need
no Dask; tests/test_lineage_cli.py records real runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text, update

from compiler.lineage import (
    AmbiguousTarget,
    LineageNotFound,
    RunRecorder,
    diff_runs,
    lineage,
    mark_interrupted,
    open_store,
    show_run,
)
from compiler.lineage.openlineage import OpenLineageEmitter
from compiler.lineage.schema import (
    artifacts,
    dataset_accesses,
    metadata,
    pipelines,
    runs,
    task_inputs,
    task_outputs,
    task_runs,
)
from compiler.lineage.store import HEAD_REVISION, MIGRATIONS_DIR
from compiler.ops.run import run_spec
from tests.lineage_fixtures import chain_events, chain_spec
from tests.postgres_fixture import postgres_server, postgres_unavailable

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def lineage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty lineage database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'lineage.db'}"
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        return postgres_server().new_database()
    except RuntimeError as exc:
        pytest.skip(str(exc))


def record(store, spec, notebook, run_id=None, params=None, **events_kwargs):
    recorder = RunRecorder(store, spec, notebook, params or {"scale": 3}, run_id, heartbeat_s=0)
    recorder.start()
    for event in chain_events(spec, recorder.run_id, **events_kwargs):
        recorder.record(event)
    recorder.close()
    return recorder.run_id


def count(store, table, *where):
    with store.reading() as c:
        return c.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


# -- schema ---------------------------------------------------------------------------------------


def test_opening_an_empty_database_creates_the_schema_at_head(lineage_url):
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    store = open_store(lineage_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]
    with store.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        assert set(inspect(c).get_table_names()) >= {t.name for t in metadata.sorted_tables}
        # The migration creates exactly what the code's table definitions describe.
        context = MigrationContext.configure(c, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    store.close()


def test_every_migration_in_order_builds_what_a_new_store_is_created_with(lineage_url):
    # A new store is made from schema.py in one step and stamped at head; a store that went
    # through every migration must be exactly that, or upgraded stores would drift.
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext

    from compiler.lineage.store import create_store_engine

    engine = create_store_engine(lineage_url)
    with engine.connect() as c, c.begin():
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = c
        command.upgrade(config, "head")
    with engine.connect() as c:
        context = MigrationContext.configure(c, opts={"compare_type": True})
        assert context.get_current_revision() == HEAD_REVISION
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_a_new_store_is_at_head_for_alembic_too(lineage_url):
    from alembic.migration import MigrationContext

    store = open_store(lineage_url)
    with store.engine.connect() as c:
        assert MigrationContext.configure(c).get_current_revision() == HEAD_REVISION
    store.close()


def test_reopening_a_store_at_head_runs_no_migration_and_keeps_history(
    lineage_url, tmp_path, monkeypatch
):
    spec, notebook = chain_spec(tmp_path / "nb", 3)
    store = open_store(lineage_url)
    run_id = record(store, spec, notebook)
    store.close()

    import alembic.command

    def no_upgrade(*args, **kwargs):
        raise AssertionError("a store at head must not be migrated again")

    monkeypatch.setattr(alembic.command, "upgrade", no_upgrade)
    again = open_store(lineage_url)
    assert show_run(again, run_id)["status"] == "succeeded"
    again.close()


def test_opening_a_store_made_by_an_older_release_upgrades_it_and_keeps_every_run(
    lineage_url, tmp_path
):
    from alembic import command
    from alembic.config import Config

    from compiler.lineage.store import create_store_engine

    old = create_store_engine(lineage_url)  # a store as the first release left it
    with old.connect() as c, c.begin():
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = c
        command.upgrade(config, "0001_initial")
    old.dispose()
    spec, notebook = chain_spec(tmp_path / "nb", 3)
    store = open_store(lineage_url, migrate=False)
    run_id = record(store, spec, notebook)
    # Today's queries read columns the old store lacks: compare the rows it holds instead.
    tables = ("pipelines", "runs", "task_runs", "artifacts", "task_outputs", "task_inputs")

    def rows(connection):
        return {
            t: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {t}")).all()), key=repr)
            for t in tables
        }

    with store.engine.connect() as c:
        before = rows(c)
        columns = {t: [col["name"] for col in inspect(c).get_columns(t)] for t in tables}
    store.close()

    store = open_store(lineage_url)
    with store.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        assert {"schedules", "schedule_runs"} <= set(inspect(c).get_table_names())
        after = {}
        for t in tables:
            names = ", ".join(f'"{name}"' for name in columns[t])  # "user" is a keyword
            found = c.execute(text(f"SELECT {names} FROM {t}")).all()
            after[t] = sorted(map(tuple, found), key=repr)
    assert after == before
    assert show_run(store, run_id)["status"] == "succeeded"
    store.close()


def test_sqlite_store_uses_wal_and_waits_for_locks(tmp_path):
    store = open_store(None, tmp_path / "analysis.ipynb")
    assert store.url == f"sqlite:///{tmp_path / '.kiln' / 'lineage.db'}"
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000
    store.close()


def test_the_url_comes_from_the_environment_when_not_given(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("KILN_LINEAGE_DB", url)
    assert open_store(None, tmp_path / "analysis.ipynb").url == url


# -- recording ------------------------------------------------------------------------------------


def test_a_run_is_recorded_as_its_events_arrive(lineage_url, tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 4)
    store = open_store(lineage_url)
    recorder = RunRecorder(store, spec, notebook, {"scale": 3}, heartbeat_s=0)
    recorder.start()
    events = list(chain_events(spec, recorder.run_id, retry_task="t1"))
    first_done = next(i for i, e in enumerate(events) if e.get("status") == "done")
    for event in events[: first_done + 1]:
        recorder(event)  # queued; the recorder's writer thread writes it within milliseconds
    recorder.flush()

    during = show_run(store, recorder.run_id)
    assert during["status"] == "running"
    assert [t["status"] for t in during["tasks"]] == ["done", "waiting", "waiting", "waiting"]
    assert during["tasks"][0]["cache_key"] == events[1]["cache_key"]

    (notebook.parent / "out.txt").write_text("result\n")  # what the last task writes
    for event in events[first_done + 1 :]:
        recorder(event)
    recorder.close()
    assert recorder.errors == []

    run = show_run(store, recorder.run_id[:8])
    assert run["status"] == "succeeded" and run["ended_at"] is not None
    assert run["parameters"] == {"scale": 3}
    assert run["pipeline"]["name"] == "chain" and run["pipeline"]["version"] == spec["version"]
    assert run["notebook_path"] == str(notebook.resolve())
    assert run["notebook_digest"] == spec["notebook"]["digest"]
    assert run["user"] and run["host"] and run["pid"] == os.getpid()
    assert {"dask", "distributed", "pandas", "numpy"} <= set(run["packages"])
    assert run["python_version"].split()[-1] == sys.version.split()[0]

    tasks = {t["task"]: t for t in run["tasks"]}
    assert [t["status"] for t in run["tasks"]] == ["done"] * 4
    assert tasks["t0"]["resources"] == {"cpu": 1}
    assert tasks["t0"]["worker"] == "tcp://127.0.0.1:4001"
    assert tasks["t0"]["peak_memory"] == 50_000_000
    assert tasks["t1"]["attempts"] == 2
    retry = tasks["t1"]["attempt_log"][0]
    assert retry["error"] == "ConnectionError: flaky"
    assert retry["retry"] == "retried after 0.5 s (retry 1)"
    assert retry["cell_index"] == 2
    assert tasks["t1"]["attempt_log"][1]["status"] == "done"

    x0 = tasks["t0"]["outputs"][0]
    assert x0["name"] == "x0" and x0["type"] == "builtins.int" and x0["summary"] == {"len": 1}
    assert x0["uri"] == f"{notebook.parent.resolve()}/.kiln/artifacts/{x0['digest']}"
    assert tasks["t1"]["inputs"] == [{"name": "x0", "producer": "t0", "digest": x0["digest"]}]

    csv = notebook.parent / "data" / "in.csv"
    assert [(f["path"], f["digest"]) for f in tasks["t0"]["reads"]] == [
        (str(csv.resolve()), hashlib.sha256(csv.read_bytes()).hexdigest())
    ]
    out = notebook.parent / "out.txt"
    assert [(f["path"], f["digest"]) for f in tasks["t3"]["writes"]] == [
        (str(out.resolve()), hashlib.sha256(b"result\n").hexdigest())
    ]
    store.close()


def test_a_failed_task_is_recorded_with_its_cell_and_line(lineage_url, tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 4)
    store = open_store(lineage_url)
    run_id = record(store, spec, notebook, fail_task="t2")
    run = show_run(store, run_id)
    assert run["status"] == "failed"
    tasks = {t["task"]: t for t in run["tasks"]}
    assert [t["status"] for t in run["tasks"]] == ["done", "done", "failed", "upstream_failed"]
    error = tasks["t2"]["error"]
    assert error["cell_index"] == 3 and error["cell_id"] == "cell-2" and error["line"] == 1
    assert error["message"] == "ZeroDivisionError: division by zero"
    assert error["traceback"] == ["ZeroDivisionError: division by zero\n"]
    store.close()


def test_finish_writes_the_run_result_over_lost_events(lineage_url, tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 2)
    store = open_store(lineage_url)
    recorder = RunRecorder(store, spec, notebook, None, heartbeat_s=0)
    recorder.start()
    done = [e for e in chain_events(spec, recorder.run_id) if e.get("status") == "done"]
    result = {
        "run_id": recorder.run_id,
        "status": "succeeded",
        "parameters": {"scale": 2},
        "output_notebook": str(tmp_path / "out.ipynb"),
        "tasks": [
            {
                "name": e["task"],
                "status": "done",
                "cached": False,
                "attempts": 1,
                "duration": 0.5,
                "peak_memory": 1,
                "worker": "w",
                "cache_key": e["cache_key"],
                "outputs": e["outputs"],
                "error": None,
                "attempt_log": [{"attempt": 1, "status": "done"}],
            }
            for e in done
        ],
    }
    recorder.finish(result)  # not a single task event arrived
    recorder.close()
    run = show_run(store, recorder.run_id)
    assert run["status"] == "succeeded" and run["output_notebook"] == str(tmp_path / "out.ipynb")
    assert [(t["status"], t["duration"]) for t in run["tasks"]] == [("done", 0.5)] * 2
    assert run["tasks"][0]["outputs"][0]["digest"] == done[0]["outputs"]["x0"]["digest"]
    store.close()


def test_a_recorder_never_raises_into_the_run(tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 2)
    store = open_store(f"sqlite:///{tmp_path / 'lineage.db'}")
    recorder = RunRecorder(store, spec, notebook, None, heartbeat_s=0)
    with store.engine.begin() as c:
        c.execute(text("DROP TABLE task_inputs"))
    for event in chain_events(spec, recorder.run_id):
        recorder(event)  # the database is broken: logged and counted, never raised
    recorder.close()
    assert recorder.errors and "task_inputs" in recorder.errors[0]


# -- many writers, dead writers -------------------------------------------------------------------


def _writer(url: str, folder: Path, run_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.lineage_fixtures", url, str(folder), run_id, *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_eight_runs_writing_at_once_lose_no_row(lineage_url, tmp_path):
    n_runs, n_tasks = 8, 30
    folder = tmp_path / "nb"
    run_ids = [f"{i:x}{uuid.uuid4().hex[:15]}" for i in range(n_runs)]
    # Eight processes, started together on a database none of them has created yet.
    writers = [_writer(lineage_url, folder, run_id, "--tasks", str(n_tasks)) for run_id in run_ids]
    for writer in writers:
        _, err = writer.communicate(timeout=150)
        assert writer.returncode == 0, err

    store = open_store(lineage_url)
    assert count(store, pipelines) == 1  # one notebook, one spec: shared by all eight runs
    assert count(store, runs, runs.c.status == "succeeded") == n_runs
    assert count(store, task_runs) == n_runs * n_tasks
    assert count(store, task_runs, task_runs.c.status == "done") == n_runs * n_tasks
    assert count(store, task_runs, task_runs.c.attempts == 2) == n_runs  # t1 retried once
    assert count(store, task_outputs) == n_runs * (n_tasks - 1)
    assert count(store, task_inputs) == n_runs * (n_tasks - 1)
    assert count(store, task_inputs, task_inputs.c.artifact_digest.is_(None)) == 0
    assert count(store, artifacts) == n_tasks - 1  # the same values: one artifact each
    assert count(store, dataset_accesses) == n_runs * 2  # t0 reads in.csv, the last writes
    store.close()


def test_a_run_killed_with_sigkill_is_shown_interrupted(lineage_url, tmp_path):
    run_id = "dead" + uuid.uuid4().hex[:12]
    writer = _writer(lineage_url, tmp_path / "nb", run_id, "--tasks", "6", "--hang-after", "10")
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready", (
        writer.stderr.read() if writer.stderr else ""
    )
    store = open_store(lineage_url)
    assert show_run(store, run_id)["status"] == "running"

    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert show_run(store, run_id)["status"] == "running"  # nobody has looked yet

    # Starting a new run looks for runs whose process is gone.
    spec, notebook = chain_spec(tmp_path / "nb", 6)
    record(store, spec, notebook)
    run = show_run(store, run_id)
    assert run["status"] == "interrupted"
    assert f"pid {writer.pid}" in run["error"]
    statuses = [t["status"] for t in run["tasks"]]
    assert "running" not in statuses and "waiting" not in statuses
    assert "interrupted" in statuses and statuses[0] == "done"
    store.close()


def test_runs_elsewhere_are_interrupted_when_their_heartbeat_stops(lineage_url, tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 2)
    store = open_store(lineage_url)
    silent, beating = (RunRecorder(store, spec, notebook, heartbeat_s=0) for _ in range(2))
    silent.start()
    beating.start()
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    with store.writing() as c:
        c.execute(update(runs).values(host="another-host"))
        c.execute(update(runs).where(runs.c.id == silent.run_id).values(heartbeat_at=long_ago))
    assert mark_interrupted(store) == [silent.run_id]
    assert show_run(store, silent.run_id)["status"] == "interrupted"
    assert show_run(store, beating.run_id)["status"] == "running"
    store.close()


def test_heartbeat_keeps_a_long_run_alive(tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 2)
    store = open_store(f"sqlite:///{tmp_path / 'lineage.db'}")
    recorder = RunRecorder(store, spec, notebook, heartbeat_s=0.05)
    recorder.start()
    first = show_run(store, recorder.run_id)["heartbeat_at"]
    threading.Event().wait(1.2)
    assert show_run(store, recorder.run_id)["heartbeat_at"] > first
    recorder.close()


# -- queries --------------------------------------------------------------------------------------


def test_run_ids_may_be_abbreviated_like_git(lineage_url, tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 2)
    store = open_store(lineage_url)
    record(store, spec, notebook, run_id="abc1" + "0" * 12)
    record(store, spec, notebook, run_id="abc2" + "0" * 12)
    assert show_run(store, "abc1")["run_id"] == "abc1" + "0" * 12
    with pytest.raises(AmbiguousTarget, match="abc1.*abc2"):
        show_run(store, "abc")
    with pytest.raises(LineageNotFound):
        show_run(store, "fff")
    store.close()


def test_lineage_of_an_artifact_walks_back_to_cells_parameters_and_files(lineage_url, tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 4)
    store = open_store(lineage_url)
    run_id = record(store, spec, notebook)
    x2 = show_run(store, run_id)["tasks"][2]["outputs"][0]["digest"]

    found = lineage(store, x2[:10])
    assert found["target"]["kind"] == "artifact" and found["target"]["digest"] == x2
    assert found["target"]["task"] == "t2" and found["target"]["run_id"] == run_id
    assert found["parameters"] == {"scale": 3}
    csv = (notebook.parent / "data" / "in.csv").resolve()
    assert [f["path"] for f in found["input_files"]] == [str(csv)]
    chain, node = [], found["tree"]
    while node:
        chain.append((node["task"], [c["id"] for c in node["cells"]], node["version"]))
        node = node["inputs"][0] if node["inputs"] else None
    assert chain == [(f"t{i}", [f"cell-{i}"], spec["tasks"][i]["version"]) for i in (2, 1, 0)]
    assert found["tree"]["inputs"][0]["via"] == [
        {"name": "x1", "digest": found["tree"]["inputs"][0]["outputs"][0]["digest"]}
    ]

    by_task = lineage(store, f"t1@{run_id[:6]}")
    assert by_task["target"] == {"kind": "task_run", "task": "t1", "run_id": run_id}
    with pytest.raises(LineageNotFound):
        lineage(store, f"nope@{run_id}")
    with pytest.raises(LineageNotFound):
        lineage(store, "not-a-file.txt")
    store.close()


def test_diff_names_the_edited_task_the_changed_parameter_and_the_outputs(lineage_url, tmp_path):
    spec, notebook = chain_spec(tmp_path / "nb", 4)
    store = open_store(lineage_url)
    before = record(store, spec, notebook, params={"scale": 3})
    edited = json.loads(json.dumps(spec))
    edited["version"] = "e" * 16
    edited["tasks"][1]["code"][0]["source"] = "x1 = x0 + 100"
    for task in edited["tasks"][1:]:  # a task's version covers its upstream versions
        task["version"] = hashlib.sha256(task["name"].encode()).hexdigest()[:16]
    after = record(store, edited, notebook, params={"scale": 4}, salt="edited")

    diff = diff_runs(store, before, after)
    assert diff["code_changed"] == ["t1"]
    assert diff["upstream_changed"] == ["t2", "t3"]
    assert diff["parameters"] == [{"name": "scale", "a": 3, "b": 4}]
    assert diff["input_files"] == []
    assert [(o["task"], o["output"]) for o in diff["outputs"]] == [
        ("t0", "x0"),
        ("t1", "x1"),
        ("t2", "x2"),
    ]
    assert diff_runs(store, before, before)["outputs"] == []
    store.close()


# -- OpenLineage ----------------------------------------------------------------------------------


def _check_openlineage(events, run_id):
    for event in events:
        assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/")
        assert event["producer"].startswith("https://")
        uuid.UUID(event["run"]["runId"])
        assert event["job"]["namespace"] == "kiln"
        dt.datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
        for facet in event["run"]["facets"].values():
            assert facet["_producer"] and facet["_schemaURL"]
    kinds = [(e["job"]["name"], e["eventType"]) for e in events]
    assert kinds[0] == ("chain", "START")
    assert kinds[-1] == ("chain", "FAIL")
    assert ("chain.t0", "START") in kinds and ("chain.t0", "COMPLETE") in kinds
    assert kinds.count(("chain.t1", "START")) == 1  # a retry is the same OpenLineage run
    assert ("chain.t2", "FAIL") in kinds and ("chain.t3", "ABORT") in kinds
    t0_done = next(
        e for e in events if e["job"]["name"] == "chain.t0" and e["eventType"] == "COMPLETE"
    )
    assert [d["name"] for d in t0_done["inputs"]][0].endswith("/data/in.csv")
    assert t0_done["outputs"][0]["name"].endswith(
        "/.kiln/artifacts/" + t0_done["outputs"][0]["name"][-64:]
    )
    assert t0_done["run"]["facets"]["parent"]["run"]["runId"] == events[0]["run"]["runId"]
    failed = next(e for e in events if e["eventType"] == "FAIL" and e["job"]["name"] == "chain.t2")
    assert "ZeroDivisionError" in failed["run"]["facets"]["errorMessage"]["message"]
    assert events[0]["run"]["facets"]["kiln"]["runId"] == run_id


def test_openlineage_events_go_to_a_file(tmp_path, monkeypatch):
    target = tmp_path / "ol" / "events.jsonl"
    monkeypatch.setenv("KILN_OPENLINEAGE_FILE", str(target))
    spec, notebook = chain_spec(tmp_path / "nb", 4)
    store = open_store(f"sqlite:///{tmp_path / 'lineage.db'}")
    run_id = record(store, spec, notebook, retry_task="t1", fail_task="t2")
    events = [json.loads(line) for line in target.read_text().splitlines()]
    _check_openlineage(events, run_id)


def test_openlineage_events_go_to_an_http_endpoint(tmp_path):
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec, notebook = chain_spec(tmp_path / "nb", 4)
        store = open_store(f"sqlite:///{tmp_path / 'lineage.db'}")
        emitter = OpenLineageEmitter(url=f"http://127.0.0.1:{server.server_port}")
        recorder = RunRecorder(store, spec, notebook, None, heartbeat_s=0, openlineage=emitter)
        recorder.start()
        for event in chain_events(spec, recorder.run_id, retry_task="t1", fail_task="t2"):
            recorder.record(event)
        recorder.close()  # waits for the queued posts
    finally:
        server.shutdown()
    assert {path for path, _ in received} == {"/api/v1/lineage"}
    _check_openlineage([event for _, event in received], recorder.run_id)
    assert emitter.failures == 0


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_run_records_the_git_commit_and_whether_the_notebook_was_modified(tmp_path):
    spec, notebook = chain_spec(tmp_path / "repo", 2)
    git = ["git", "-C", str(notebook.parent), "-c", "user.name=k", "-c", "user.email=k@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", notebook.name], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "notebook"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    store = open_store(None, notebook)
    clean = show_run(store, record(store, spec, notebook))
    assert (clean["git_commit"], clean["git_dirty"]) == (head, False)
    notebook.write_text(notebook.read_text().replace("scale = 2", "scale = 3"))
    dirty = show_run(store, record(store, spec, notebook))
    assert (dirty["git_commit"], dirty["git_dirty"]) == (head, True)
    store.close()


def test_a_damaged_lineage_database_warns_but_never_stops_the_run(
    make_pipeline, tmp_path, dask_scheduler_address
):
    spec, notebook = make_pipeline(tasks=[{"name": "one", "source": "x = 1", "outputs": ["x"]}])
    db = tmp_path / "damaged.db"
    open_store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as c:  # a migrated store that later lost a table
        c.execute("DROP TABLE task_outputs")
        c.execute("DROP TABLE task_runs")
    with pytest.warns(UserWarning, match="lineage not recorded"):
        result = run_spec(
            spec,
            notebook_path=notebook,
            scheduler=dask_scheduler_address,
            lineage_db=f"sqlite:///{db}",
        )
    assert result.ok and result.task("one").status == "done"
