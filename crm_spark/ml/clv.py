"""Customer lifetime value over a horizon: the target, a two-part Spark model, baselines and metrics.

Most customers spend nothing in a horizon, so the model is two parts: P(buy in the horizon) from a
classifier, times E(spend | buy) from a regressor fitted on the customers who bought; predicted
spend = their product. Both take the churn model's preprocessing of ``gold.customer_features``
(impute, one-hot, scale). The target is point in time: the value of the purchases dated in
``(as_of, as_of + horizon]``, features from on or before ``as_of``.

Baselines: last period's spend (the same horizon before the date), the historical rate (net spend
so far / max(tenure, horizon) x horizon) and BG/NBD + Gamma-Gamma (:mod:`crm_spark.ml.btyd`) fitted
on the per-customer purchase summary (:func:`repeat_summary`). :func:`regression_metrics` scores
any of them against the realised spend (on the driver: one row per customer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import GBTRegressor, LinearRegression
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_spark.ml.churn import STD_FEATURES, FeatureColumns, preprocessing
from crm_spark.transforms.features import order_totals, purchases

CUSTOMER = "customer_id"
TARGET, BOUGHT = "target_spend", "bought_in_horizon"
P_PURCHASE, SPEND_IF_BUY, PREDICTED = "p_purchase", "spend_if_buy", "predicted_spend"
ModelKind = Literal["gbt", "linear"]


def purchase_values(orders: DataFrame, order_items: DataFrame, *, count_zero_value_orders: bool = False) -> DataFrame:
    """``customer_id, order_date, value``: every purchase (completed order, :func:`purchases`) with its value."""
    valued = purchases(orders, order_items, count_zero_value_orders=count_zero_value_orders).join(
        order_totals(order_items), "order_id", "left")
    return valued.select(CUSTOMER, "order_date", F.coalesce(F.col("order_value").cast("double"), F.lit(0.0)).alias("value"))


def realised_spend(values: DataFrame, *, after: date, end: date) -> DataFrame:
    """``customer_id, spend``: the value of each customer's purchases dated in ``(after, end]``."""
    window = (F.col("order_date") > F.lit(after)) & (F.col("order_date") <= F.lit(end))
    return values.where(window).groupBy(CUSTOMER).agg(F.sum("value").alias("spend"))


def with_target(features: DataFrame, spend: DataFrame) -> DataFrame:
    """``features`` with ``target_spend`` (0 for a customer who bought nothing) and ``bought_in_horizon``."""
    joined = features.join(spend.withColumnRenamed("spend", TARGET), CUSTOMER, "left").fillna(0.0, subset=[TARGET])
    return joined.withColumn(BOUGHT, (F.col(TARGET) > 0).cast("double"))


@dataclass(frozen=True)
class TwoPart:
    """P(buy) x E(spend | buy), each a fitted pipeline over raw feature rows."""

    buy: PipelineModel
    spend: PipelineModel
    kind: ModelKind


def fit_two_part(rows: DataFrame, columns: FeatureColumns, *, kind: ModelKind, max_iter: int, max_depth: int,
                 seed: int) -> TwoPart:
    """Fit both parts on ``rows`` (features + :func:`with_target`); the spend part on the buyers only."""
    if kind == "gbt":
        classifier = GBTClassifier(featuresCol=STD_FEATURES, labelCol=BOUGHT, maxIter=max_iter, maxDepth=max_depth,
                                   seed=seed)
        regressor = GBTRegressor(featuresCol=STD_FEATURES, labelCol=TARGET, maxIter=max_iter, maxDepth=max_depth,
                                 seed=seed)
    else:
        classifier = LogisticRegression(featuresCol=STD_FEATURES, labelCol=BOUGHT, maxIter=100, tol=1e-4)
        regressor = LinearRegression(featuresCol=STD_FEATURES, labelCol=TARGET, maxIter=100, regParam=0.01)
    buy = Pipeline(stages=[*preprocessing(columns), classifier]).fit(rows)
    spend = Pipeline(stages=[*preprocessing(columns), regressor]).fit(rows.where(F.col(BOUGHT) > 0))
    return TwoPart(buy, spend, kind)


