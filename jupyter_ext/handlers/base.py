"""What every /kiln/ handler shares: authentication, path and URL confinement, JSON bodies,
the compile helper, and one way to answer errors."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler

from compiler.model.hashing import digest
from compiler.model.validation import InvalidValue, check_json_depth
from jupyter_ext.paths import (
    PathRefused,
    confine_lineage_url,
    resolve_api_path,
)
from jupyter_ext.runs import RunManager
from jupyter_ext.scheduling import SchedulerService
from jupyter_ext.stores import LineageStores, is_hidden

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


# Compile results of this server by (path, content): the UI compiles the notebook's content as it
# is edited (POST /kiln/compile), and a run, export or schedule of the saved file finds that
# result here instead of compiling again (a compile is a pure function of the content, the path
# and the compiler's source; see compiler.compile.cache). Only clean compiles are kept, as there.
COMPILED_KEPT = 32
_compiled: OrderedDict[str, Any] = OrderedDict()
_compiled_lock = threading.Lock()


def _content_key(full: Path, notebook: Any) -> str | None:
    """A digest of what compiling reads: the cells without outputs or execution counts (the UI
    posts them so, a saved file has them) and the path. None for content that is not JSON."""
    try:
        data = json.loads(notebook) if isinstance(notebook, str | bytes) else notebook
        cells = [
            {k: v for k, v in cell.items() if k not in ("outputs", "execution_count")}
            if isinstance(cell, dict)
            else cell
            for cell in data.get("cells") or []
        ]
        content = {**data, "cells": cells}
    except (ValueError, AttributeError, TypeError):
        return None
    return digest([str(full), content])


def _compile(full: Path, notebook: Any) -> Any:
    from compiler.compile.api import compile_notebook, compile_notebook_json

    text = None
    if notebook is None:
        try:
            text = full.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return compile_notebook(full)  # its own message for an unreadable file
    key = _content_key(full, text if notebook is None else notebook)
    if key is not None:
        with _compiled_lock:
            if key in _compiled:
                _compiled.move_to_end(key)
                return _compiled[key]
    if notebook is None:
        result = compile_notebook(full, text)
    else:
        result = compile_notebook_json(notebook, full.name, str(full))
    if key is not None and result.ok:
        with _compiled_lock:
            _compiled[key] = result
            while len(_compiled) > COMPILED_KEPT:
                _compiled.popitem(last=False)
    return result


async def compile_in_thread(full: Path, notebook: Any = None) -> Any:
    """CompileResult, or HTTP 400 when the content is not a readable notebook. The same content
    at the same path is compiled once (see `_compiled`)."""
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


def _lineage_errors() -> tuple[type[Exception], ...]:
    from compiler.lineage import LineageStoreError

    return (LineageStoreError,)


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
