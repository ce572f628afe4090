"""Small per-column profiles of tabular inputs (drift scores between two: compiler/drift.py).

A profile is plain JSON, bounded whatever the frame's size: per column the count, nulls,
mean, std, min/max and quantiles for numbers (plus a sorted sample of at most SAMPLE_SIZE values,
which the Kolmogorov-Smirnov test needs), the TOP_CATEGORIES most frequent values for the rest;
at most MAX_COLUMNS columns. It is computed once, on the worker that has the frame.

Cost on 1,000,000 rows (tests/benchmarks/metrics_bench.py): a numeric column's count, nulls,
mean, min and max are exact, vectorised passes; its std and quantiles, and a text column's
category counts, come from one row sample of SAMPLE_ROWS shared by all columns (a sort, or a
scan of a million Python strings, costs 10-100x more, and a drift score does not need that
precision). A text column's nulls are exact where pandas keeps it in Arrow (pandas 3's default
`str`, a null bitmap), estimated from the sample where it holds Python objects. A Parquet file
read whole (the worker passes its path) has its counts, nulls and extremes in its footer, exact
and read in ~1 ms: its numeric columns are then not passed over at all (the mean comes from the
sample, `mean_estimated`), which a Parquet read, 4x faster than a CSV one, cannot absorb.
"""

from __future__ import annotations

import math
import os
from typing import Any

SAMPLE_SIZE = 500  # values kept per numeric column for the KS test (~4 KB of JSON)
# Rows sampled for std, quantiles and category counts. At 5,000 a category's share is within
# +-1.4 percentage points of the whole column's (95 %, worst case p = 0.5), a quantile within
# ~0.04 standard deviations, and two samples of one unchanged distribution score a Cramér's V
# of ~0.05 (21 categories) against the default drift limit 0.2; the KS test uses SAMPLE_SIZE
# values of it either way. 20,000 rows made a 1M-row Parquet input's profile 8-15 % of the task
# (the gather of random rows from Arrow strings, and the quantile selection, grow with it).
SAMPLE_ROWS = 5_000
TOP_CATEGORIES = 20
MAX_COLUMNS = 50
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
PARQUET_SUFFIXES = (".parquet", ".pq")
MAX_STATISTICS = 20_000  # row groups x columns read from a Parquet footer (~1 µs each)


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


def parquet_statistics(path: str | os.PathLike[str], rows: int) -> dict[str, dict[str, Any]]:
    """{column: {nulls, min, max}} from a Parquet file's footer, which its writer computed
    over every row: exact, and read in ~1 ms instead of two passes over each numeric column.
    Empty when the file is not Parquet, cannot be read, or holds other rows than the frame
    (`filters=` dropped some); a column is left out where a row group has no statistics."""
    if not os.fspath(path).lower().endswith(PARQUET_SUFFIXES):
        return {}
    try:
        import pyarrow.parquet as pq

        meta = pq.read_metadata(path)
    except Exception:  # no pyarrow, not Parquet after all, gone: the frame is profiled alone
        return {}
    if meta.num_rows != rows or meta.num_row_groups * meta.num_columns > MAX_STATISTICS:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for i in range(meta.num_columns):
        name = meta.schema.column(i).path
        if "." in name:  # a field of a nested column: not a column of the frame
            continue
        nulls, low, high = 0, None, None
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(i).statistics
            if stats is None or not stats.has_null_count:
                break
            nulls += stats.null_count
            if stats.has_min_max:
                if not isinstance(stats.min, int | float) or isinstance(stats.min, bool):
                    break  # text, dates: only numbers are taken from the footer
                low = stats.min if low is None else min(low, stats.min)
                high = stats.max if high is None else max(high, stats.max)
            elif stats.num_values > stats.null_count:  # values, but no extremes recorded
                break
        else:
            found[name] = {"nulls": nulls, "min": low, "max": high}
    return found


