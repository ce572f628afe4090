"""Production: owners, alerts delivered to real receivers on loopback (an aiosmtpd SMTP server
and an HTTP server that record what they got), costs and budgets, promotion and rollback.
Runs go through `kiln` on the shared real Dask cluster, into real SQLite lineage stores."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest
from sqlalchemy import insert, select, text

from compiler.cli.main import main
from compiler.lineage.schema import alert_deliveries, promotions, runs
from compiler.lineage.store import MIGRATIONS_DIR, create_store_engine, open_store
from compiler.ops.promotion import history, promote, rollback
from compiler.schedule.scheduler import (
    ScheduleError,
    Scheduler,
    add_schedule,
    get_schedule,
    run_job,
)
from tests.nbutil import make_notebook

pytestmark = pytest.mark.timeout(300)

T0 = dt.datetime(2026, 3, 2, 5, 30, tzinfo=dt.UTC)


# -- receivers --------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            {"to": list(envelope.rcpt_tos), "message": message_from_bytes(envelope.content)}
        )
        return "250 OK"

    def texts(self) -> list[str]:
        out = []
        for item in self.messages:
            message = item["message"]
            part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
            out.append(f"{message['Subject']}\n{part.get_payload(decode=True).decode()}")
        return out


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    monkeypatch.setenv(
        "KILN_SMTP_URL",
        f"mailto://127.0.0.1:{controller.port}?from=kiln@example.com&mode=insecure",
    )
    yield inbox
    controller.stop()


class Hooks:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                inbox.posts.append({"path": self.path, "json": json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/kiln"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [p["json"]["text"] for p in self.posts]


@pytest.fixture
def webhook() -> Iterator[Hooks]:
    hooks = Hooks()
    yield hooks
    hooks.server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kiln(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


TRAIN_FAILS = [
    ("rows = 50", ["parameters"]),
    ("data = list(range(rows))", ["task:load"]),
    ("weights = {}\nmodel = sum(data) * weights['scale']", ["task:train"]),
]
TRAIN_FIXED = [
    TRAIN_FAILS[0],
    TRAIN_FAILS[1],
    ("scale = 2\nmodel = sum(data) / scale", ["task:train"]),
]


# -- owners -----------------------------------------------------------------------------------


def test_the_owner_is_written_into_the_notebook_and_recorded_with_every_run(
    tmp_path, capsys, dask_scheduler_address
):
    notebook = make_notebook(tmp_path / "report.ipynb", TRAIN_FIXED)
    code, out, _ = kiln(capsys, "owner", "set", notebook, "Ana Lima", "--team", "analytics")
    assert code == 0 and "owner Ana Lima (team analytics)" in out
    saved = nbformat.read(notebook, as_version=4)
    assert saved.metadata["kiln"] == {"owner": "Ana Lima", "team": "analytics"}
    assert [c.source for c in saved.cells] == [c[0] for c in TRAIN_FIXED]  # nothing else moved
    assert not list(tmp_path.glob(".report.ipynb.*"))  # no temporary file left behind

    code, _, err = kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)
    assert code == 0, err
    code, out, _ = kiln(capsys, "runs", notebook)
    assert "Ana Lima" in out.splitlines()[2]
    run_id = out.splitlines()[2].split()[0]
    code, out, _ = kiln(capsys, "show", run_id, "--lineage-db", _url(notebook))
    assert "owner       Ana Lima  team analytics" in out
    with open_store(None, notebook) as store, store.reading() as c:
        row = c.execute(text("SELECT owner, team FROM pipelines")).one()
        assert tuple(row) == ("Ana Lima", "analytics")
        output = c.execute(select(runs.c.output_notebook).where(runs.c.id == run_id)).scalar()
    assert nbformat.read(output, as_version=4).metadata["kiln"]["owner"] == "Ana Lima"


def test_a_schedule_without_an_owner_or_a_route_is_refused_with_the_way_to_add_one(
    tmp_path, capsys
):
    notebook = make_notebook(tmp_path / "report.ipynb", TRAIN_FIXED)
    code, _, err = kiln(capsys, "schedule", "add", notebook, "--cron", "0 6 * * *")
    assert code == 2
    assert "no owner and no alert route" in err
    assert "kiln owner set report.ipynb NAME" in err and "kiln alert add report.ipynb" in err
    assert "Traceback" not in err
    # An alert route is enough: someone hears about it.
    code, _, err = kiln(capsys, "alert", "add", notebook, "--email", "oncall@example.com")
    assert code == 0, err
    code, out, err = kiln(capsys, "schedule", "add", notebook, "--cron", "0 6 * * *")
    assert code == 0, err


# -- alerts -----------------------------------------------------------------------------------


def test_a_failing_run_then_its_recovery_each_deliver_exactly_one_alert_per_route(
    tmp_path, capsys, smtp, webhook, dask_scheduler_address
):
    notebook = make_notebook(tmp_path / "report.ipynb", TRAIN_FAILS, owner="Ana Lima")
    assert kiln(capsys, "alert", "add", notebook, "--email", "ana@example.com")[0] == 0
    code, out, _ = kiln(capsys, "alert", "add", notebook, "--webhook", webhook.url)
    assert code == 0 and "failed, check, drift, late, recovered" in out

    code, _, err = kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)
    assert code == 1  # the run's own failure: alerts change nothing about it
    assert len(smtp.messages) == 1 and len(webhook.posts) == 1
    assert smtp.messages[0]["to"] == ["ana@example.com"]
    for message in (smtp.texts()[0], webhook.texts()[0]):
        assert "report.ipynb failed in task train" in message
        assert "Owner: Ana Lima" in message
        assert "Cell: cell 2 (id c2), line 2" in message
        assert "Error: KeyError: 'scale'" in message
        assert "Output notebook: file://" in message and "/.kiln/runs/" in message

    # The same failure again within the hour: recorded, not sent again.
    assert kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)[0] == 1
    assert len(smtp.messages) == 1 and len(webhook.posts) == 1

    make_notebook(notebook, TRAIN_FIXED, owner="Ana Lima")
    assert kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)[0] == 0
    assert len(smtp.messages) == 2 and len(webhook.posts) == 2
    for message in (smtp.texts()[1], webhook.texts()[1]):
        assert "report.ipynb recovered" in message
        assert "After: 2 failed run(s)" in message and "Owner: Ana Lima" in message
    # A further success is no news.
    assert kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)[0] == 0
    assert len(smtp.messages) == 2 and len(webhook.posts) == 2

    with open_store(None, notebook) as store, store.reading() as c:
        statuses = sorted(r.status for r in c.execute(select(alert_deliveries.c.status)))
    assert statuses == ["sent"] * 4 + ["suppressed"] * 2


def test_an_unreachable_route_is_logged_and_never_fails_the_run(
    tmp_path, capsys, caplog, dask_scheduler_address
):
    notebook = make_notebook(tmp_path / "report.ipynb", TRAIN_FAILS, owner="Ana Lima")
    dead = f"http://127.0.0.1:{_free_port()}/nobody-listens"
    assert kiln(capsys, "alert", "add", notebook, "--webhook", dead)[0] == 0
    code, out, err = kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)
    assert code == 1 and "KeyError: 'scale'" in err  # failed because train failed
    assert "nobody-listens" not in err
    assert "alert failed through route 1" in caplog.text
    with open_store(None, notebook) as store, store.reading() as c:
        row = c.execute(select(alert_deliveries)).one()
        assert row.status == "failed" and row.error
        assert c.execute(select(runs.c.status)).scalar() == "failed"
    code, out, _ = kiln(capsys, "alert", "test", notebook)
    assert code == 1 and "FAILED" in out


def test_secrets_stay_in_the_environment(tmp_path, capsys, monkeypatch, webhook):
    notebook = make_notebook(tmp_path / "report.ipynb", TRAIN_FIXED, owner="Ana Lima")
    code, _, err = kiln(
        capsys, "alert", "add", notebook, "--apprise", "mailtos://kiln:hunter2@smtp.example.com"
    )
    assert code == 2 and "${NAME}" in err and "hunter2" not in err
    monkeypatch.setenv("TEAM_HOOK", webhook.url)
    assert kiln(capsys, "alert", "add", notebook, "--webhook", "${TEAM_HOOK}")[0] == 0
    code, out, _ = kiln(capsys, "alert", "test", notebook)
    assert code == 0 and "sent" in out
    assert "test alert for report.ipynb" in webhook.texts()[0]
    code, out, _ = kiln(capsys, "alert", "list", notebook, "--json")
    assert json.loads(out)[0]["target"] == "${TEAM_HOOK}"
    db = (tmp_path / ".kiln" / "lineage.db").read_bytes()
    assert webhook.url.encode() not in db


def test_a_schedule_whose_scheduler_was_down_past_the_grace_period_alerts_once_as_late(
    tmp_path, webhook, smtp
):
    notebook = make_notebook(tmp_path / "report.ipynb", TRAIN_FIXED, owner="Ana Lima")
    with open_store(None, notebook) as store:
        add_schedule(store, "hourly", notebook, "0 * * * *", now=T0, grace_s=600)
        from compiler.lineage.alerts import add_route

        add_route(store, kind="webhook", target=webhook.url, schedule="hourly", events="late")
        add_route(store, kind="email", target="ana@example.com", notebook=notebook)
        fired: list[dt.datetime] = []

        def job(schedule: Any, due: dt.datetime) -> dict[str, Any]:
            fired.append(due)  # the alert is what is tested; the run itself is not needed
            return {"status": "succeeded"}

        on_time = Scheduler(store, job=job)
        on_time.tick(T0 + dt.timedelta(minutes=30, seconds=5))  # 06:00:05, in time
        on_time.stop()
        assert fired and not webhook.posts and not smtp.messages

        # The scheduler is stopped from 06:30 to 07:45: 07:00 passes with no run.
        late = Scheduler(store, job=job)
        late.tick(T0 + dt.timedelta(hours=2, minutes=15))
        late.tick(T0 + dt.timedelta(hours=2, minutes=15, seconds=1))
        late.stop()
    assert len(webhook.posts) == 1 and len(smtp.messages) == 1
    for message in (webhook.texts()[0], smtp.texts()[0]):
        assert "schedule hourly is late: no run for 2026-03-02 07:00 UTC" in message
        assert "Owner: Ana Lima" in message and "grace period" in message
    assert len(fired) == 2  # and the missed run was caught up after the alert


def test_a_failed_check_raised_by_the_metrics_hook_alerts_once_with_task_cell_and_link(
    tmp_path, capsys, webhook, dask_scheduler_address
):
    # Issue 14's check verdicts call raise_alert; this is that call, on a real recorded run.
    from compiler.lineage.alerts import raise_alert

    notebook = make_notebook(tmp_path / "report.ipynb", TRAIN_FIXED, owner="Ana Lima")
    assert kiln(capsys, "alert", "add", notebook, "--webhook", webhook.url, "--on", "check")[0] == 0
    assert kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)[0] == 0
    assert webhook.posts == []  # a success is no news
    with open_store(None, notebook) as store:
        run_id = store.list_runs(notebook)[0]["run_id"]
        for _ in range(2):  # a re-evaluated verdict does not alert twice
            raise_alert(
                store, "check", run_id, "model > 100 failed (got 2450)", task="train", cell="cell 2"
            )
        raise_alert(store, "drift", run_id, "column a drifted")  # not an event this route takes
    assert len(webhook.posts) == 1
    text_ = webhook.texts()[0]
    assert "report.ipynb: check: model > 100 failed (got 2450)" in text_
    assert "Owner: Ana Lima" in text_ and "Task: train" in text_ and "Cell: cell 2" in text_
    assert "Output notebook: file://" in text_


# -- cost -------------------------------------------------------------------------------------

BURN = [
    ("import time", ["setup"]),
    (
        "started = time.process_time()\nspins = 0\n"
        "while time.process_time() - started < 1.0:\n    spins += 1",
        ["task:burn"],
    ),
    ("half = spins // 2", ["task:after"]),
]


def test_a_task_burning_one_cpu_second_reports_it_and_a_cached_rerun_reports_the_saving(
    tmp_path, capsys, dask_scheduler_address
):
    notebook = make_notebook(tmp_path / "burn.ipynb", BURN, owner="Ana Lima")
    with open_store(None, notebook) as store:
        from compiler.lineage.billing import set_prices

        set_prices(store, {"cpu_hour": 3600.0})  # 1 money a CPU-second: easy to read
    assert kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)[0] == 0
    assert kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)[0] == 0
    code, out, _ = kiln(capsys, "cost", notebook, "--json")
    report = json.loads(out)
    cached, computed = report["runs"]
    burn = next(t for t in computed["tasks"] if t["task"] == "burn")
    assert 0.8 <= burn["cost"]["cpu_s"] <= 1.2
    assert burn["cost"]["wall_s"] >= burn["cost"]["cpu_s"] * 0.5
    assert burn["cost"]["peak_memory"] > 10_000_000 and burn["cost"]["mem_gb_s"] > 0
    assert burn["cost"]["gpu_s"] == 0 and burn["cost"]["bytes_written"] > 0
    assert 0.8 <= computed["money"]["total"] <= 1.25
    # The rerun computed nothing and says what its cache hits saved: the first run's cost.
    assert cached["cost"] is None
    assert cached["saved"]["cpu_s"] == pytest.approx(computed["cost"]["cpu_s"], abs=0.01)
    code, out, _ = kiln(capsys, "cost", notebook)
    assert re.search(r"burn +cached +cache hit; saved (0\.[89]|1\.[01])\d CPU-s", out), out
    code, out, _ = kiln(capsys, "show", cached["run_id"], "--lineage-db", _url(notebook))
    assert "; the cache saved " in out


def test_a_run_over_its_budget_is_flagged_or_failed(tmp_path, capsys, dask_scheduler_address):
    notebook = make_notebook(tmp_path / "burn.ipynb", BURN, owner="Ana Lima")
    assert kiln(capsys, "budget", "set", notebook, "0.3cpu-s")[0] == 0
    code, _, err = kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)
    assert code == 0, err  # flagged, not failed
    code, out, _ = kiln(capsys, "runs", notebook)
    assert "succeeded (over budget)" in out
    code, out, _ = kiln(capsys, "budget", "set", notebook, "0.3cpu-s fail")
    code, _, err = kiln(
        capsys, "run", notebook, "--scheduler", dask_scheduler_address, "--force", "burn"
    )
    assert code == 1
    latest = json.loads(kiln(capsys, "runs", notebook, "--json")[1])[0]["run_id"]
    code, out, _ = kiln(capsys, "show", latest, "--lineage-db", _url(notebook))
    assert re.search(r"over budget: spent (0\.[89]\d|1\.[01]\d) of 0.3", out), out
    assert "budget 0.3 cpu-s (fail)" in out
    code, _, err = kiln(capsys, "budget", "set", notebook, "lots")
    assert code == 2 and "'120cpu-s'" in err


# -- promotion ----------------------------------------------------------------------------------


def _version_notebook(path: Path, label: str) -> Path:
    return make_notebook(
        path,
        [("label = " + repr(label), ["task:make"]), ("print('running', label)", ["task:report"])],
        owner="Ana Lima",
    )


def _printed(output: str) -> str:
    nb = nbformat.read(output, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_a_promoted_schedule_runs_its_version_until_the_next_promote_and_rolls_back(
    tmp_path, capsys, monkeypatch, dask_scheduler_address
):
    monkeypatch.setenv("KILN_USER", "ana")
    notebook = _version_notebook(tmp_path / "report.ipynb", "v1")
    with open_store(None, notebook) as store:
        add_schedule(store, "nightly", notebook, "0 3 * * *", now=T0)
    code, out, _ = kiln(capsys, "schedule", "list", "--lineage-db", _url(notebook))
    assert "live notebook" in out
    code, out, err = kiln(capsys, "promote", notebook)
    assert code == 0, err and "now runs version" in out
    with open_store(None, notebook) as store:
        v1 = get_schedule(store, "nightly").promoted_version
    _version_notebook(notebook, "v2")  # an exploratory edit, not promoted

    def scheduled_run(when: dt.datetime) -> str:
        with open_store(None, notebook) as store:
            record = run_job(
                get_schedule(store, "nightly"), when, dask_scheduler=dask_scheduler_address
            )
        assert record["status"] == "succeeded", record
        return _printed(record["output_notebook"])

    assert "running v1" in scheduled_run(T0)
    with open_store(None, notebook) as store:
        v2 = promote(store, notebook)[0].version
    assert v2 != v1
    assert "running v2" in scheduled_run(T0 + dt.timedelta(days=1))
    code, out, err = kiln(capsys, "rollback", "nightly", "--lineage-db", _url(notebook))
    assert code == 0, err
    assert f"rolled back to version {v1}" in out
    assert "running v1" in scheduled_run(T0 + dt.timedelta(days=2))
    code, out, _ = kiln(capsys, "schedule", "list", "--lineage-db", _url(notebook))
    assert f"promoted {v1}" in out

    # A bad version that ran and failed, then one never run: the last good one under them is v1
    # (v2 was rolled back from, so it is no longer under the current version).
    _version_notebook(notebook, "v3")
    make_notebook(
        notebook, [("label = 'v3'\nraise RuntimeError('bad release')", ["task:make"])], "Ana Lima"
    )
    with open_store(None, notebook) as store:
        v3 = promote(store, notebook)[0].version
        record = run_job(
            get_schedule(store, "nightly"),
            T0 + dt.timedelta(days=3),
            dask_scheduler=dask_scheduler_address,
        )
        assert record["status"] == "failed" and "RuntimeError: bad release" in record["error"]
        _version_notebook(notebook, "v4")
        v4 = promote(store, notebook)[0].version
        assert rollback(store, "nightly").version == v3  # plain: the one before
        promote(store, notebook)  # v4 again
        back = rollback(store, "nightly", to_last_good=True)
        assert back.version == v1 and back.previous_version == v4
        assert get_schedule(store, "nightly").promoted_version == v1

    with open_store(None, notebook) as store:
        entries = history(store, "nightly")
        assert [(e.action, e.version, e.user) for e in entries] == [
            ("promote", v1, "ana"),
            ("promote", v2, "ana"),
            ("rollback", v1, "ana"),
            ("promote", v3, "ana"),
            ("promote", v4, "ana"),
            ("rollback", v3, "ana"),
            ("promote", v4, "ana"),
            ("rollback", v1, "ana"),
        ]
        with pytest.raises(ValueError, match="no earlier promoted version"):
            rollback(store, "nightly")
        with store.reading() as c:
            assert c.execute(select(promotions.c.at)).first() is not None
            ran = [r.notebook_path for r in c.execute(select(runs.c.notebook_path))]
    assert all("/pipelines/report/" in p for p in ran)  # the bundles ran, never the live notebook
    assert len(ran) == 4


def _url(notebook: Path) -> str:
    return f"sqlite:///{notebook.parent / '.kiln' / 'lineage.db'}"


def test_schedules_made_before_promotion_existed_are_migrated_to_live_notebook_mode(tmp_path):
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_store_engine(url)
    with engine.connect() as c, c.begin():
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = c
        command.upgrade(config, "0003_schedule_heartbeats")
        from sqlalchemy import MetaData, Table

        old = Table("schedules", MetaData(), autoload_with=c)
        c.execute(
            insert(old).values(
                name="legacy",
                notebook_path=str(tmp_path / "r.ipynb"),
                cron="0 6 * * *",
                timezone="UTC",
                parameters={},
                engine="kiln",
                missed_policy="run_once",
                paused=False,
                created_at=T0,
                next_due_at=T0,
            )
        )
    engine.dispose()
    with open_store(url) as store:
        legacy = get_schedule(store, "legacy")
    assert legacy.mode == "live" and legacy.promoted_version is None


def test_promoting_a_notebook_without_a_schedule_says_how_to_add_one(tmp_path, capsys):
    notebook = _version_notebook(tmp_path / "report.ipynb", "v1")
    code, _, err = kiln(capsys, "promote", notebook)
    assert code == 2 and "no schedule runs report.ipynb: add one first" in err
    with open_store(None, notebook) as store:
        add_schedule(store, "nightly", notebook, "0 3 * * *", now=T0)
    code, _, err = kiln(capsys, "promote", notebook, "--version", "feedbeef")
    assert code == 2 and "no exported bundle version 'feedbeef'" in err
    with pytest.raises(ScheduleError):
        with open_store(None, notebook) as store:
            add_schedule(store, "bad budget", notebook, "0 3 * * *", budget="lots")


SCORED = [
    ("rows = 40", ["parameters"]),
    ("accuracy = min(1.0, rows / 100)", ["task:score"]),
    ("accuracy", ["metrics", "check:accuracy>=0.9"]),
]


def test_a_failed_metrics_check_of_a_real_run_delivers_one_check_alert(
    tmp_path, capsys, webhook, dask_scheduler_address
):
    notebook = make_notebook(tmp_path / "scored.ipynb", SCORED, owner="Ana Lima")
    assert kiln(capsys, "alert", "add", notebook, "--webhook", webhook.url)[0] == 0
    code, _, _ = kiln(capsys, "run", notebook, "--scheduler", dask_scheduler_address)
    assert code == 1  # accuracy 0.4 fails check:accuracy>=0.9
    check_alerts = [t for t in webhook.texts() if "check" in t.split("\n")[0]]
    assert len(check_alerts) == 1, webhook.texts()
    assert "accuracy" in check_alerts[0] and "Owner: Ana Lima" in check_alerts[0]
    # A passing run raises no check alert.
    assert (
        kiln(capsys, "run", notebook, "-p", "rows", "95", "--scheduler", dask_scheduler_address)[0]
        == 0
    )
    assert len([t for t in webhook.texts() if "check" in t.split("\n")[0]]) == 1
