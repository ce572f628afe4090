"""POST /kiln/compile: diagnostics and spec of a saved or unsaved notebook."""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec

import tornado.web
from jupyter_server.auth.decorator import authorized

from compiler.runtime.judge import prefetch_statistics
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
        if result.spec and "scipy.stats" not in sys.modules and find_spec("scipy") is not None:
            # Every DataFrame a task hands on is profiled, and from a notebook's second run on
            # its profile is scored for drift with scipy.stats once the last task ended. The
            # import (1.5 to 4 s on a loaded 2-core machine, where a warm run of
            # binder/demo.ipynb takes 1 s) happens now, in the background, while the user reads
            # the notebook, once per server.
            prefetch_statistics({"profiles": True})
        self.finish(json.dumps(result.to_dict()))
