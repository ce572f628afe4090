"""Drift of tabular inputs read from Parquet files and passed between tasks (issue 14).

A realistic notebook reads a month of orders from a Parquet file with `pd.read_parquet` (a
literal path), filters them, and a second task summarises the DataFrame it gets; the metrics
cell checks the return rate. It runs with `kiln run` on the session's real LocalCluster and a
real SQLite lineage store in tmp_path, and the tests read what a user reads: `kiln run`'s
verdicts, `kiln drift`, `kiln metrics --json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow  # noqa: F401  pandas' Parquet engine: a test dependency, missing it must fail loudly
import pytest

from compiler.cli.main import main
from compiler.compile.api import compile_notebook
from tests.nbutil import make_notebook

pytestmark = pytest.mark.timeout(300)

ORDERS = "data/orders.parquet"


def orders(rows: int = 5000, seed: int = 7) -> pd.DataFrame:
    """A month of web-shop orders: basket value (EUR), items, country, returned or not."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "order_id": np.arange(rows, dtype=np.int64),
            "amount": rng.gamma(2.0, 30.0, rows).round(2),
            "quantity": rng.poisson(2, rows) + 1,
            "country": rng.choice(["FR", "DE", "NO", "ES"], rows, p=[0.4, 0.3, 0.2, 0.1]),
            "returned": rng.random(rows) < 0.08,
        }
    )


def make_orders_notebook(folder: Path, drift_tags: list[str]) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    orders().to_parquet(folder / ORDERS, index=False)
    return make_notebook(
        folder / "orders.ipynb",
        [
            "# md: # Orders, monthly\nRevenue and return rate per country.",
            ("import pandas as pd", ["setup"]),
            ("min_amount = 0.0", ["parameters"]),
            (
                f'orders = pd.read_parquet("./{ORDERS}")\n'
                "orders = orders[orders.amount >= min_amount].reset_index(drop=True)",
                ["task:load", *drift_tags],
            ),
            (
                'revenue = orders.groupby("country")["amount"].sum()\n'
                "return_rate = float(orders.returned.mean())\n"
                "mean_basket = float(orders.amount.mean())",
                ["task:summarise"],
            ),
            ("return_rate\nmean_basket", ["metrics", "check:return_rate<=0.2"]),
        ],
    )


def kiln(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def run(capsys, notebook: Path, scheduler: str, *extra: str) -> tuple[int, str]:
    return kiln(capsys, "run", str(notebook), "--scheduler", scheduler, *extra)


def last_run(capsys, notebook: Path) -> dict:
    code, out = kiln(capsys, "metrics", str(notebook), "--json")
    assert code == 0, out
    return json.loads(out)["runs"][-1]


def drift_of(capsys, run_id: str) -> dict[str, dict]:
    code, out = kiln(capsys, "drift", run_id, "--json")
    assert code == 0, out
    return {i["input"]: i for i in json.loads(out)["inputs"]}


def test_a_parquet_input_with_a_shifted_column_is_drift_and_an_unchanged_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dask_scheduler_address: str, capsys
):
    monkeypatch.chdir(tmp_path)
    notebook = make_orders_notebook(tmp_path, [])
    spec = compile_notebook(notebook).spec
    assert spec["tasks"][0]["datasets"]["reads"] == [f"./{ORDERS}"]

    assert run(capsys, notebook, dask_scheduler_address)[0] == 0
    first = last_run(capsys, notebook)["run_id"]
    # The same file again, every task computed afresh (no cache): profiled again, not drifted.
    code, output = run(capsys, notebook, dask_scheduler_address, "--no-cache")
    assert code == 0 and "drifted" not in output and "flagged" not in output, output
    second = last_run(capsys, notebook)
    assert second["flagged"] is False and second["baseline_run"] == first
    found = drift_of(capsys, second["run_id"])
    # The file (keyed by its path as written, normalised) and the DataFrame artifact `orders`
    # that `load` passes to `summarise` are both profiled and scored.
    assert set(found) == {ORDERS, "load.orders"}
    for key in (ORDERS, "load.orders"):
        assert found[key]["compared"] and found[key]["drifted"] == [], found[key]
        assert found[key]["max_score"] == 0 and found[key]["rows"] == [5000, 5000]
        assert set(found[key]["columns"]) == {
            "order_id",
            "amount",
            "quantity",
            "country",
            "returned",
        }

    # Upstream starts sending more Norwegian orders, in NOK-scaled amounts: two columns shift.
    shifted = orders()
    rng = np.random.default_rng(1)
    shifted["country"] = rng.choice(["FR", "DE", "NO", "ES"], len(shifted), p=[0.2, 0.2, 0.5, 0.1])
    shifted["amount"] = (shifted["amount"] * 3).round(2)
    shifted.to_parquet(tmp_path / ORDERS, index=False)
    code, output = run(capsys, notebook, dask_scheduler_address)
    assert code == 0, output  # a drifted input flags the run, it does not fail it
    assert "succeeded · flagged" in output
    assert f"input {ORDERS} drifted against run {second['run_id']}: amount " in output
    third = last_run(capsys, notebook)
    assert third["flagged"] is True
    verdicts = {v["subject"]: v for v in third["verdicts"] if v["kind"] == "drift"}
    assert verdicts[ORDERS]["drifted_columns"] == ["amount", "country"]
    assert verdicts["load.orders"]["drifted_columns"] == ["amount", "country"]
    assert verdicts[ORDERS]["threshold"] == 0.2  # the default limit: no drift: tag here
    found = drift_of(capsys, third["run_id"])
    scores = found[ORDERS]["columns"]
    assert scores["amount"]["test"] == "ks" and scores["amount"]["score"] > 0.5
    assert scores["country"]["test"] == "cramer_v" and scores["country"]["score"] >= 0.2
    assert scores["quantity"]["score"] == 0 and scores["returned"]["score"] == 0

    code, out = kiln(capsys, "drift", third["run_id"][:10])
    assert code == 0 and f"{ORDERS}: DRIFTED (2 column(s))" in out
    code, out = kiln(capsys, "diff", second["run_id"], third["run_id"])
    assert f"inputs drifted: {ORDERS} (amount" in out


