"""GET /kiln/metrics?path=P[&limit=N&lineage_db=URL]: the notebook's metrics across its last
runs, with check verdicts, drifted inputs and the baseline, for the Pipeline panel's Metrics
section and the metrics cell's badge. The query is the library's
(`compiler.lineage.metrics.metrics_history`); this module only confines the path and answers.
"""

from __future__ import annotations

import asyncio
import json

import tornado.web
from jupyter_server.auth.decorator import authorized

from jupyter_ext.handlers.base import KilnHandler, _lineage_errors, query_int
from jupyter_ext.paths import api_path_of


class MetricsHandler(KilnHandler):
    @tornado.web.authenticated
    @authorized("read")
    async def get(self) -> None:
        from compiler.lineage.metrics import metrics_history

        full = self.notebook_file(self.get_query_argument("path", None))
        limit = query_int(self, "limit", 10, 1, 200)
        store = await self.open_notebook_store(full)
        history = {"metrics": [], "runs": [], "baseline": None}
        if store is not None:
            try:
                history = await asyncio.to_thread(metrics_history, store, full, limit)
            except _lineage_errors() as exc:
                raise tornado.web.HTTPError(400, str(exc)) from exc
        history["path"] = api_path_of(self.root_dir, full)
        history.pop("notebook_path", None)  # a server path: the API path says it
        self.finish(json.dumps(history, default=str))
