"""Small per-column profiles of tabular inputs (drift scores between two: compiler/drift.py).

A profile is plain JSON, bounded whatever the frame's size: per column the count, nulls,
mean, std, min/max and quantiles for numbers (plus a sorted sample of at most SAMPLE_SIZE values,
which the Kolmogorov-Smirnov test needs), the TOP_CATEGORIES most frequent values for the rest;
at most MAX_COLUMNS columns. It is computed once, on the worker that has the frame.

Cost on 1,000,000 rows (tests/benchmarks/metrics_bench.py): a numeric column's count, nulls,
mean, min and max are exact, vectorised passes; its std and quantiles, and a text column's
nulls and category counts, come from one row sample of QUANTILE_ROWS shared by all columns (a
sort, or a scan of a million Python strings, costs 10-100x more, and a drift score does not need
that precision). 10 columns of 1M rows: ~26 ms of CPU, ~3 % of reading them with read_csv.
"""

from __future__ import annotations

import math
from typing import Any

SAMPLE_SIZE = 500  # values kept per numeric column for the KS test (~4 KB of JSON)
QUANTILE_ROWS = 20_000  # rows sampled for quantiles and category counts
TOP_CATEGORIES = 20
MAX_COLUMNS = 50
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def is_dataframe(value: Any) -> bool:
    """A pandas DataFrame, without importing pandas where no task did."""
    import sys

    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _round(x: float) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def _rounded(values: Any) -> list[float]:
    """Six significant digits, vectorised (a Python-level format per value cost more than the
    rest of the profile)."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.where(values == 0, 0.0, np.floor(np.log10(np.abs(values))))
    factor = 10.0 ** (5 - magnitude)
    out: list[float] = (np.round(values * factor) / factor).tolist()
    return out


def _floats(series: Any) -> Any:
    """The column as float64 with NaN for missing values, without a copy when it is one
    already: `to_numpy(na_value=...)` copies and scans for missing values every time."""
    import numpy as np

    if series.dtype == np.float64:
        return series.to_numpy()
    if series.dtype.kind in "iu":  # plain numpy integers: no missing values
        return series.to_numpy().astype(np.float64)
    return series.to_numpy(dtype="float64", na_value=np.nan)  # nullable Int64, Float32...


def profile_frame(frame: Any, source: str) -> dict[str, Any]:
    """The profile of a pandas DataFrame (`source`: "artifact" or "file")."""
    import numpy as np
    import pandas as pd

    rows = int(len(frame))
    rng = np.random.default_rng(0)  # the same rows every run: an unchanged input scores 0
    picked = rng.choice(rows, size=QUANTILE_ROWS, replace=False) if rows > QUANTILE_ROWS else None
    if picked is not None:
        picked.sort()  # in row order: the gather below reads memory forwards
    columns: dict[str, Any] = {}
    for name in list(frame.columns)[:MAX_COLUMNS]:
        series = frame[name]
        if isinstance(series, pd.DataFrame):  # duplicate column names: the first one
            series = series.iloc[:, 0]
        column: dict[str, Any] = {"dtype": str(series.dtype)}
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = _floats(series)
            total = float(values.sum())
            if math.isfinite(total):  # no NaN nor inf anywhere: one pass gave the mean too
                n_finite, finite = rows, values
            else:
                finite = values[np.isfinite(values)]
                n_finite = int(finite.size)
                total = float(finite.sum())
            part = values if picked is None else values[picked]
            part = part[np.isfinite(part)]  # unsorted: np.quantile selects, it needs no sort
            column.update(type="number", count=n_finite, nulls=rows - n_finite)
            if n_finite:
                column.update(
                    mean=_round(total / n_finite),
                    # From the row sample: numpy's std is three passes and a copy of the column
                    # (a third of a numeric column's profile); ~0.5 % precise at 20,000 rows.
                    std=_round(float(part.std(ddof=1))) if part.size > 1 else 0.0,
                    min=_round(float(finite.min())),
                    max=_round(float(finite.max())),
                )
            if part.size:
                column["quantiles"] = dict(
                    zip(map(str, QUANTILES), _rounded(np.quantile(part, QUANTILES)), strict=True)
                )
                # Every step-th sampled row, sorted: the rows are spread over the whole frame
                # and the same every run, so an unchanged input scores 0. Sorting 500 values
                # instead of the 20,000 sampled rows was half of a numeric column's profile.
                step = max(1, math.ceil(part.size / SAMPLE_SIZE))
                column["sample"] = _rounded(np.sort(part[::step]))
        else:
            sampled = series if picked is None else series.iloc[picked]
            scale = rows / max(1, len(sampled))
            # Counted on the row sample (and scaled) past QUANTILE_ROWS rows: finding missing
            # values among a million Python strings is a loop over objects, more than half of a
            # whole frame's profile; `nulls_estimated` says so.
            nulls = int(round(int(sampled.isna().sum()) * scale))
            counts = sampled.value_counts(dropna=True)
            column.update(type="category", count=rows - nulls, nulls=nulls)
            if picked is not None:
                column["nulls_estimated"] = True
            column["distinct_in_sample"] = int(counts.size)
            column["top"] = {
                str(k): int(round(v * scale)) for k, v in counts.iloc[:TOP_CATEGORIES].items()
            }
            column["other"] = int(round(counts.iloc[TOP_CATEGORIES:].sum() * scale))
        columns[str(name)] = column
    return {
        "source": source,
        "rows": rows,
        "columns": columns,
        "columns_left_out": max(0, int(frame.shape[1]) - MAX_COLUMNS),
    }
