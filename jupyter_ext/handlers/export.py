"""POST /kiln/export: a versioned bundle (compiler.ops.export)."""

from __future__ import annotations

import asyncio
import json

import tornado.web
from jupyter_server.auth.decorator import authorized

from jupyter_ext.handlers.base import (
    KilnHandler,
    compile_errors_answer,
    compile_in_thread,
)
from jupyter_ext.paths import (
    api_path_of,
)


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
