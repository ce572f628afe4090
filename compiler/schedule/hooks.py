"""What the scheduler calls for production (alerts, budgets); none of them raises.

    schedule_due(store, schedule, now)            in Scheduler.tick, before a due time fires
    schedule_run_ended(store, schedule, due, record)   after a scheduled job, before its row closes

With no alert route and no budget each costs one small query.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update

from compiler.compile.owners import OwnerError, read_production
from compiler.lineage import alerts
from compiler.lineage.schema import runs, settings
from compiler.lineage.store import LineageStore
from compiler.model.costs import check_budget, money

log = logging.getLogger(__name__)


def schedule_due(store: LineageStore, schedule: Any, now: dt.datetime) -> None:
    """A late alert when the schedule's next due time passed its grace period unfired."""
    try:
        grace = dt.timedelta(seconds=schedule.grace_s or alerts.DEFAULT_GRACE_S)
        if schedule.next_due_at + grace >= now:
            return
        routes = alerts.routes_for(store, [schedule.notebook], [schedule.name])
        if not routes:
            return
        reason = (
            f"no run started within the {grace.total_seconds() / 60:g} min grace period "
            "after the due time: the scheduler was not running (or could not start it)"
        )
        try:
            owner = read_production(schedule.notebook)
        except OwnerError:  # the notebook is gone: the alert still goes, naming nobody
            owner = {}
        alert = alerts.late_alert(schedule, schedule.next_due_at, now, reason, owner)
        alerts.deliver(store, alert, routes, now)
    except Exception as exc:  # a broken route or database hiccup must not stop the scheduler
        log.warning("kiln: late check for schedule %s failed: %s", schedule.name, exc)


def schedule_run_ended(
    store: LineageStore, schedule: Any, due: dt.datetime, record: dict[str, Any]
) -> dict[str, Any]:
    """Hold the run to the schedule's budget, then alert the schedule's and notebook's routes."""
    try:
        run_id = record.get("kiln_run_id")
        if run_id and schedule.budget:
            record = _apply_budget(store, str(run_id), schedule.budget, record)
        if run_id:
            alerts.notify_run_end(
                store, str(run_id), notebooks=[schedule.notebook], schedule=schedule.name
            )
        elif record.get("status") == "failed":  # the papermill engine: no kiln run to read
            routes = alerts.routes_for(store, [schedule.notebook], [schedule.name])
            if routes:
                alert = alerts.Alert(
                    event="failed",
                    subject=f"{schedule.name}@{due.isoformat()}",
                    scope=f"schedule:{schedule.name}",
                    title=f"[kiln] schedule {schedule.name} failed",
                    link=alerts.output_link(record.get("output_notebook")),
                    details={"Schedule": schedule.name, "Error": record.get("error")},
                )
                alerts.deliver(store, alert, routes)
    except Exception as exc:
        log.warning("kiln: alerts for schedule %s not evaluated: %s", schedule.name, exc)
    return record


def _apply_budget(
    store: LineageStore, run_id: str, budget: dict[str, Any], record: dict[str, Any]
) -> dict[str, Any]:
    with store.reading() as c:
        cost = c.execute(select(runs.c.cost).where(runs.c.id == run_id)).scalar()
        prices = c.execute(select(settings.c.value).where(settings.c.key == "prices")).scalar()
    spent = dict(cost or {})
    checked = check_budget(budget, spent, money(spent, dict(prices or {})))
    if checked is None:
        return record
    values: dict[str, Any] = {"budget": checked}
    if checked["over"] and checked["policy"] == "fail":
        error = f"over budget: spent {checked['spent']:.2f} of {checked['limit']:g}"
        values.update(status="failed", error=error)
        record = {**record, "status": "failed", "error": error}
    store.write(lambda c: c.execute(update(runs).where(runs.c.id == run_id).values(**values)))
    return record
