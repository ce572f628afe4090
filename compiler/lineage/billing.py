"""What a notebook's runs cost: the report behind `kiln cost` and the panel, and the prices.

Prices are one row of the lineage database's `settings` table (key "prices"):

    | setting   | meaning                                   | default |
    |-----------|-------------------------------------------|---------|
    | cpu_hour  | money per CPU-hour of task CPU time       | 0       |
    | gb_hour   | money per GB-hour of task memory (avg RSS)| 0       |
    | gpu_hour  | money per GPU-hour a task held a GPU      | 0       |

All 0 (the default) reports resources only. Set with `kiln cost --price cpu_hour=0.048`.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from sqlalchemy import select

from compiler.lineage.alerts import get_setting, set_setting
from compiler.lineage.schema import pipelines, runs, task_runs
from compiler.lineage.store import LineageStore
from compiler.model.costs import PRICE_KEYS, add_costs, money


def get_prices(store: LineageStore) -> dict[str, float]:
    stored = dict(get_setting(store, "prices", {}) or {})
    return {k: float(stored.get(k) or 0.0) for k in PRICE_KEYS}


def set_prices(store: LineageStore, changes: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(changes) - set(PRICE_KEYS))
    if unknown:
        raise ValueError(f"unknown price(s) {', '.join(unknown)}: set {', '.join(PRICE_KEYS)}")
    if any(v < 0 for v in changes.values()):
        raise ValueError("prices are 0 or more")
    prices = {**get_prices(store), **changes}
    set_setting(store, "prices", prices)
    return prices


def cost_report(store: LineageStore, notebook: str | Path, limit: int = 10) -> dict[str, Any]:
    """The notebook's last `limit` runs, newest first: totals, per task, what the cache saved,
    money at today's prices, and the trend of CPU time against the earlier runs' median."""
    path = str(Path(notebook).resolve())
    prices = get_prices(store)
    with store.reading() as c:
        rows = c.execute(
            select(runs, pipelines.c.version)
            .join(pipelines, pipelines.c.id == runs.c.pipeline_id)
            .where(runs.c.notebook_path == path)
            .order_by(runs.c.started_at.desc(), runs.c.id.desc())
            .limit(limit)
        ).all()
        ids = [r.id for r in rows]
        tasks = c.execute(
            select(
                task_runs.c.run_id,
                task_runs.c.task,
                task_runs.c.status,
                task_runs.c.cached,
                task_runs.c.cost,
                task_runs.c.cost_saved,
            )
            .where(task_runs.c.run_id.in_(ids))
            .order_by(task_runs.c.id)
        ).all()
    by_run: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for t in tasks:
        by_run[t.run_id].append(
            {
                "task": t.task,
                "status": t.status,
                "cached": bool(t.cached),
                "cost": t.cost,
                "cost_saved": t.cost_saved,
                "money": money(t.cost, prices),
            }
        )
    listed = []
    for row in rows:
        task_list = by_run[row.id]
        total = add_costs(t["cost"] for t in task_list)
        saved = add_costs(t["cost_saved"] for t in task_list if t["cached"])
        listed.append(
            {
                "run_id": row.id,
                "status": row.status,
                "version": row.version,
                "started_at": row.started_at.isoformat() if row.started_at else None,
                "owner": row.owner,
                "cost": total,
                "saved": saved,
                "money": money(total, prices),
                "saved_money": money(saved, prices),
                "budget": row.budget,
                "tasks": task_list,
            }
        )
    cpu = [float((r["cost"] or {}).get("cpu_s") or 0) for r in listed]
    trend = None
    if len(cpu) >= 2:
        earlier = statistics.median(cpu[1:])
        trend = {
            "latest_cpu_s": cpu[0],
            "median_cpu_s_before": earlier,
            "ratio": round(cpu[0] / earlier, 3) if earlier else None,
        }
    return {"notebook": path, "prices": prices, "runs": listed, "trend": trend}
