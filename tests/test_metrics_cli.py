"""`kiln metrics` as a user types it: a new process over a real SQLite lineage store, read with
the standard library's sqlite3 (no SQLAlchemy import), answering exactly what the SQLAlchemy
path (the Jupyter server's) answers; an older store upgraded as before; a missing or damaged
store named in one line, never a traceback.

The stores are written by the lineage writer's own functions (`record_monitoring`, the run
rows as the recorder inserts them); tests/test_metrics.py covers the same on real runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from compiler.cli.main import QUICK_COMMANDS, build_parser, main
from compiler.lineage.history import metrics_history
from compiler.lineage.metrics import record_monitoring
from compiler.lineage.schema import pipelines, runs
from compiler.lineage.store import HEAD_REVISION, MIGRATIONS_DIR, create_store_engine, open_store
from tests.postgres_fixture import postgres_server, postgres_unavailable

REPO = Path(__file__).resolve().parents[1]
# The metrics cell of the notebook these runs come from reads `f1`, then `scores` (a dict);
# the train task also calls kiln.log_metric("zeta", ...) then ("alpha", ...) in a loop.
DECLARED = ["f1", "scores"]
LISTED = ["f1", "scores.logreg", "scores.forest", "zeta", "alpha"]


def record_runs(folder: Path, count: int, url: str | None = None) -> Path:
    """A notebook and `count` recorded runs of it in folder/.kiln/lineage.db (or at `url`);
    returns the notebook. Each run has metrics, a check and a drift verdict; every third one
    failed."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = folder / "model.ipynb"
    notebook.write_text("{}")
    store = open_store(url, notebook)
    start = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
    with store.writing() as c:
        pipeline = c.execute(
            insert(pipelines).values(
                name="model",
                version="ab" * 8,
                spec_digest="cd" * 32,
                spec={"tasks": [], "metrics": [{"name": n} for n in DECLARED]},
                notebook_path=str(notebook.resolve()),
                created_at=start,
            )
        ).inserted_primary_key[0]
        for i in range(count):
            run_id = f"{i:04d}" + "e" * 12
            c.execute(
                insert(runs).values(
                    id=run_id,
                    pipeline_id=pipeline,
                    status="failed" if i % 3 == 2 else "succeeded",
                    parameters={"C": 10.0**-i, "label": f"run {i}"},
                    started_at=start + dt.timedelta(hours=i),
                    ended_at=start + dt.timedelta(hours=i, minutes=2),
                    notebook_path=str(notebook.resolve()),
                    error="check failed: f1" if i % 3 == 2 else None,
                )
            )
            f1 = 0.9 - 0.1 * i
            record_monitoring(
                c,
                run_id,
                {
                    "tasks": [
                        {
                            "name": "train",
                            # As the worker collects them: logged first, then the cell's names.
                            "metrics": {
                                "zeta": i,
                                "alpha": i % 2 == 0,
                                "f1": f1,
                                "scores.logreg": f1 - 0.05,
                                "scores.forest": f1 + 0.01,
                            },
                        }
                    ],
                    "verdicts": [
                        {
                            "kind": "check",
                            "metric": "f1",
                            "passed": f1 >= 0.75,
                            "value": f1,
                            "threshold": 0.75,
                            "tag": "check:f1>=0.75",
                            "message": f"check {'passed' if f1 >= 0.75 else 'failed'}: f1",
                        },
                        {
                            "kind": "drift",
                            "input": "data/wine.csv",
                            "passed": i == 0,
                            "value": 0.4 * i,
                            "threshold": 0.2,
                            "drift": {"drifted": [] if i == 0 else ["alcohol"]},
                        },
                    ],
                    "flagged": i == 1,
                },
                DECLARED,
            )
    store.close()
    return notebook


