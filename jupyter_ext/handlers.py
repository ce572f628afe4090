"""REST endpoints under /kiln/ on jupyter_server's authenticated API handlers.

Every handler is a thin adapter: it confines the notebook path to the server root, calls the
compiler (`compiler.api`) or the runtime (through `RunManager`), and answers JSON. Errors are
`{"message": ...}` with a 4xx status (jupyter_server's APIHandler writes them).

    POST /kiln/compile        {"path": P[, "notebook": NB]}   -> {ok, spec, diagnostics}
    POST /kiln/runs           {"path": P[, "params", "scheduler", "store_url", ...]}
                                                              -> 202 {run_id, ...}
    GET  /kiln/runs/<id>[?since=N]                            -> status, tasks, events, links
    GET  /kiln/runs[?path=P]                                  -> {runs: [...]} newest first
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from .paths import PathRefused, api_path_of, resolve_api_path
from .runs import RunConflict, RunManager

# Options of run_pipeline a client may set (from the settings registry or the request).
RUN_OPTIONS = {
    "scheduler": str,
    "store_url": str,
    "lineage_db": str,  # lineage database URL (the runtime records every run there)
    "workers": int,
    "use_cache": bool,
}


class KilnHandler(APIHandler):
    """Shared helpers: JSON body, confined notebook paths."""

    @property
    def root_dir(self) -> Path:
        return Path(self.contents_manager.root_dir).resolve()

    @property
    def run_manager(self) -> RunManager:
        manager: RunManager = self.settings["kiln_run_manager"]
        return manager

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise tornado.web.HTTPError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "request body must be a JSON object")
        return body

    def notebook_file(self, api_path: object, *, must_exist: bool = True) -> Path:
        try:
            full = resolve_api_path(self.root_dir, api_path)
        except PathRefused as exc:
            raise tornado.web.HTTPError(exc.status, exc.message) from exc
        if must_exist and not full.is_file():
            raise tornado.web.HTTPError(404, f"no such notebook: {api_path}")
        return full


def _compile(full: Path, notebook: Any) -> Any:
    from compiler.api import compile_notebook, compile_notebook_json

    if notebook is None:
        return compile_notebook(full)
    return compile_notebook_json(notebook, full.name, str(full))


async def compile_in_thread(full: Path, notebook: Any = None) -> Any:
    """CompileResult, or HTTP 400 when the content is not a readable notebook."""
    from compiler.diagnostics import NotebookLoadError

    try:
        return await asyncio.to_thread(_compile, full, notebook)
    except NotebookLoadError as exc:
        raise tornado.web.HTTPError(400, str(exc)) from exc


class CompileHandler(KilnHandler):
    @tornado.web.authenticated
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


class RunsHandler(KilnHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body()
        full = self.notebook_file(body.get("path"))
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise tornado.web.HTTPError(400, "'params' must be an object of name -> value")
        options = _run_options(body)
        result = await compile_in_thread(full)
        if not result.ok:
            self.set_status(400)
            errors = [d for d in result.diagnostics if d.severity == "error"]
            self.finish(
                json.dumps(
                    {
                        "message": f"the notebook does not compile: {errors[0].render()}"
                        if errors
                        else "the notebook does not compile",
                        "diagnostics": [d.to_dict() for d in result.diagnostics],
                    }
                )
            )
            return
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
    def get(self) -> None:
        path = self.get_query_argument("path", None)
        if path is not None:
            path = api_path_of(self.root_dir, self.notebook_file(path, must_exist=False))
        runs = self.run_manager.list(path)
        self.finish(json.dumps({"runs": [r.summary() for r in runs]}))


class RunHandler(KilnHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        record = self.run_manager.get(run_id)
        if record is None:
            raise tornado.web.HTTPError(404, f"no run {run_id} in this server")
        try:
            since = int(self.get_query_argument("since", "0"))
        except ValueError as exc:
            raise tornado.web.HTTPError(400, "'since' must be an integer") from exc
        self.finish(json.dumps(record.to_dict(since=max(0, since)), default=str))


def setup_handlers(server_app: Any) -> None:
    web_app = server_app.web_app
    root_dir = server_app.contents_manager.root_dir
    web_app.settings.setdefault("kiln_run_manager", RunManager(root_dir))
    base = url_path_join(web_app.settings["base_url"], "kiln")
    # Lineage, export and schedule endpoints join this table as their issues land.
    routes: list[tuple[str, type[KilnHandler]]] = [
        (url_path_join(base, "compile"), CompileHandler),
        (url_path_join(base, "runs"), RunsHandler),
        (url_path_join(base, "runs", r"([0-9a-f]{1,64})"), RunHandler),
    ]
    web_app.add_handlers(".*$", routes)
