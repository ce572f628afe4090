"""What a task attempt and a run cost: plain arithmetic on what the worker measured.

Pure functions on plain dicts, shared by the runtime (one record per attempt) and lineage
(a run's totals, money, budgets); neither imports the other, both import this.

A cost is a dict of resource amounts:
    cpu_s          process CPU seconds on the worker (user + system, children included)
    wall_s         seconds the attempt took
    peak_memory    bytes, the worker process's peak RSS while the task ran
    average_memory bytes, the mean of the 100 ms RSS samples
    mem_gb_s       average memory (GB) x wall seconds
    gpu_s          wall seconds x GPUs the task held (its `resources:` GPU/gpu amount)
    bytes_written  bytes the task's outputs took in the artifact store

Prices (per CPU-hour, GB-hour of memory, GPU-hour) turn amounts into money; with no prices set
(all 0) runs report resources only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SUMMED = ("cpu_s", "wall_s", "mem_gb_s", "gpu_s", "bytes_written")
PRICE_KEYS = ("cpu_hour", "gb_hour", "gpu_hour")
BUDGET_UNITS = {"money": "total", "cpu-s": "cpu_s", "gb-s": "mem_gb_s", "gpu-s": "gpu_s"}
BUDGET_POLICIES = ("flag", "fail")


def gpus_held(resources: Mapping[str, Any] | None) -> float:
    """GPUs a task holds: the Dask resource named GPU or gpu (resources:GPU=1)."""
    total = 0.0
    for name, amount in (resources or {}).items():
        if str(name).lower() == "gpu":
            try:
                total += float(amount)
            except (TypeError, ValueError):
                pass
    return total


def attempt_cost(record: Mapping[str, Any], resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """One attempt's cost from the worker's record (executor.execute_task)."""
    wall = float(record.get("duration") or 0.0)
    average = record.get("average_memory")
    stored = [
        int(info.get("stored_bytes") or 0)
        for info in (record.get("outputs") or {}).values()
        if isinstance(info, Mapping)
    ]
    return {
        "cpu_s": round(float(record.get("cpu_seconds") or 0.0), 4),
        "wall_s": round(wall, 4),
        "peak_memory": record.get("peak_memory"),
        "average_memory": average,
        "mem_gb_s": round((average or 0) / 1e9 * wall, 6),
        "gpu_s": round(wall * gpus_held(resources), 4),
        "bytes_written": sum(stored),
    }


def add_costs(costs: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Sum of costs (peak memory: the largest); None when there is none."""
    present = [c for c in costs if c]
    if not present:
        return None
    total: dict[str, Any] = {k: 0 for k in SUMMED}
    peak = 0
    for cost in present:
        for key in SUMMED:
            total[key] += cost.get(key) or 0
        peak = max(peak, int(cost.get("peak_memory") or 0))
    total = {k: round(v, 6) if isinstance(v, float) else v for k, v in total.items()}
    total["peak_memory"] = peak or None
    return total


def money(cost: Mapping[str, Any] | None, prices: Mapping[str, float]) -> dict[str, float] | None:
    """Money for a cost at these prices, per resource and in total; None when no price is set."""
    if not cost or not any(float(prices.get(k) or 0) for k in PRICE_KEYS):
        return None
    cpu = float(cost.get("cpu_s") or 0) / 3600 * float(prices.get("cpu_hour") or 0)
    memory = float(cost.get("mem_gb_s") or 0) / 3600 * float(prices.get("gb_hour") or 0)
    gpu = float(cost.get("gpu_s") or 0) / 3600 * float(prices.get("gpu_hour") or 0)
    return {
        "cpu": round(cpu, 6),
        "memory": round(memory, 6),
        "gpu": round(gpu, 6),
        "total": round(cpu + memory + gpu, 6),
    }


def parse_budget(text: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A budget as a user writes it: `0.50` (money at the set prices), `120cpu-s`, `50gb-s`,
    `3600gpu-s`, optionally followed by a policy, `flag` (the default) or `fail`:
    "0.50 fail". Raises ValueError saying what is accepted."""
    if text is None or text == "":
        return None
    if isinstance(text, Mapping):
        return parse_budget(f"{text.get('limit')}{text.get('unit', '')} {text.get('policy', '')}")
    parts = str(text).replace(",", " ").split()
    policy = "flag"
    if len(parts) == 2 and parts[1].lower() in BUDGET_POLICIES:
        policy = parts[1].lower()
        parts = parts[:1]
    if len(parts) != 1:
        raise ValueError(_BUDGET_HELP.format(text=text))
    amount = parts[0].lower()
    unit = "money"
    for suffix in ("cpu-s", "gb-s", "gpu-s"):
        if amount.endswith(suffix):
            unit, amount = suffix, amount[: -len(suffix)]
            break
    if unit == "money" and amount.endswith("money"):
        amount = amount[: -len("money")]
    try:
        limit = float(amount.lstrip("$"))
    except ValueError:
        raise ValueError(_BUDGET_HELP.format(text=text)) from None
    if limit < 0:
        raise ValueError(_BUDGET_HELP.format(text=text))
    return {"limit": limit, "unit": unit, "policy": policy}


_BUDGET_HELP = (
    "budget {text!r}: write an amount of money at the set prices ('0.50'), or of a resource "
    "('120cpu-s', '50gb-s', '3600gpu-s'), optionally followed by 'flag' (the default) or 'fail'"
)


def check_budget(
    budget: Mapping[str, Any] | None,
    cost: Mapping[str, Any] | None,
    spent_money: Mapping[str, float] | None,
) -> dict[str, Any] | None:
    """The budget with what was spent against it and whether the run went over."""
    if not budget:
        return None
    unit = str(budget.get("unit") or "money")
    if unit == "money":
        spent = float((spent_money or {}).get("total") or 0.0)
    else:
        spent = float((cost or {}).get(BUDGET_UNITS[unit]) or 0.0)
    limit = float(budget["limit"])
    return {**budget, "spent": round(spent, 6), "over": spent > limit}


def format_budget(budget: Mapping[str, Any] | None) -> str:
    if not budget:
        return ""
    unit = budget.get("unit", "money")
    amount = f"{budget['limit']:g}" + ("" if unit == "money" else f" {unit}")
    text = f"budget {amount} ({budget.get('policy', 'flag')})"
    if "spent" in budget:
        spent = f"{budget['spent']:.2f}" + ("" if unit == "money" else f" {unit}")
        text += f": spent {spent}" + (", OVER BUDGET" if budget.get("over") else "")
    return text


def format_cost(cost: Mapping[str, Any] | None, money_: Mapping[str, float] | None = None) -> str:
    """One line a person reads: '1.02 CPU-s, 0.05 GB-s, 0 GPU-s, 3.1 MB written'."""
    if not cost:
        return "-"
    parts = [
        f"{float(cost.get('cpu_s') or 0):.2f} CPU-s",
        f"{float(cost.get('mem_gb_s') or 0):.3g} GB-s",
    ]
    if cost.get("gpu_s"):
        parts.append(f"{float(cost['gpu_s']):.1f} GPU-s")
    parts.append(f"{_bytes(int(cost.get('bytes_written') or 0))} written")
    if money_:
        parts.append(f"{money_['total']:.4f} money")
    return ", ".join(parts)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
