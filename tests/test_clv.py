"""Stage ``clv``: the point-in-time target, the purchase summary, the metrics, and the stage on the shared run.

The target and the BG/NBD summary are checked on a hand-made timeline; the metrics on arrays
whose answer is known; the stage on the shared end-to-end run against the naive baselines (the
generator's archetypes buy at different, persistent rates, so a model of the features must rank
and size next quarter's spend better than last quarter's spend or the historical rate).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.ml.clv import (
    decile_calibration,
    normalised_gini,
    purchase_values,
    realised_spend,
    regression_metrics,
    repeat_summary,
)
from crm_spark.stages.clv import ClvOutcome, clv_dates, needed_partitions

ORDERS = "order_id string, customer_id string, order_date date, status string"
ITEMS = "order_id string, line_amount decimal(14,2)"


@pytest.fixture(scope="module")
def values(spark: SparkSession) -> DataFrame:
    orders = spark.createDataFrame([
        ("o1", "c1", date(2025, 1, 10), "completed"),
        ("o2", "c1", date(2025, 3, 1), "completed"),   # on the cut date: before the horizon
        ("o3", "c1", date(2025, 3, 2), "completed"),   # first day of the horizon
        ("o4", "c1", date(2025, 5, 30), "completed"),  # last day of the horizon (March 1 + 90 days)
        ("o5", "c1", date(2025, 5, 31), "completed"),  # after it
        ("o6", "c2", date(2025, 3, 15), "cancelled"),  # not a purchase
        ("o7", "c2", date(2025, 2, 1), "completed"),
        ("o8", "c2", date(2025, 2, 1), "completed"),   # two orders on one day: one purchase day
        ("o9", "c3", date(2025, 4, 1), "completed"),   # a zero-value order: not a purchase
    ], ORDERS)
    from decimal import Decimal

    items = spark.createDataFrame([(o, Decimal(v)) for o, v in [
        ("o1", "10"), ("o2", "20"), ("o3", "30"), ("o4", "40"), ("o4", "5"), ("o5", "50"), ("o6", "60"),
        ("o7", "7"), ("o8", "8"), ("o9", "0")]], ITEMS)
    return purchase_values(orders, items).cache()


def test_the_target_is_the_spend_inside_the_horizon_only(values: DataFrame) -> None:
    got = {r["customer_id"]: r["spend"] for r in realised_spend(values, after=date(2025, 3, 1), end=date(2025, 5, 30)).collect()}

    assert got == {"c1": pytest.approx(30 + 45)}  # o3 and o4; c2's cancellation and c3's zero order are not spend


def test_repeat_summary_counts_purchase_days_after_the_first(values: DataFrame) -> None:
    got = {r["customer_id"]: (r["x"], r["t_x"], r["T"], r["m"]) for r in repeat_summary(values, end=date(2025, 3, 1)).collect()}

    # c1: purchase days Jan 10 and Mar 1 (one repeat of 20); c2: one day (Feb 1, 7 + 8): no repeat.
    assert got == {"c1": (1.0, 50.0, 50.0, pytest.approx(20.0)), "c2": (0.0, 0.0, 28.0, 0.0)}


def test_dates_and_needed_feature_partitions(settings) -> None:  # noqa: ANN001 - conftest's Settings
    d = clv_dates(date(2025, 6, 30), settings.clv)
    assert (d.train, d.evaluate, d.score) == (date(2025, 1, 1), date(2025, 4, 1), date(2025, 6, 30))
    assert needed_partitions(settings, date(2025, 6, 30), "run") == {
        "gold.customer_features": [date(2025, 1, 1), date(2025, 4, 1), date(2025, 6, 30)]}


def test_metrics_on_known_answers() -> None:
    actual = np.array([0.0, 0.0, 10.0, 30.0, 60.0])
    perfect = regression_metrics(actual, actual)
    assert perfect["mae"] == 0 and perfect["rmse"] == 0 and perfect["gini"] == pytest.approx(1.0)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["total_ratio"] == pytest.approx(1.0)
    reversed_order = regression_metrics(actual, actual[::-1])
    assert reversed_order["gini"] < 0 and reversed_order["spearman"] < 0
    flat = regression_metrics(actual, np.full(5, 20.0))
    assert flat["mae"] == pytest.approx(np.mean(np.abs(actual - 20))) and flat["spearman"] == 0.0
    assert flat["gini"] == pytest.approx(0.0)  # a tie says nothing, in whatever order the rows come
    assert normalised_gini(actual[::-1], np.zeros(5)) == pytest.approx(0.0)
    assert normalised_gini(actual, np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(1.0)
    deciles = decile_calibration(np.arange(20.0), np.arange(20.0))
    assert [d["decile"] for d in deciles] == list(range(1, 11))
    assert deciles[0]["actual"] == pytest.approx(18.5) and deciles[-1]["predicted"] == pytest.approx(0.5)


# -- the stage on the shared end-to-end run ---------------------------------------------------------
@pytest.fixture(scope="module")
def clv_run(e2e) -> tuple[DataFrame, ClvOutcome, dict[str, float]]:  # noqa: ANN001 - conftest's EndToEnd
    result = e2e.results["clv"]
    assert result.skipped is None, result.skipped
    return e2e.lake.read("gold.clv"), result.outcome, dict(result.metrics)


@pytest.mark.slow
def test_every_customer_of_the_date_gets_a_value(e2e, clv_run) -> None:  # noqa: ANN001
    clv, outcome, _ = clv_run
    features = e2e.lake.read("gold.customer_features").where(F.col("as_of_date") == F.lit(outcome.dates.score))
    clv = clv.where(F.col("as_of_date") == F.lit(outcome.dates.score))

    assert clv.count() == features.count()
    assert clv.join(features, "customer_id", "left_anti").count() == 0
    margin = e2e.settings.clv.margin
    assert clv.where(F.abs(F.col("clv") - F.col("predicted_spend") * margin) > 1e-6).count() == 0
    by_decile = {r["value_decile"]: r["mean"] for r in clv.groupBy("value_decile").agg(
        F.avg("predicted_spend").alias("mean")).collect()}
    assert sorted(by_decile) == list(range(1, 11))
    assert all(by_decile[i] >= by_decile[i + 1] for i in range(1, 10))  # decile 1 = highest predicted spend


@pytest.mark.slow
def test_clv_beats_the_naive_baselines(clv_run) -> None:  # noqa: ANN001
    _, outcome, metrics = clv_run
    assert metrics["evaluated_customers"] >= 1000
    for baseline in ("last_period", "historical_rate"):
        assert metrics["mae"] < metrics[f"baseline.{baseline}.mae"], baseline
        assert metrics["spearman"] > metrics[f"baseline.{baseline}.spearman"], baseline
    assert 0.5 < metrics["total_ratio"] < 2.0
    assert "baseline.bgnbd.mae" in metrics and metrics["baseline.bgnbd.spearman"] > 0
    top, bottom = outcome.calibration[0], outcome.calibration[-1]
    assert top["actual"] > bottom["actual"]  # the top predicted decile really spends more


@pytest.mark.slow
def test_the_mlflow_run_holds_the_baselines_and_figures(e2e) -> None:  # noqa: ANN001
    import mlflow

    from crm_spark.tracking import tracking_uri

    result = e2e.results["clv"]
    client = mlflow.MlflowClient(tracking_uri(e2e.settings))
    run = client.get_run(result.mlflow_run_id)

    assert run.data.metrics["mae"] == pytest.approx(result.metrics["mae"])
    assert "baseline.bgnbd.spearman" in run.data.metrics
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/clv_decile_calibration.png", "figures/clv_predicted_vs_actual.png"} <= figures
