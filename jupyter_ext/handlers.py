"""REST endpoints under /kiln/ on jupyter_server's authenticated API handlers.

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

import asyncio
import json
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from compiler.model.names import SCHEDULE_NAME_PATTERN
from compiler.model.validation import InvalidValue, check_json_depth
from jupyter_ext.history import task_history
from jupyter_ext.paths import (
    PathRefused,
    api_path_of,
    confine_lineage_url,
    confine_store_url,
    resolve_api_path,
)
from jupyter_ext.runs import RunConflict, RunManager
from jupyter_ext.scheduling import SchedulerService
from jupyter_ext.stores import LineageStores, inside, is_hidden, visible_output

# Far above any real body (a notebook nests ~15 levels, plus the request's own two).
MAX_BODY_DEPTH = 80

# Options of run_pipeline a client may set (from the settings registry or the request).
RUN_OPTIONS = {
    "scheduler": str,
    "store_url": str,
    "lineage_db": str,  # lineage database URL (the runtime records every run there)
    "workers": int,
    "use_cache": bool,
}


class KilnHandler(APIHandler):
    """Shared helpers: JSON body, confined notebook paths.

    Every endpoint is `@authenticated` (token, XSRF) and `@authorized` on the resource "kiln"
    with the action it amounts to: "read" (compile, runs, lineage), "write" (export, output
    notebooks, pausing or removing schedules) or "execute" (a run, a new or resumed schedule
    runs the notebook's code), so a deployment's Authorizer can, say, let viewers read only.
    """

    auth_resource = "kiln"

    @property
    def root_dir(self) -> Path:
        return Path(self.contents_manager.root_dir).resolve()

    @property
    def run_manager(self) -> RunManager:
        manager: RunManager = self.settings["kiln_run_manager"]
        return manager

    @property
    def stores(self) -> LineageStores:
        stores: LineageStores = self.settings["kiln_stores"]
        return stores

    @property
    def scheduler(self) -> SchedulerService:
        service: SchedulerService = self.settings["kiln_scheduler"]
        return service

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise tornado.web.HTTPError(400, f"request body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise tornado.web.HTTPError(
                400, f"request body is nested more than {MAX_BODY_DEPTH} levels deep"
            ) from exc
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "request body must be a JSON object")
        try:
            check_json_depth(body, MAX_BODY_DEPTH, "request body")
        except InvalidValue as exc:
            raise tornado.web.HTTPError(400, str(exc)) from exc
        return body

    def notebook_file(self, api_path: object, *, must_exist: bool = True) -> Path:
        try:
            full = resolve_api_path(self.root_dir, api_path)
        except PathRefused as exc:
            raise tornado.web.HTTPError(exc.status, exc.message) from exc
        try:
            missing = must_exist and not full.is_file()
        except OSError as exc:  # a name the file system refuses
            raise tornado.web.HTTPError(400, f"'path' cannot be used: {exc.strerror}") from exc
        if missing:
            raise tornado.web.HTTPError(404, f"no such notebook: {api_path}")
        # The Contents API's rule (its is_hidden is async on the default manager).
        if not getattr(self.contents_manager, "allow_hidden", True) and is_hidden(
            self.root_dir, full
        ):
            raise tornado.web.HTTPError(404, f"no such notebook: {api_path}")
        return full

    def confined(self, confine: Any, url: str | None) -> str | None:
        """A database or store URL from the request, kept inside the server root when local."""
        if url is None:
            return None
        try:
            return str(confine(self.root_dir, url))
        except PathRefused as exc:
            raise tornado.web.HTTPError(exc.status, exc.message) from exc

    def notebook_store(self, full: Path, *, create: bool = False, url: str | None = None) -> Any:
        """The notebook's lineage store (None: nothing recorded yet); `url` from the request,
        else the `lineage_db` query argument, else the library's default."""
        url = url or self.get_query_argument("lineage_db", None) or None
        try:
            return self.stores.for_notebook(
                full, self.confined(confine_lineage_url, url), create=create
            )
        except _lineage_errors() as exc:
            raise tornado.web.HTTPError(400, str(exc)) from exc

    async def open_notebook_store(
        self, full: Path, *, create: bool = False, url: str | None = None
    ) -> Any:
        """`notebook_store` off the event loop: opening a store checks its schema (and may create
        or upgrade it), a round trip to the database that must not stall other requests."""
        url = url or self.get_query_argument("lineage_db", None) or None
        return await asyncio.to_thread(self.notebook_store, full, create=create, url=url)


def query_int(handler: KilnHandler, name: str, default: int, low: int, high: int) -> int:
    raw = handler.get_query_argument(name, None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise tornado.web.HTTPError(400, f"'{name}' must be an integer") from exc
    if not low <= value <= high:
        raise tornado.web.HTTPError(400, f"'{name}' must be between {low} and {high}")
    return value


def optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise tornado.web.HTTPError(400, f"'{name}' must be a string")
    return value


def _compile(full: Path, notebook: Any) -> Any:
    from compiler.compile.api import compile_notebook, compile_notebook_json

    if notebook is None:
        return compile_notebook(full)
    return compile_notebook_json(notebook, full.name, str(full))


async def compile_in_thread(full: Path, notebook: Any = None) -> Any:
    """CompileResult, or HTTP 400 when the content is not a readable notebook."""
    from compiler.model.diagnostics import NotebookLoadError

    try:
        return await asyncio.to_thread(_compile, full, notebook)
    except NotebookLoadError as exc:
        raise tornado.web.HTTPError(400, str(exc)) from exc


def compile_errors_answer(handler: KilnHandler, result: Any, doing: str) -> None:
    """A 400 whose message names the first error; the diagnostics go with it."""
    errors = [d for d in result.diagnostics if d.severity == "error"]
    message = (
        f"the notebook does not compile: {errors[0].render()}"
        if errors
        else ("the notebook does not compile")
    )
    handler.set_status(400)
    handler.finish(
        json.dumps(
            {
                "message": f"cannot {doing}: {message}" if doing else message,
                "diagnostics": [d.to_dict() for d in result.diagnostics],
            }
        )
    )


class CompileHandler(KilnHandler):
    @tornado.web.authenticated
    @authorized("read")
    async def post(self) -> None:
        body = self.json_body()
        notebook = body.get("notebook")
        if notebook is not None and not isinstance(notebook, dict | str):
            raise tornado.web.HTTPError(400, "'notebook' must be notebook JSON (an object)")
        full = self.notebook_file(body.get("path"), must_exist=notebook is None)
        result = await compile_in_thread(full, notebook)
        self.finish(json.dumps(result.to_dict()))


def _run_options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, kind in RUN_OPTIONS.items():
        value = body.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise tornado.web.HTTPError(400, f"'{name}' must be a {kind.__name__}")
        options[name] = value
    force = body.get("force")
    if force is not None:
        if not isinstance(force, list) or not all(isinstance(t, str) for t in force):
            raise tornado.web.HTTPError(400, "'force' must be a list of task names")
        options["force"] = tuple(force)
    return options


def check_against_spec(spec: dict[str, Any], params: dict[str, Any], force: Any = ()) -> None:
    """Unknown parameter or task names, and values of another type than the parameter's
    default, are the request's fault (400), before anything runs."""
    from compiler.runtime.parameters import check_parameter_types, resolve_parameters

    try:
        resolve_parameters(spec, params)
        check_parameter_types(spec, params)
    except ValueError as exc:
        raise tornado.web.HTTPError(400, str(exc)) from exc
    tasks = {t["name"] for t in spec["tasks"]}
    unknown = sorted(set(force) - tasks)
    if unknown:
        raise tornado.web.HTTPError(
            400, f"'force' names no task {', '.join(unknown)} (tasks: {', '.join(sorted(tasks))})"
        )


class RunsHandler(KilnHandler):
    @tornado.web.authenticated
    @authorized("execute")
    async def post(self) -> None:
        body = self.json_body()
        full = self.notebook_file(body.get("path"))
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise tornado.web.HTTPError(400, "'params' must be an object of name -> value")
        options = _run_options(body)
        for name, confine in (
            ("lineage_db", confine_lineage_url),
            ("store_url", confine_store_url),
        ):
            if name in options:
                options[name] = self.confined(confine, options[name])
        result = await compile_in_thread(full)
        if not result.ok:
            compile_errors_answer(self, result, "")
            return
        check_against_spec(result.spec, params, options.get("force", ()))
        try:
            record = self.run_manager.start(result.spec, full, parameters=params, options=options)
        except ImportError as exc:
            raise tornado.web.HTTPError(501, f"the Kiln runtime is not available: {exc}") from exc
        except RunConflict as exc:
            raise tornado.web.HTTPError(409, str(exc)) from exc
        self.set_status(202)
        self.set_header("Location", url_path_join(self.base_url, "kiln", "runs", record.run_id))
        self.finish(json.dumps(record.summary()))

    @tornado.web.authenticated
    @authorized("read")
    def get(self) -> None:
        path = self.get_query_argument("path", None)
        if path is not None:
            path = api_path_of(self.root_dir, self.notebook_file(path, must_exist=False))
        runs = self.run_manager.list(path)
        self.finish(json.dumps({"runs": [r.summary() for r in runs]}))


class RunHandler(KilnHandler):
    @tornado.web.authenticated
    @authorized("read")
    def get(self, run_id: str) -> None:
        record = self.run_manager.get(run_id)
        if record is None:
            raise tornado.web.HTTPError(404, f"no run {run_id} in this server")
        try:
            since = int(self.get_query_argument("since", "0"))
        except ValueError as exc:
            raise tornado.web.HTTPError(400, "'since' must be an integer") from exc
        self.finish(json.dumps(record.to_dict(since=max(0, since)), default=str))


class RunCancelHandler(KilnHandler):
    """Cancel a run of this server: its running tasks are cancelled on the cluster and it ends
    `cancelled` (also in the lineage database). 409 once it has ended."""

    @tornado.web.authenticated
    @authorized("execute")
    def post(self, run_id: str) -> None:
        record = self.run_manager.get(run_id)
        if record is None:
            raise tornado.web.HTTPError(404, f"no run {run_id} in this server")
        if not record.request_cancel():
            raise tornado.web.HTTPError(409, f"run {run_id} has already ended ({record.status})")
        self.set_status(202)
        self.finish(json.dumps(record.summary()))


# -- lineage -----------------------------------------------------------------------------------


def _lineage_errors() -> tuple[type[Exception], ...]:
    from compiler.lineage import LineageStoreError

    return (LineageStoreError,)


class LineageHandler(KilnHandler):
    """The notebook's latest runs from its lineage database; with `task`, that task's record in
    each run (status, version, duration, cache hit, parameters, artifacts, files read/written)."""

    @tornado.web.authenticated
    @authorized("read")
    async def get(self) -> None:
        full = self.notebook_file(self.get_query_argument("path", None))
        task = self.get_query_argument("task", None) or None
        limit = query_int(self, "limit", 10, 1, 50)
        store = await self.open_notebook_store(full)
        try:
            runs = (
                []
                if store is None
                else await asyncio.to_thread(task_history, store, self.root_dir, full, task, limit)
            )
        except _lineage_errors() as exc:
            raise tornado.web.HTTPError(400, str(exc)) from exc
        self.finish(
            json.dumps(
                {"path": api_path_of(self.root_dir, full), "task": task, "runs": runs},
                default=str,
            )
        )


class OutputsHandler(KilnHandler):
    """Make a recorded run's output notebook openable: answers its API path, copied out of the
    hidden `.kiln/` folder into `kiln-runs/` beside the notebook when it lives there. The file is
    looked up in the lineage database, never taken from the request."""

    @tornado.web.authenticated
    @authorized("write")
    async def post(self) -> None:
        body = self.json_body()
        full = self.notebook_file(body.get("path"))
        url = optional_str(body, "lineage_db")
        run_id = optional_str(body, "run_id")
        schedule = optional_str(body, "schedule")
        if (run_id is None) == (schedule is None):
            raise tornado.web.HTTPError(400, "name either 'run_id' or 'schedule' and 'run'")
        store = await self.open_notebook_store(full, url=url)
        if store is None:
            raise tornado.web.HTTPError(404, "no run of this notebook was recorded")
        if run_id is not None:
            source, parts = await asyncio.to_thread(self._run_output, store, full, run_id)
        else:
            run = body.get("run")
            if not isinstance(run, int) or isinstance(run, bool):
                raise tornado.web.HTTPError(400, "'run' must be a schedule run's id (an integer)")
            source, parts = await asyncio.to_thread(
                self._schedule_output, store, full, str(schedule), run
            )
        target = visible_output(self.root_dir, full, source, *parts)
        self.finish(json.dumps({"path": api_path_of(self.root_dir, target)}))

    def _run_output(self, store: Any, full: Path, run_id: str) -> tuple[Path, list[str]]:
        from compiler.lineage import AmbiguousTarget, LineageNotFound, show_run

        try:
            run = show_run(store, run_id)
        except (LineageNotFound, AmbiguousTarget) as exc:
            raise tornado.web.HTTPError(404, str(exc)) from exc
        if run["notebook_path"] != str(full):
            raise tornado.web.HTTPError(404, f"run {run_id} is not a run of this notebook")
        source = inside(self.root_dir, run["output_notebook"])
        if source is None:
            raise tornado.web.HTTPError(404, f"run {run_id} has no output notebook here")
        return source, [f"{run['run_id']}.ipynb"]

    def _schedule_output(
        self, store: Any, full: Path, name: str, run: int
    ) -> tuple[Path, list[str]]:
        schedule_of_notebook(store, full, name)
        from compiler.schedule.scheduler import schedule_run_rows

        rows = [r for r in schedule_run_rows(store, name, limit=1000) if r["id"] == run]
        source = inside(self.root_dir, rows[0]["output_notebook"]) if rows else None
        if source is None:
            raise tornado.web.HTTPError(404, f"run {run} of schedule {name!r} has no output")
        return source, ["schedules", name, source.name]


class OutputHtmlHandler(KilnHandler):
    """A notebook (a run's output notebook) rendered as static HTML by nbconvert, for the
    read-only viewer: no kernel starts, nothing can be edited or saved, and the page shows it
    in a sandboxed frame (its scripts do not run)."""

    @tornado.web.authenticated
    @authorized("read")
    async def get(self) -> None:
        full = self.notebook_file(self.get_query_argument("path", None))
        if full.suffix != ".ipynb":
            raise tornado.web.HTTPError(400, f"not a notebook: {full.name}")
        theme = "dark" if self.get_query_argument("theme", "light") == "dark" else "light"

        def render() -> str:
            import nbformat
            from nbconvert import HTMLExporter

            notebook = nbformat.read(full, as_version=4)
            html, _resources = HTMLExporter(template_name="lab", theme=theme).from_notebook_node(
                notebook
            )
            return str(html)

        try:
            html = await asyncio.to_thread(render)
        except (ValueError, OSError) as exc:  # nbformat's NotJSONError is a ValueError
            raise tornado.web.HTTPError(400, f"cannot read {full.name}: {exc}") from exc
        self.finish(json.dumps({"path": api_path_of(self.root_dir, full), "html": html}))


# -- export ------------------------------------------------------------------------------------


class ExportHandler(KilnHandler):
    """Export the saved notebook as `pipelines/NAME/VERSION/` beside it (once per version)."""

    @tornado.web.authenticated
    @authorized("write")
    async def post(self) -> None:
        from compiler.ops.export import export_bundle

        full = self.notebook_file(self.json_body().get("path"))
        result = await compile_in_thread(full)
        if not result.ok:
            compile_errors_answer(self, result, "export")
            return
        exported = await asyncio.to_thread(export_bundle, result, full)
        answer = exported.to_dict()
        answer["path"] = api_path_of(self.root_dir, exported.path)
        answer["files"] = sorted(p.name for p in exported.path.iterdir())
        self.set_status(201 if exported.created else 200)
        self.finish(json.dumps(answer))


# -- schedules ---------------------------------------------------------------------------------


def schedule_of_notebook(store: Any, full: Path, name: str) -> Any:
    """The schedule `name` of this notebook, or 404 (a schedule of another notebook sharing the
    database is not this notebook's to change)."""
    from compiler.schedule.scheduler import ScheduleError, get_schedule

    try:
        schedule = get_schedule(store, name)
    except ScheduleError as exc:
        raise tornado.web.HTTPError(404, str(exc)) from exc
    if schedule.notebook != str(full):
        raise tornado.web.HTTPError(404, f"no schedule named {name!r} for this notebook")
    return schedule


def schedule_runs_view(root: Path, store: Any, name: str, limit: int) -> list[dict[str, Any]]:
    from compiler.schedule.scheduler import schedule_run_rows

    keep = ("id", "due_at", "status", "reason", "started_at", "finished_at", "error")
    return [
        {
            **{k: r.get(k) for k in keep},
            "kiln_run_id": r.get("kiln_run_id"),
            "has_output": inside(root, r.get("output_notebook")) is not None,
        }
        for r in schedule_run_rows(store, name, limit=limit)
    ]


class ScheduleBase(KilnHandler):
    def schedule_view(self, store: Any, schedule: Any) -> dict[str, Any]:
        data = schedule.to_dict()
        data["notebook"] = api_path_of(self.root_dir, schedule.notebook)
        data["last_runs"] = schedule_runs_view(self.root_dir, store, schedule.name, 5)
        running = any(r["status"] == "running" for r in data["last_runs"])
        data["state"] = "paused" if schedule.paused else ("running" if running else "active")
        return data

    def existing(self, name: str) -> tuple[Path, Any, Any]:
        full = self.notebook_file(self.get_query_argument("path", None))
        store = self.notebook_store(full)
        if store is None:
            raise tornado.web.HTTPError(404, f"no schedule named {name!r} for this notebook")
        return full, store, schedule_of_notebook(store, full, name)

    def scheduler_state(self, store: Any) -> dict[str, Any]:
        return {"enabled": self.scheduler.enabled, "serving": self.scheduler.serves(store)}


class SchedulesHandler(ScheduleBase):
    @tornado.web.authenticated
    @authorized("read")
    async def get(self) -> None:
        from compiler.schedule.scheduler import list_schedules

        full = self.notebook_file(self.get_query_argument("path", None))
        store = await self.open_notebook_store(full)
        schedules: list[dict[str, Any]] = []
        scheduler = {"enabled": self.scheduler.enabled, "serving": False}
        if store is not None:
            self.scheduler.watch(store)

            def view() -> list[dict[str, Any]]:
                return [
                    self.schedule_view(store, s)
                    for s in list_schedules(store)
                    if s.notebook == str(full)
                ]

            schedules = await asyncio.to_thread(view)
            scheduler = self.scheduler_state(store)
        self.finish(json.dumps({"schedules": schedules, "scheduler": scheduler}))

    @tornado.web.authenticated
    @authorized("execute")
    async def post(self) -> None:
        from compiler.runtime.parameters import coerce_parameters
        from compiler.schedule.scheduler import ScheduleError, ScheduleExists, add_schedule

        body = self.json_body()
        full = self.notebook_file(body.get("path"))
        name = optional_str(body, "name") or full.stem
        cron = optional_str(body, "cron")
        if cron is None:
            raise tornado.web.HTTPError(400, "'cron' is required, e.g. '0 6 * * *'")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise tornado.web.HTTPError(400, "'parameters' must be an object of name -> value")
        # Values as typed in a form: read like `kiln schedule add -p` reads them (the default's
        # type, else YAML), by the same library function.
        texts = body.get("parameter_texts") or {}
        if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
            raise tornado.web.HTTPError(400, "'parameter_texts' must be an object of name -> text")
        options = {
            key: value
            for key in ("timezone", "engine", "missed")
            if (value := optional_str(body, key)) is not None
        }
        result = await compile_in_thread(full)
        if texts:
            if not result.ok or result.spec is None:
                raise tornado.web.HTTPError(
                    400, "the notebook has errors: fix them before giving parameter values"
                )
            try:
                parameters = {**parameters, **coerce_parameters(result.spec, texts)}
            except ValueError as exc:
                raise tornado.web.HTTPError(400, str(exc)) from exc
        if result.ok and result.spec is not None:
            check_against_spec(result.spec, parameters)
        store = await self.open_notebook_store(
            full, create=True, url=optional_str(body, "lineage_db")
        )

        def create() -> Any:
            try:
                schedule = add_schedule(store, name, full, cron, parameters=parameters, **options)
            except ScheduleExists as exc:
                raise tornado.web.HTTPError(409, str(exc)) from exc
            except ScheduleError as exc:
                raise tornado.web.HTTPError(400, str(exc)) from exc
            return self.schedule_view(store, schedule)

        view = await asyncio.to_thread(create)
        self.scheduler.watch(store)
        self.set_status(201)
        self.finish(json.dumps({**view, "scheduler": self.scheduler_state(store)}))


class ScheduleHandler(ScheduleBase):
    @tornado.web.authenticated
    @authorized("write")
    async def delete(self, name: str) -> None:
        from compiler.schedule.scheduler import remove_schedule

        _full, store, _schedule = await asyncio.to_thread(self.existing, name)
        await asyncio.to_thread(remove_schedule, store, name)
        self.set_status(204)
        self.finish()


class ScheduleActionHandler(ScheduleBase):
    async def change(self, name: str, paused: bool) -> None:
        from compiler.schedule.scheduler import set_paused

        _full, store, _schedule = await asyncio.to_thread(self.existing, name)

        def change() -> dict[str, Any]:
            return self.schedule_view(store, set_paused(store, name, paused))

        self.finish(json.dumps(await asyncio.to_thread(change)))


class SchedulePauseHandler(ScheduleActionHandler):
    @tornado.web.authenticated
    @authorized("write")
    async def post(self, name: str) -> None:
        await self.change(name, paused=True)


class ScheduleResumeHandler(ScheduleActionHandler):
    """Resuming lets the scheduler run the notebook's code again: `execute`, like creating."""

    @tornado.web.authenticated
    @authorized("execute")
    async def post(self, name: str) -> None:
        await self.change(name, paused=False)


class ScheduleRunsHandler(ScheduleBase):
    @tornado.web.authenticated
    @authorized("read")
    async def get(self, name: str) -> None:
        limit = query_int(self, "limit", 20, 1, 200)
        _full, store, _schedule = await asyncio.to_thread(self.existing, name)
        runs = await asyncio.to_thread(schedule_runs_view, self.root_dir, store, name, limit)
        self.finish(json.dumps({"name": name, "runs": runs}))


def setup_handlers(server_app: Any) -> None:
    # Here, not at the top: jupyter_ext/metrics.py subclasses this module's KilnHandler.
    from jupyter_ext.metrics import MetricsHandler

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
    from .production import production_routes  # it imports this module's KilnHandler

    routes += production_routes(base)
    web_app.add_handlers(".*$", routes)
