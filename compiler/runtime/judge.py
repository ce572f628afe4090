"""After the tasks: gather the run's metrics and profiles, judge its checks and input drift.

The baseline (the pinned run, else the last succeeded run of the notebook) is plain data given
by whoever opened the lineage store: {"run_id", "metrics", "profiles"}; the runtime never reads
the store itself. A failed `check:` fails the run; a failed `warn:` or a drifted input flags it.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from compiler.model.checks import CHECK, DEFAULT_DRIFT_THRESHOLD, DRIFT, judge, outcome
from compiler.runtime.monitor import flatten_metric
from compiler.runtime.results import RunResult


def prefetch_statistics(baseline: Mapping[str, Any] | None) -> None:
    """Import scipy.stats in a background thread while the tasks run, when this run will score
    drift against a baseline's profiles: the import takes 0.5-1 s here (3-4 s on a loaded
    2-core machine), which would otherwise come after the last task."""
    if not (baseline or {}).get("profiles") or "scipy.stats" in sys.modules:
        return
    threading.Thread(
        target=importlib.import_module, args=("scipy.stats",), name="kiln-scipy", daemon=True
    ).start()


def drift_verdicts(
    spec: Mapping[str, Any],
    profiles: Mapping[str, Any],
    baseline_profiles: Mapping[str, Any] | None,
    baseline_run: str | None,
) -> list[dict[str, Any]]:
    if not profiles or not baseline_profiles:
        return []
    from compiler.model.drift import (
        profile_drift,
    )  # scipy: only for runs that have something to compare

    limits = {d["key"]: float(d["threshold"]) for d in spec.get("drift") or []}
    verdicts = []
    for key, profile in profiles.items():
        then = baseline_profiles.get(key)
        if then is None:
            continue
        limit = limits.get(key, DEFAULT_DRIFT_THRESHOLD)
        try:
            drift = profile_drift(profile, then, limit)
        except Exception as exc:  # a statistic that cannot be computed must not fail the run
            warnings.warn(f"kiln: drift of input {key} not scored: {exc}", stacklevel=2)
            continue
        passed = not drift["drifted"]
        if passed:
            message = f"input {key}: no drift (highest score {drift['max_score']:.3g} < {limit:g})"
        else:
            shown = ", ".join(
                f"{c} {drift['columns'][c]['score']:.3g}" for c in drift["drifted"][:5]
            )
            more = len(drift["drifted"]) - 5
            message = (
                f"input {key} drifted against run {baseline_run}: {shown}"
                + (f" and {more} more" if more > 0 else "")
                + f" (limit {limit:g})"
            )
        verdicts.append(
            {
                "kind": DRIFT,
                "metric": None,
                "input": key,
                "passed": passed,
                "value": drift["max_score"],
                "threshold": limit,
                "baseline_value": None,
                "baseline_run": baseline_run,
                "message": message,
                "drift": drift,
            }
        )
    return verdicts


def judge_run(
    result: RunResult, spec: Mapping[str, Any], baseline: Mapping[str, Any] | None
) -> None:
    """Fill the result's metrics, verdicts and flag; fail it on a failed check. (Profiles stay
    on the tasks that made them: the run's JSON would otherwise carry each one twice.)"""
    metrics: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    for task in result.tasks:
        metrics.update(task.metrics)
        profiles.update(task.profiles)
    for metric in spec.get("metrics") or []:
        if metric.get("source") == "parameter" and metric["name"] in result.parameters:
            # A parameter the metrics cell reads: its value in this run (an override that is
            # not a number is left out; the compiler warned about a default that is not).
            metrics.update(flatten_metric(metric["name"], result.parameters[metric["name"]])[0])
    result.metrics = metrics
    baseline_run = (baseline or {}).get("run_id")
    result.baseline_run = baseline_run
    if not result.ok:  # tasks failed: the metrics are partial, judging them says nothing
        return
    baseline_metrics = (baseline or {}).get("metrics") if baseline else None
    verdicts = judge(list(spec.get("checks") or []), metrics, baseline_metrics, baseline_run)
    verdicts += drift_verdicts(spec, profiles, (baseline or {}).get("profiles"), baseline_run)
    result.verdicts = verdicts
    failed, flagged = outcome(verdicts)
    result.flagged = flagged and not failed
    if failed:
        result.status = "failed"
        result.error = "; ".join(
            v["message"] for v in verdicts if v["kind"] == CHECK and not v["passed"]
        )


def verdict_summary(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """A verdict without the per-column drift detail: for events and notebook metadata."""
    summary = {k: v for k, v in verdict.items() if k != "drift"}
    if "drift" in verdict:
        summary["drifted_columns"] = list(verdict["drift"]["drifted"])
    return summary


def monitoring_fields(result: RunResult) -> dict[str, Any]:
    """The final RunEvent's metrics, verdicts and flag (none for a run without any)."""
    if not (result.metrics or result.verdicts or result.error):
        return {}
    return {
        "error": result.error,
        "flagged": result.flagged,
        "metrics": dict(result.metrics),
        "verdicts": [verdict_summary(v) for v in result.verdicts],
        "baseline_run": result.baseline_run,
    }
