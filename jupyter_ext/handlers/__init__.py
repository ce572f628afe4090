"""REST endpoints under /kiln/ on jupyter_server's authenticated API handlers, one module per
resource (base.py holds what they share).

Every handler is a thin adapter: it confines the notebook path to the server root, calls the
compiler (`compiler.compile.api`) or the runtime (through `RunManager`), and answers JSON.
Errors are `{"message": ...}` with a 4xx status (jupyter_server's APIHandler writes them).

    POST /kiln/compile        {"path": P[, "notebook": NB]}   -> {ok, spec, diagnostics}
    POST /kiln/runs           {"path": P[, "params", "scheduler", "store_url", ...]}
                                                              -> 202 {run_id, ...}
    GET  /kiln/runs/<id>[?since=N]                            -> status, tasks, events, links
    GET  /kiln/runs[?path=P]                                  -> {runs: [...]} newest first
    POST /kiln/runs/<id>/cancel                               -> 202 the run (cancelling)
    GET  /kiln/lineage?path=P[&task=T&limit=N&lineage_db=URL] -> {runs: [...]} from the lineage DB
    GET  /kiln/metrics?path=P[&limit=N&lineage_db=URL]        -> {metrics, runs, baseline}
    POST /kiln/outputs        {"path": P, "run_id": R} | {"path": P, "schedule": S, "run": N}
                                                              -> {path}: an openable notebook
    GET  /kiln/outputs/html?path=P[&theme=dark]               -> {path, html}: a read-only view
    POST /kiln/export         {"path": P}                     -> {path, name, version, created}
    GET  /kiln/schedules?path=P                               -> {schedules: [...], scheduler}
    POST /kiln/schedules      {"path": P, "name", "cron", "timezone", "parameters" (typed) or
                               "parameter_texts" (as typed in a form), "engine", "missed"}
                                                              -> 201 the schedule
    POST /kiln/schedules/<name>/(pause|resume)?path=P         -> the schedule (resume: execute)
    DELETE /kiln/schedules/<name>?path=P                      -> 204
    GET  /kiln/schedules/<name>/runs?path=P[&limit=N]         -> {runs: [...]} newest first
    GET|POST /kiln/alerts, DELETE /kiln/alerts/<id>, GET /kiln/cost  (see production.py)

Lineage and schedules live in the notebook's lineage database (`lineage_db`, else
$KILN_LINEAGE_DB, else `.kiln/lineage.db` beside the notebook; see `stores.py`).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from compiler.model.names import SCHEDULE_NAME_PATTERN
from jupyter_ext.handlers.base import KilnHandler
from jupyter_ext.handlers.compile import CompileHandler
from jupyter_ext.handlers.export import ExportHandler
from jupyter_ext.handlers.lineage import LineageHandler, OutputHtmlHandler, OutputsHandler
from jupyter_ext.handlers.metrics import MetricsHandler
from jupyter_ext.handlers.production import production_routes
from jupyter_ext.handlers.runs import RunCancelHandler, RunHandler, RunsHandler
from jupyter_ext.handlers.schedules import (
    ScheduleHandler,
    SchedulePauseHandler,
    ScheduleResumeHandler,
    ScheduleRunsHandler,
    SchedulesHandler,
)
from jupyter_ext.runs import RunManager
from jupyter_ext.scheduling import SchedulerService
from jupyter_ext.stores import LineageStores


def setup_handlers(server_app: Any) -> None:
    web_app = server_app.web_app
    root_dir = server_app.contents_manager.root_dir
    web_app.settings.setdefault("kiln_run_manager", RunManager(root_dir))
    stores = web_app.settings.setdefault("kiln_stores", LineageStores())
    web_app.settings.setdefault("kiln_scheduler", SchedulerService(stores, enabled=False))
    base = url_path_join(web_app.settings["base_url"], "kiln")
    schedule = url_path_join(base, "schedules", f"({SCHEDULE_NAME_PATTERN})")
    routes: list[tuple[str, type[KilnHandler]]] = [
        (url_path_join(base, "compile"), CompileHandler),
        (url_path_join(base, "runs"), RunsHandler),
        (url_path_join(base, "runs", r"([0-9a-f]{1,64})"), RunHandler),
        (url_path_join(base, "runs", r"([0-9a-f]{1,64})", "cancel"), RunCancelHandler),
        (url_path_join(base, "lineage"), LineageHandler),
        (url_path_join(base, "outputs"), OutputsHandler),
        (url_path_join(base, "outputs", "html"), OutputHtmlHandler),
        (url_path_join(base, "export"), ExportHandler),
        (url_path_join(base, "schedules"), SchedulesHandler),
        (schedule, ScheduleHandler),
        (url_path_join(schedule, "pause"), SchedulePauseHandler),
        (url_path_join(schedule, "resume"), ScheduleResumeHandler),
        (url_path_join(schedule, "runs"), ScheduleRunsHandler),
        (url_path_join(base, "metrics"), MetricsHandler),
    ]
    routes += production_routes(base)
    web_app.add_handlers(".*$", routes)
