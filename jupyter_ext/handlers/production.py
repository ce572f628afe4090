"""Endpoints the panel's Production section uses: a notebook's alert routes and its costs.

    GET    /kiln/alerts?path=P                -> {routes: [...], owner, team, budget}
    POST   /kiln/alerts  {"path": P, "kind": "email"|"webhook"|"apprise", "target": T,
                          "events": "failed,late" | [...]}          -> 201 the route
    DELETE /kiln/alerts/<id>?path=P           -> 204 (only a route of this notebook)
    GET    /kiln/cost?path=P[&limit=N]        -> compiler.lineage.billing.cost_report

The routes are the ones `kiln alert add|list|remove` edit (the notebook's lineage database).
The owner is not written here: the panel sets it in the open notebook's metadata (`kiln.owner`),
so the saved file and the editor never disagree.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from jupyter_ext.handlers.base import KilnHandler, optional_str, query_int


def _routes_answer(store: Any, full: Any) -> dict[str, Any]:
    from compiler.compile.owners import read_production
    from compiler.lineage.alerts import list_routes

    routes = [r.to_dict() for r in list_routes(store, notebook=full)] if store else []
    for route in routes:
        route.pop("notebook", None)  # a server-side absolute path: the client knows its own
    return {"routes": routes, **read_production(full)}


class AlertsHandler(KilnHandler):
    @tornado.web.authenticated
    @authorized("read")
    async def get(self) -> None:
        full = self.notebook_file(self.get_query_argument("path", None))
        store = await self.open_notebook_store(full)
        self.finish(json.dumps(await asyncio.to_thread(_routes_answer, store, full)))

    @tornado.web.authenticated
    @authorized("write")
    async def post(self) -> None:
        from compiler.lineage.alerts import AlertError, add_route

        body = self.json_body()
        full = self.notebook_file(body.get("path"))
        kind = optional_str(body, "kind")
        target = optional_str(body, "target")
        if kind is None or target is None:
            raise tornado.web.HTTPError(
                400, "'kind' (email, webhook, apprise) and 'target' are required"
            )
        events = body.get("events")
        store = await self.open_notebook_store(full, create=True)

        def create() -> dict[str, Any]:
            try:
                route = add_route(
                    store,
                    kind=kind,
                    target=target,
                    notebook=full,
                    events=events,
                    user=getattr(self.current_user, "username", None),
                )
            except AlertError as exc:
                raise tornado.web.HTTPError(400, str(exc)) from exc
            answer = route.to_dict()
            answer.pop("notebook", None)
            return answer

        answer = await asyncio.to_thread(create)
        self.set_status(201)
        self.finish(json.dumps(answer))


class AlertHandler(KilnHandler):
    @tornado.web.authenticated
    @authorized("write")
    async def delete(self, route_id: str) -> None:
        from compiler.lineage.alerts import AlertError, get_route, remove_route

        full = self.notebook_file(self.get_query_argument("path", None))
        store = await self.open_notebook_store(full)

        def remove() -> None:
            try:
                route = get_route(store, int(route_id)) if store else None
            except AlertError:
                route = None
            if route is None or route.notebook != str(full):
                raise tornado.web.HTTPError(404, f"no alert route {route_id} for this notebook")
            remove_route(store, route.id)

        await asyncio.to_thread(remove)
        self.set_status(204)
        self.finish()


class CostHandler(KilnHandler):
    @tornado.web.authenticated
    @authorized("read")
    async def get(self) -> None:
        from compiler.lineage.billing import cost_report

        full = self.notebook_file(self.get_query_argument("path", None))
        limit = query_int(self, "limit", 10, 1, 200)
        store = await self.open_notebook_store(full)
        if store is None:
            self.finish(json.dumps({"runs": [], "trend": None, "prices": {}}))
            return
        report = await asyncio.to_thread(cost_report, store, full, limit)
        report.pop("notebook", None)
        self.finish(json.dumps(report, default=str))


def production_routes(base: str) -> list[tuple[str, type[KilnHandler]]]:
    return [
        (url_path_join(base, "alerts"), AlertsHandler),
        (url_path_join(base, "alerts", r"([0-9]{1,12})"), AlertHandler),
        (url_path_join(base, "cost"), CostHandler),
    ]
