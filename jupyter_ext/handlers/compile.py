"""POST /kiln/compile: diagnostics and spec of a saved or unsaved notebook."""

from __future__ import annotations

import json

import tornado.web
from jupyter_server.auth.decorator import authorized

from jupyter_ext.handlers.base import (
    KilnHandler,
    compile_in_thread,
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