def predict(model: TwoPart, features: DataFrame) -> DataFrame:
    """``customer_id, p_purchase, spend_if_buy, predicted_spend`` (never below 0) for each row of ``features``."""
    p = model.buy.transform(features).select(CUSTOMER, vector_to_array("probability")[1].alias(P_PURCHASE))
    e = model.spend.transform(features).select(CUSTOMER, F.greatest(F.col("prediction"), F.lit(0.0)).alias(SPEND_IF_BUY))
    return p.join(e, CUSTOMER).withColumn(PREDICTED, F.col(P_PURCHASE) * F.col(SPEND_IF_BUY))


def repeat_summary(values: DataFrame, *, end: date) -> DataFrame:
    """BG/NBD's summary per customer from purchases on or before ``end``, in days: ``x`` purchase days
    after the first, ``t_x`` first to last purchase day, ``T`` first purchase day to ``end``, ``m``
    mean value of the repeat purchase days (0 without any)."""
    days = values.where(F.col("order_date") <= F.lit(end)).groupBy(CUSTOMER, "order_date").agg(
        F.sum("value").alias("day_value"))
    first = F.min_by("day_value", "order_date")
    summary = days.groupBy(CUSTOMER).agg(
        (F.count(F.lit(1)) - 1).cast("double").alias("x"),
        F.datediff(F.max("order_date"), F.min("order_date")).cast("double").alias("t_x"),
        F.datediff(F.lit(end), F.min("order_date")).cast("double").alias("T"),
        (F.sum("day_value") - first).alias("_repeat_value"),
    )
    return summary.select(CUSTOMER, "x", "t_x", "T", F.when(F.col("x") > 0, F.col("_repeat_value") / F.col("x"))
                          .otherwise(0.0).alias("m"))


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Spearman rank correlation, normalised Gini of the ranking and predicted / actual total."""
    from scipy.stats import spearmanr

    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    error = predicted - actual
    rho = spearmanr(actual, predicted).statistic if np.ptp(predicted) > 0 and np.ptp(actual) > 0 else 0.0
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error ** 2))),
        "spearman": float(rho),
        "gini": normalised_gini(actual, predicted),
        "total_ratio": float(predicted.sum() / actual.sum()) if actual.sum() else float("nan"),
    }


def normalised_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """How well ``predicted`` orders customers by ``actual`` spend: the Gini of the actual spend ranked by
    the prediction over the Gini of the actual spend ranked by itself (1 = perfect order, 0 = random)."""

    def gini(order_by: np.ndarray) -> float:
        # Customers tied on the ranking share their mean actual spend, so ties do not depend on row order.
        _, group = np.unique(-order_by, return_inverse=True)
        shared = (np.bincount(group, weights=actual) / np.bincount(group))[group]
        ranked = shared[np.argsort(group, kind="stable")]
        total = ranked.sum()
        if total == 0:
            return 0.0
        cumulative = np.cumsum(ranked) / total
        return float(cumulative.sum() / len(actual) - (len(actual) + 1) / (2 * len(actual)))

    best = gini(actual)
    return gini(np.asarray(predicted, dtype=float)) / best if best else 0.0


def decile_calibration(actual: np.ndarray, predicted: np.ndarray) -> list[dict[str, float]]:
    """Customers cut into ten equal groups by predicted spend (1 = highest): mean predicted and actual each."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    order = np.lexsort((np.arange(len(predicted)), -predicted))
    out = []
    for i, part in enumerate(np.array_split(order, 10), start=1):
        if len(part):
            out.append({"decile": float(i), "customers": float(len(part)), "predicted": float(predicted[part].mean()),
                        "actual": float(actual[part].mean())})
    return out
