"""POST /kiln/runs, GET /kiln/runs[/<id>], POST /kiln/runs/<id>/cancel: runs started from the UI
(through jupyter_ext.runs.RunManager, which calls compiler.ops.run).

GET /kiln/runs/<id>?since=N&after=V&wait=S is a long poll: with `after` (the `version` of the
reader's last answer) the answer waits until the run changes, settles, or S seconds (at most
MAX_WAIT_S) went by. The UI then hears a task start when it starts; a timer's poll added half
its period on average to every update (0.5 s: 0.25 s, and the 0.5 s target of issue 16 broke).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from jupyter_ext.handlers.base import (
    RUN_OPTIONS,
    KilnHandler,
    check_against_spec,
    compile_errors_answer,
    compile_in_thread,
    query_int,
)
from jupyter_ext.paths import (
    api_path_of,
    confine_lineage_url,
    confine_store_url,
)
from jupyter_ext.runs import RunConflict

MAX_WAIT_S = 30
# A woken poll waits this long before it answers, so a burst of events (a task ending, the next
# ones starting) goes out in one answer instead of one request each.
COALESCE_S = 0.015


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
    _gone = False

    def on_connection_close(self) -> None:
        self._gone = True  # the reader left (a reload, a closed tab) while its poll waited

    @tornado.web.authenticated
    @authorized("read")
    async def get(self, run_id: str) -> None:
        record = self.run_manager.get(run_id)
        if record is None:
            raise tornado.web.HTTPError(404, f"no run {run_id} in this server")
        since = query_int(self, "since", 0, 0, 2**31)
        version = query_int(self, "after", -1, 0, 2**62)
        if version >= 0:
            wait = query_int(self, "wait", MAX_WAIT_S, 0, MAX_WAIT_S)
            if version == record.version and not record.settled:
                await record.changed_since(version, wait)
                await asyncio.sleep(COALESCE_S)
            if self._gone:
                return
        self.finish(json.dumps(record.to_dict(since=since), default=str))


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