@pytest.mark.parametrize(
    "tags, file_drifted, artifact_drifted",
    [
        # A 30 % rise in basket values scores ~0.15 (Kolmogorov-Smirnov D): under the default
        # limit 0.2, over a strict one set on the file, or on the artifact it becomes.
        ([], False, False),
        ([f"drift:{ORDERS}<0.1"], True, False),
        ([f"drift:./{ORDERS}<0.1", "drift:orders<0.1"], True, True),
        (["drift:orders<0.9"], False, False),
    ],
)
def test_drift_tags_set_the_limit_of_a_parquet_input_and_of_the_frame_it_becomes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dask_scheduler_address: str,
    capsys,
    tags: list[str],
    file_drifted: bool,
    artifact_drifted: bool,
):
    monkeypatch.chdir(tmp_path)
    notebook = make_orders_notebook(tmp_path, tags)
    result = compile_notebook(notebook)
    assert result.ok, [d.render() for d in result.diagnostics]
    assert run(capsys, notebook, dask_scheduler_address)[0] == 0
    rising = orders()
    rising["amount"] = (rising["amount"] * 1.3).round(2)
    rising.to_parquet(tmp_path / ORDERS, index=False)
    code, output = run(capsys, notebook, dask_scheduler_address)
    assert code == 0, output
    latest = last_run(capsys, notebook)
    verdicts = {v["subject"]: v for v in latest["verdicts"] if v["kind"] == "drift"}
    assert (verdicts[ORDERS]["drifted_columns"] == ["amount"]) is file_drifted
    assert (verdicts["load.orders"]["drifted_columns"] == ["amount"]) is artifact_drifted
    assert latest["flagged"] is (file_drifted or artifact_drifted)
    assert 0.1 < verdicts[ORDERS]["value"] < 0.2  # the score itself, whatever the limit


def test_a_drift_tag_naming_no_input_of_its_task_lists_the_ones_it_can_watch(tmp_path: Path):
    notebook = make_orders_notebook(tmp_path, ["drift:orders.parquet<0.2"])
    result = compile_notebook(notebook)
    error = next(d for d in result.diagnostics if d.code == "unknown-drift-input")
    assert error.severity == "error" and error.cell_index == 3
    assert f"inputs it can watch: orders, ./{ORDERS}" in error.message


def test_a_large_parquet_input_is_profiled_from_its_footer_and_a_row_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Past 5,000 rows a profile samples rows; a Parquet file's counts and extremes come from
    its footer, exact. Read through the pandas reader a task calls (the worker's monitor wraps
    it while the task runs): a new month drawn from the same shop is not drift, a month with
    more Norwegian orders in larger baskets is, in exactly those two columns."""
    from compiler.model.drift import profile_drift
    from compiler.runtime.monitor import TaskMonitor

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    rows = 200_000

    def profile_of(frame: pd.DataFrame, **read: object) -> tuple[dict, pd.DataFrame]:
        frame.to_parquet(tmp_path / ORDERS, index=False)
        monitor = TaskMonitor({"task": "load", "tabular_reads": True})
        with monitor.watching():
            seen = pd.read_parquet(f"./{ORDERS}", **read)
        assert not monitor.warnings, monitor.warnings
        return monitor.profiles[ORDERS], seen

    november = orders(rows, seed=7)
    november.loc[::50, "amount"] = np.nan  # 4,000 baskets with no amount recorded
    base, frame = profile_of(november)
    amount = base["columns"]["amount"]
    assert (amount["nulls"], amount["count"]) == (4_000, rows - 4_000)  # exact, not sampled
    assert amount["min"] == pytest.approx(frame["amount"].min(), rel=1e-5)
    assert amount["max"] == pytest.approx(frame["amount"].max(), rel=1e-5)
    assert amount["mean_estimated"] is True
    assert abs(amount["mean"] - frame["amount"].mean()) < 0.05 * frame["amount"].std()
    country = base["columns"]["country"]
    assert country["nulls"] == 0 and "nulls_estimated" not in country
    assert abs(country["top"]["FR"] / rows - 0.4) < 0.02  # the sample's share, scaled

    december, _ = profile_of(orders(rows, seed=8))  # new orders, the same shop
    same = profile_drift(december, base, 0.2)
    assert same["drifted"] == [] and same["max_score"] < 0.1, same["columns"]

    rng = np.random.default_rng(9)
    moved = orders(rows, seed=8)
    moved["country"] = rng.choice(["FR", "DE", "NO", "ES"], rows, p=[0.25, 0.25, 0.4, 0.1])
    moved["amount"] = (moved["amount"] * 1.5).round(2)
    shifted = profile_drift(profile_of(moved)[0], base, 0.2)
    assert sorted(shifted["drifted"]) == ["amount", "country"]

    # A filtered read holds other rows than the footer describes: counted exactly instead.
    filtered, seen = profile_of(november, filters=[("quantity", ">", 1)])
    assert len(seen) < rows and filtered["rows"] == len(seen)
    assert "mean_estimated" not in filtered["columns"]["amount"]
    assert filtered["columns"]["amount"]["nulls"] == int(seen["amount"].isna().sum())