def kiln_process(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`kiln ARGV` in a new interpreter, which also says whether SQLAlchemy was imported."""
    script = (
        "import sys\n"
        "from compiler.cli.main import main\n"
        f"code = main({list(argv)!r})\n"
        "print('sqlalchemy imported:', 'sqlalchemy' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("KILN_LINEAGE_DB", None)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True
    )


def test_kiln_metrics_reads_sqlite_without_sqlalchemy_and_answers_as_the_server_does(
    tmp_path: Path,
):
    notebook = record_runs(tmp_path, 5)
    done = kiln_process(tmp_path, "metrics", str(notebook), "-n", "4", "--json")
    assert done.returncode == 0, done.stderr
    assert "sqlalchemy imported: False" in done.stderr
    answer = json.loads(done.stdout)
    # The Jupyter server's path: the same function over SQLAlchemy text() on the same store.
    store = open_store(None, notebook)
    try:
        assert answer == metrics_history(store, notebook, 4)
    finally:
        store.close()
    assert [r["run_id"][:4] for r in answer["runs"]] == ["0001", "0002", "0003", "0004"]
    assert answer["metrics"] == LISTED
    second = answer["runs"][0]
    assert second["metrics"]["alpha"] is False and second["metrics"]["zeta"] == 1
    assert second["flagged"] is True and second["parameters"] == {"C": 0.1, "label": "run 1"}
    assert second["started_at"] == "2026-11-30T09:00:00+00:00"
    drift = next(v for v in second["verdicts"] if v["kind"] == "drift")
    assert drift["drifted_columns"] == ["alcohol"] and drift["passed"] is False
    assert answer["baseline"] == {"run_id": "0004" + "e" * 12, "pinned": False}

    table = kiln_process(tmp_path, "metrics", str(notebook))
    assert table.returncode == 0, table.stderr
    assert "sqlalchemy imported: False" in table.stderr
    header = table.stdout.splitlines()[1].split()
    assert header == ["run", "started", "status", *LISTED, "verdicts"]
    assert "drift data/wine.csv (alcohol)" in table.stdout


def test_the_history_reads_the_same_on_postgresql(tmp_path: Path):
    """The one copy of the SQL text through SQLAlchemy on PostgreSQL, whose driver hands back
    JSON decoded, real booleans and aware times: the same answer as SQLite's."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        url = postgres_server().new_database()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    notebook = record_runs(tmp_path, 4)
    record_runs(tmp_path, 4, url)  # the same runs, the same notebook path
    sqlite, postgres = open_store(None, notebook), open_store(url, notebook)
    try:
        expected = metrics_history(sqlite, notebook, 3)
        assert metrics_history(postgres, notebook, 3) == expected
        assert expected["metrics"] == LISTED and len(expected["runs"]) == 3
    finally:
        sqlite.close()
        postgres.close()


def test_kiln_metrics_upgrades_a_store_an_older_release_made_as_before(tmp_path: Path):
    from alembic import command
    from alembic.config import Config

    notebook = tmp_path / "model.ipynb"
    notebook.write_text("{}")
    db = tmp_path / ".kiln" / "lineage.db"
    old = create_store_engine(f"sqlite:///{db}")  # as the release before metric order left it
    with old.connect() as c, c.begin():
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = c
        command.upgrade(config, "0006_run_metrics")
        c.execute(
            text(
                "INSERT INTO pipelines (name, version, spec_digest, spec, notebook_path, "
                "created_at) VALUES ('model', 'v1', 'd1', '{}', :path, '2026-11-30 08:00:00')"
            ),
            {"path": str(notebook.resolve())},
        )
        c.execute(
            text(
                "INSERT INTO runs (id, pipeline_id, status, parameters, started_at, "
                "notebook_path) VALUES ('0ld0000000000000', 1, 'succeeded', '{}', "
                "'2026-11-30 08:00:00', :path)"
            ),
            {"path": str(notebook.resolve())},
        )
        for name, value in (("recall", 0.7), ("accuracy", 0.8)):
            c.execute(
                text(
                    "INSERT INTO run_metrics (run_id, name, task, value, is_bool) "
                    "VALUES ('0ld0000000000000', :name, 'train', :value, 0)"
                ),
                {"name": name, "value": value},
            )
    old.dispose()

    done = kiln_process(tmp_path, "metrics", str(notebook), "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    answer = json.loads(done.stdout)
    # Recorded before the order was: alphabetical, as that release listed them.
    assert answer["metrics"] == ["accuracy", "recall"]
    assert answer["runs"][0]["metrics"] == {"accuracy": 0.8, "recall": 0.7}
    engine = create_store_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
    engine.dispose()
    # Upgraded once; the next command reads it with sqlite3.
    again = kiln_process(tmp_path, "metrics", str(notebook))
    assert again.returncode == 0 and "sqlalchemy imported: False" in again.stderr


def test_kiln_metrics_without_a_store_or_with_a_damaged_one_says_so_in_one_line(
    tmp_path: Path,
):
    notebook = tmp_path / "model.ipynb"
    notebook.write_text("{}")
    done = kiln_process(tmp_path, "metrics", str(notebook))
    assert done.returncode == 1
    assert "kiln: no lineage store found (.kiln/lineage.db in " in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".kiln").exists()  # looking never creates one

    (tmp_path / ".kiln").mkdir()
    (tmp_path / ".kiln" / "lineage.db").write_text("not a database\n")
    done = kiln_process(tmp_path, "metrics", str(notebook))
    assert done.returncode == 2
    assert "kiln: cannot open lineage database " in done.stderr
    assert "file is not a database" in done.stderr and "Traceback" not in done.stderr

    # A notebook never run, in a store that other notebooks' runs made.
    other = record_runs(tmp_path / "elsewhere", 1).parent
    done = kiln_process(other, "metrics", str(other / "new.ipynb"))
    assert done.returncode == 0 and done.stdout.strip().endswith("new.ipynb: no runs recorded")


@pytest.mark.parametrize("command", sorted(QUICK_COMMANDS))
def test_a_command_parsed_with_its_own_module_only_reads_as_in_the_whole_parser(
    command: str, capsys: pytest.CaptureFixture[str]
):
    def helped(parser_command: str | None) -> str:
        sub = next(a for a in build_parser(parser_command)._actions if a.dest == "command")
        return sub.choices[command].format_help()  # type: ignore[attr-defined]

    assert helped(command) == helped(None)
    # And a mistake reads the same: the quick parser is what `main` uses for it.
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--no-such-option"])
    assert exit_info.value.code == 2
    assert f"kiln {command}" in capsys.readouterr().err
