"""/kiln/schedules[/<name>[/pause|/resume|/runs]]: schedules in the notebook's lineage database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized

from jupyter_ext.handlers.base import (
    KilnHandler,
    check_against_spec,
    compile_in_thread,
    optional_str,
    query_int,
)
from jupyter_ext.paths import (
    api_path_of,
)
from jupyter_ext.stores import inside


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