def profile_frame(
    frame: Any, source: str, path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The profile of a pandas DataFrame (`source`: "artifact" or "file"; `path`: the file
    it was read from, whose Parquet statistics spare the exact passes over its numbers)."""
    import numpy as np
    import pandas as pd

    rows = int(len(frame))
    picked = None
    footer: dict[str, dict[str, Any]] = {}
    if rows > SAMPLE_ROWS:
        # The same rows every run (a fixed seed): an unchanged input scores 0. Drawn with
        # replacement: choice(replace=False) on 1M rows cost as much as two columns' profiles.
        picked = np.random.default_rng(0).integers(0, rows, SAMPLE_ROWS)
        picked.sort()  # in row order: the gathers below read memory forwards
        if path is not None:
            footer = parquet_statistics(path, rows)
    columns: dict[str, Any] = {}
    unranked: dict[str, Any] = {}  # numeric column -> its sampled finite values
    for name in list(frame.columns)[:MAX_COLUMNS]:
        series = frame[name]
        if isinstance(series, pd.DataFrame):  # duplicate column names: the first one
            series = series.iloc[:, 0]
        column: dict[str, Any] = {"dtype": str(series.dtype)}
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = _floats(series)
            sampled = values if picked is None else values[picked]
            part = sampled[np.isfinite(sampled)]  # unsorted: np.quantile selects, needs no sort
            stats = footer.get(str(name))
            if (
                stats is not None
                and stats["min"] is not None
                and (stats["nulls"] > 0 or part.size == sampled.size)
            ):
                # The file's own counts and extremes (exact); the mean from the sample, within
                # ~0.03 standard deviations (95 %): a pass over the column from memory was
                # most of a Parquet input's profile, and no drift score reads the mean. A
                # sampled NaN where the footer counts no null (NaN stored as a value, which
                # pandas reads as missing) takes the exact passes below instead.
                n_finite = rows - int(stats["nulls"])
                column.update(type="number", count=n_finite, nulls=rows - n_finite)
                column.update(
                    mean=_round(float(part.mean())) if part.size else None,
                    mean_estimated=True,
                    std=_round(float(part.std(ddof=1))) if part.size > 1 else 0.0,
                    min=_round(float(stats["min"])),
                    max=_round(float(stats["max"])),
                )
            else:
                total = float(values.sum())
                if math.isfinite(total):  # no NaN nor inf anywhere: one pass gave the mean
                    n_finite, finite = rows, values
                else:
                    finite = values[np.isfinite(values)]
                    n_finite = int(finite.size)
                    total = float(finite.sum())
                column.update(type="number", count=n_finite, nulls=rows - n_finite)
                if n_finite:
                    column.update(
                        mean=_round(total / n_finite),
                        # From the row sample: numpy's std is three passes and a copy of the
                        # column (a third of a numeric column's profile); ~1 % precise here.
                        std=_round(float(part.std(ddof=1))) if part.size > 1 else 0.0,
                        min=_round(float(finite.min())),
                        max=_round(float(finite.max())),
                    )
            if part.size:
                unranked[str(name)] = part  # quantiles: all columns at once, below
                # Every step-th sampled row, sorted: the rows are spread over the whole frame
                # and the same every run, so an unchanged input scores 0. Sorting 500 values
                # instead of all the sampled rows was half of a numeric column's profile.
                step = max(1, math.ceil(part.size / SAMPLE_SIZE))
                column["sample"] = _rounded(np.sort(part[::step]))
        else:
            column.update(_categories(series, rows, picked))
        columns[str(name)] = column
    _fill_quantiles(columns, unranked)
    return {
        "source": source,
        "rows": rows,
        "columns": columns,
        "columns_left_out": max(0, int(frame.shape[1]) - MAX_COLUMNS),
    }


def _fill_quantiles(columns: dict[str, Any], parts: dict[str, Any]) -> None:
    """Each numeric column's QUANTILES of its sampled values, with one np.quantile call per
    group of columns sampled to the same length (usually all of them): numpy's per-call cost,
    ~0.2 ms, was a third of a Parquet input's profile when paid once per column."""
    import numpy as np

    by_size: dict[int, list[str]] = {}
    for name, part in parts.items():
        by_size.setdefault(part.size, []).append(name)
    for names in by_size.values():
        found = np.quantile(np.stack([parts[n] for n in names]), QUANTILES, axis=1)
        for k, name in enumerate(names):
            columns[name]["quantiles"] = dict(
                zip(map(str, QUANTILES), _rounded(found[:, k]), strict=True)
            )


def _categories(series: Any, rows: int, picked: Any) -> dict[str, Any]:
    """A text (or boolean, categorical) column: nulls, the TOP_CATEGORIES most frequent values
    in the row sample (scaled to the whole column) and the rest as `other`."""
    import pandas as pd

    dtype = series.dtype
    in_arrow = isinstance(dtype, pd.ArrowDtype) or (
        isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
    )
    if in_arrow:
        # Kept in Arrow (pandas 3's default `str` dtype, pd.ArrowDtype): pyarrow counts the
        # sample and knows the column's nulls from its bitmap, exactly and for free; through
        # pandas the same took ~4x as long (a Series built per step), most of a text
        # column's profile.
        import pyarrow.compute as pc

        data = series.array.__arrow_array__()  # the column's own Arrow data, not a copy
        sample = data if picked is None else _take(data, picked)
        found = pc.value_counts(sample).to_pylist()  # [{values, counts}], nulls included
        found.sort(key=lambda vc: -vc["counts"])  # stable: ties stay in first-seen order
        counted = [(vc["values"], vc["counts"]) for vc in found if vc["values"] is not None]
        nulls, estimated = int(data.null_count), False
    else:
        sampled = series if picked is None else series.iloc[picked]
        counts = sampled.value_counts(dropna=False)
        missing = int(counts[counts.index.isna()].sum())
        counted = [(k, int(v)) for k, v in counts[counts.index.notna()].items()]
        in_objects = series.dtype == object or getattr(series.dtype, "storage", "") == "python"
        if picked is None:
            nulls, estimated = missing, False
        elif in_objects:
            # Python objects: finding missing values among a million strings is a loop over
            # objects, more than half of a whole frame's profile; counted on the sample (and
            # scaled) instead, and `nulls_estimated` says so.
            nulls, estimated = int(round(missing * rows / len(picked))), True
        else:  # categoricals, booleans: codes or a mask, one cheap pass
            nulls, estimated = int(series.isna().sum()), False
    scale = rows / (len(picked) if picked is not None else max(1, rows))
    out: dict[str, Any] = {"type": "category", "count": rows - nulls, "nulls": nulls}
    if estimated:
        out["nulls_estimated"] = True
    out["distinct_in_sample"] = len(counted)
    out["top"] = {str(k): int(round(v * scale)) for k, v in counted[:TOP_CATEGORIES]}
    out["other"] = int(round(sum(v for _, v in counted[TOP_CATEGORIES:]) * scale))
    return out


def _take(data: Any, picked: Any) -> Any:
    """The sampled rows of a pyarrow ChunkedArray, taken chunk by chunk: ChunkedArray.take
    joins the chunks first, which made it twice as slow on a Parquet file's 8 row batches."""
    import numpy as np
    import pyarrow as pa

    if isinstance(data, pa.Array):
        return data.take(pa.array(picked))
    bounds = np.cumsum([0, *(len(chunk) for chunk in data.chunks)])
    cuts = np.searchsorted(picked, bounds)
    taken = [
        chunk.take(pa.array(picked[cuts[k] : cuts[k + 1]] - bounds[k]))
        for k, chunk in enumerate(data.chunks)
        if cuts[k + 1] > cuts[k]
    ]
    return pa.chunked_array(taken, type=data.type)
