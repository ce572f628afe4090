"""Drift scores between two input profiles (compiler/runtime/profile.py makes the profiles).

Pure functions over plain data, shared by the runtime (judging a run) and the lineage faces
(`kiln drift RUN --against RUN`). scipy.stats does the statistics: Kolmogorov-Smirnov's D between
the two numeric samples, Cramér's V of the two category count vectors; both lie in [0, 1], so
one limit (`drift:raw<0.2`) reads the same for either kind. A column that appears, disappears or
changes kind scores 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _round(x: float) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def column_drift(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """{score, test, p_value} for one column's profiles."""
    if current.get("type") != baseline.get("type"):
        return {"score": 1.0, "test": "kind changed", "p_value": None}  # text became numbers
    if current.get("type") == "number":
        a, b = current.get("sample") or [], baseline.get("sample") or []
        a = [x for x in a if x is not None]
        b = [x for x in b if x is not None]
        if not a or not b:
            return {"score": 0.0 if not a and not b else 1.0, "test": "ks", "p_value": None}
        from scipy.stats import ks_2samp

        test = ks_2samp(a, b)
        return {
            "score": _round(float(test.statistic)),
            "test": "ks",
            "p_value": _round(float(test.pvalue)),
        }
    keys = sorted(set(current.get("top") or {}) | set(baseline.get("top") or {}))
    table = [
        [int((side.get("top") or {}).get(k, 0)) for k in keys] + [int(side.get("other") or 0)]
        for side in (current, baseline)
    ]
    # Categories neither side has (the "other" bucket when both are complete) are dropped.
    kept = [j for j in range(len(table[0])) if table[0][j] + table[1][j] > 0]
    table = [[row[j] for j in kept] for row in table]
    if len(kept) < 2 or min(sum(row) for row in table) == 0:
        return {"score": 0.0, "test": "cramer_v", "p_value": None}
    from scipy.stats import chi2_contingency
    from scipy.stats.contingency import association

    chi2 = chi2_contingency(table)
    return {
        "score": _round(float(association(table, method="cramer"))),
        "test": "cramer_v",
        "p_value": _round(float(chi2.pvalue)),
    }


def profile_drift(
    current: Mapping[str, Any], baseline: Mapping[str, Any], threshold: float
) -> dict[str, Any]:
    """Per-column scores, the drifted columns (score >= threshold) and the highest score."""
    now, then = current.get("columns") or {}, baseline.get("columns") or {}
    columns: dict[str, Any] = {}
    for name in [*now, *(n for n in then if n not in now)]:
        # A column added or dropped is a change of schema (often a parameter choosing the
        # features), shown but not scored: drift is about the values of the columns kept.
        if name not in then:
            columns[name] = {"score": None, "test": "new column", "p_value": None}
        elif name not in now:
            columns[name] = {"score": None, "test": "column gone", "p_value": None}
        else:
            columns[name] = column_drift(now[name], then[name])
    drifted = sorted(
        (n for n, c in columns.items() if (c["score"] or 0) >= threshold),
        key=lambda n: -(columns[n]["score"] or 0),
    )
    return {
        "threshold": threshold,
        "max_score": max((c["score"] or 0 for c in columns.values()), default=0.0),
        "drifted": drifted,
        "columns": columns,
        "rows": [current.get("rows"), baseline.get("rows")],
    }
