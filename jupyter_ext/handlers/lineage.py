"""GET /kiln/lineage, POST /kiln/outputs, GET /kiln/outputs/html: recorded runs and their output
notebooks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized

from jupyter_ext.handlers.base import (
    KilnHandler,
    _lineage_errors,
    optional_str,
    query_int,
)
from jupyter_ext.handlers.schedules import schedule_of_notebook
from jupyter_ext.history import task_history
from jupyter_ext.paths import (
    api_path_of,
)
from jupyter_ext.stores import inside, visible_output


class LineageHandler(KilnHandler):
    """The notebook's latest runs from its lineage database; with `task`, that task's record in
    each run (status, version, duration, cache hit, parameters, artifacts, files read/written)."""

    @tornado.web.authenticated
    @authorized("read")
    async def get(self) -> None:
        full = self.notebook_file(self.get_query_argument("path", None))
        task = self.get_query_argument("task", None) or None
        cell_id = self.get_query_argument("cell", None) or None  # the task's first cell
        limit = query_int(self, "limit", 10, 1, 50)
        store = await self.open_notebook_store(full)
        try:
            runs = (
                []
                if store is None
                else await asyncio.to_thread(
                    task_history, store, self.root_dir, full, task, limit, cell_id
                )
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
