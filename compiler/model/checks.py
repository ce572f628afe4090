"""Checks on a run's metrics and drift thresholds on its inputs: parsed from tags, judged after
a run. Plain data in and out, so the compiler (parsing), the runtime (judging) and the faces
(rendering) share one vocabulary without importing each other.

    check:accuracy>=0.8            absolute: fails the run when accuracy < 0.8
    check:accuracy>=baseline-0.02  relative to the baseline run's accuracy
    warn:f1>=0.7                   flags the run (succeeded · flagged) instead of failing it
    drift:raw<0.2                  on a task cell: the input `raw` (a DataFrame it produces, or
                                   a file it reads) drifts when a column scores 0.2 or more

nbformat tags cannot hold commas or spaces, so one tag is one condition.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The score above which a column counts as drifted when no `drift:` tag says otherwise. Both
# scores used (Kolmogorov-Smirnov's D for numbers, Cramér's V for categories) lie in [0, 1].
DEFAULT_DRIFT_THRESHOLD = 0.2

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
METRIC_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")
_CONDITION_RE = re.compile(
    # The value may not start with an operator's character: `accuracy>=` is then "no value",
    # not `>` with the value "=".
    r"^\s*(?P<metric>[^<>=!\s]+)\s*(?P<op><=|>=|==|<|>)\s*(?P<rhs>[^<>=\s].*?)\s*$"
)
_BASELINE_RE = re.compile(
    r"^baseline\s*(?:(?P<sign>[+-])\s*(?P<offset>[0-9]*\.?[0-9]+(?:e-?\d+)?))?$"
)
_DRIFT_RE = re.compile(r"^\s*(?P<input>[^<>=\s]+)\s*(?P<op><=|<)\s*(?P<limit>[0-9]*\.?[0-9]+)\s*$")

CHECK, WARN, DRIFT = "check", "warn", "drift"


@dataclass(frozen=True)
class Condition:
    kind: str  # CHECK | WARN
    metric: str
    op: str
    threshold: float | None  # absolute threshold; None when relative to the baseline
    baseline_offset: float | None  # `baseline-0.02` -> -0.02; None when absolute
    tag: str

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "op": self.op,
            "threshold": self.threshold,
            "baseline_offset": self.baseline_offset,
            "tag": self.tag,
        }


def parse_condition(kind: str, body: str, tag: str) -> Condition:
    """`accuracy>=0.8` or `accuracy>=baseline-0.02`; raises ValueError saying what is wrong."""
    m = _CONDITION_RE.match(body)
    if not m:
        raise ValueError(
            "expected METRIC OP VALUE with OP one of < <= > >= == "
            "(examples: accuracy>=0.8, loss<=baseline+0.1)"
        )
    metric, op, rhs = m.group("metric"), m.group("op"), m.group("rhs")
    if not METRIC_NAME_RE.match(metric):
        raise ValueError(f"{metric!r} is not a metric name (a name, or dotted keys: scores.f1)")
    relative = _BASELINE_RE.match(rhs.lower())
    if relative:
        offset = float(relative.group("offset") or 0.0)
        if relative.group("sign") == "-":
            offset = -offset
        return Condition(kind, metric, op, None, offset, tag)
    try:
        threshold = float(rhs)
    except ValueError:
        raise ValueError(
            f"{rhs!r} is neither a number nor baseline±NUMBER (examples: 0.8, baseline-0.02)"
        ) from None
    if not math.isfinite(threshold):
        raise ValueError(f"threshold {rhs!r} must be a finite number")
    return Condition(kind, metric, op, threshold, None, tag)


def parse_drift(body: str) -> tuple[str, float]:
    """`raw<0.2` -> ("raw", 0.2): the input's name and the score it must stay under."""
    m = _DRIFT_RE.match(body)
    if not m:
        raise ValueError("expected INPUT<SCORE (example: drift:raw<0.2, scores lie in 0..1)")
    limit = float(m.group("limit"))
    if not 0 < limit <= 1:
        raise ValueError(f"drift score limit {limit:g} must be in (0, 1]")
    return m.group("input"), limit


# -- judging ----------------------------------------------------------------------------------


def metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def judge_condition(
    condition: Mapping[str, Any],
    metrics: Mapping[str, Any],
    baseline_metrics: Mapping[str, Any] | None,
    baseline_run: str | None,
) -> dict[str, Any]:
    """One verdict: {kind, metric, passed, value, threshold, baseline_value, message}.

    A metric the run did not record fails its condition (a check that cannot be judged must not
    pass silently). A relative condition without a baseline passes with a note: the first run of
    a notebook has nothing to compare with."""
    kind, name, op = condition["kind"], condition["metric"], condition["op"]
    value = metric_value(metrics, name)
    baseline_value = metric_value(baseline_metrics, name) if baseline_metrics is not None else None
    verdict: dict[str, Any] = {
        "kind": kind,
        "metric": name,
        "op": op,
        "tag": condition.get("tag"),
        "value": value,
        "baseline_value": baseline_value,
        "baseline_run": baseline_run,
        "threshold": condition.get("threshold"),
    }
    offset = condition.get("baseline_offset")
    if offset is not None:
        if baseline_value is None:
            why = "no baseline run" if baseline_run is None else f"baseline run {baseline_run} "
            why += "" if baseline_run is None else f"has no {name}"
            verdict.update(
                passed=True, threshold=None, message=f"{kind} {name}: not judged ({why})"
            )
            return verdict
        verdict["threshold"] = baseline_value + float(offset)
    threshold = verdict["threshold"]
    if value is None:
        shown = metrics.get(name)
        got = "was not recorded" if shown is None else f"is not a number ({shown!r})"
        verdict.update(passed=False, message=f"{kind} {name} {op} {_fmt(threshold)}: {name} {got}")
        return verdict
    passed = OPERATORS[op](value, float(threshold))
    relation = f"{name} = {_fmt(value)}, needs {op} {_fmt(threshold)}"
    if offset is not None:
        sign = "+" if offset >= 0 else "-"
        relation += (
            f" (baseline {_fmt(baseline_value)} {sign} {abs(float(offset)):g}, run {baseline_run})"
        )
    elif baseline_value is not None:
        relation += f" (baseline {_fmt(baseline_value)}, run {baseline_run})"
    word = "passed" if passed else "failed"
    verdict.update(passed=passed, message=f"{kind} {word}: {relation}")
    return verdict


def judge(
    conditions: list[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    baseline_metrics: Mapping[str, Any] | None,
    baseline_run: str | None,
) -> list[dict[str, Any]]:
    return [judge_condition(c, metrics, baseline_metrics, baseline_run) for c in conditions]


def outcome(verdicts: Sequence[Mapping[str, Any]]) -> tuple[bool, bool]:
    """(failed, flagged): a failed check fails the run; a failed warn or a drift flags it."""
    failed = any(v["kind"] == CHECK and not v["passed"] for v in verdicts)
    flagged = any(v["kind"] in (WARN, DRIFT) and not v["passed"] for v in verdicts)
    return failed, flagged
