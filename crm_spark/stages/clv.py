"""Stage ``clv``: customer lifetime value, predicted spend over a horizon, against three baselines.

For a scoring date D and horizon h (``clv.horizon_days``): the two-part model (P(buy) x E(spend |
buy), :mod:`crm_spark.ml.clv`) is trained on ``gold.customer_features`` at T = D - 2h with the
spend of (T, T + h] as target, evaluated on the features at T' = D - h against the realised spend
of (T', D] beside three baselines measured on the same customers (last period's spend, the
historical rate, BG/NBD + Gamma-Gamma fitted on the purchases up to T'), and then scores D.
Missing feature dates are computed first (the features stage's backfill, as churn does).
``gold.clv`` gets one row per customer of the features at D: predicted spend, P(purchase),
CLV = margin x predicted spend, value decile; one MLflow run logs the metrics of the model and the
baselines, the decile calibration and two figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_spark.config import ClvSettings, Settings
from crm_spark.contracts import table
from crm_spark.errors import SourceError
from crm_spark.ml import churn as features_ml
from crm_spark.ml import redundant_features, sized
from crm_spark.ml.btyd import fit_bgnbd, fit_gamma_gamma
from crm_spark.ml.clv import (
    CUSTOMER,
    P_PURCHASE,
    PREDICTED,
    TARGET,
    decile_calibration,
    fit_two_part,
    predict,
    purchase_values,
    realised_spend,
    regression_metrics,
    repeat_summary,
    with_target,
)
from crm_spark.stages import StageContext, StageResult

log = logging.getLogger(__name__)

STAGE = "clv"
FEATURES, ORDERS, ORDER_ITEMS = "gold.customer_features", "silver.orders", "silver.order_items"
CLV_TABLE = "gold.clv"
PARTITION = "as_of_date"
BASELINES = ("last_period", "historical_rate", "bgnbd")


@dataclass(frozen=True)
class ClvDates:
    train: date  # T: features, target = spend of (T, T + h]
    evaluate: date  # T' = T + h: features, target = spend of (T', D]
    score: date  # D


@dataclass(frozen=True)
class ClvOutcome:
    dates: ClvDates
    evaluation: dict[str, dict[str, float]]  # "model" and each baseline -> metrics
    calibration: list[dict[str, float]]  # the model's decile calibration on the evaluation rows
    features: tuple[str, ...]


def clv_dates(as_of: date, cfg: ClvSettings) -> ClvDates:
    h = timedelta(days=cfg.horizon_days)
    return ClvDates(train=as_of - 2 * h, evaluate=as_of - h, score=as_of)


def needed_partitions(settings: Settings, as_of: date, entry: str) -> dict[str, list[date]]:
    """The ``gold.customer_features`` dates a run needs: T, T' and D."""
    d = clv_dates(as_of, settings.clv)
    return {FEATURES: [d.train, d.evaluate, d.score]}


def run(ctx: StageContext, as_of: date) -> StageResult:
    cfg = ctx.settings.clv
    dates = clv_dates(as_of, cfg)
    log.info("[clv] train as of %s, evaluate as of %s, score as of %s (horizon %d days)", dates.train,
             dates.evaluate, dates.score, cfg.horizon_days)
    latest = ctx.lake.max_value(ORDERS, "order_date")
    if latest is None or latest < dates.score:
        raise SourceError(
            f"{ORDERS} ends on {latest}: the evaluation target (spend in ({dates.evaluate}, {dates.score}]) needs "
            f"orders up to {dates.score}; use --as-of {latest} or earlier")
    features = ctx.read(FEATURES)
    values = purchase_values(ctx.read(ORDERS), ctx.read(ORDER_ITEMS),
                             count_zero_value_orders=ctx.settings.features.count_zero_value_orders).cache()
    cached: list[DataFrame] = [values]
    try:
        def rows(at: date, *, target: bool) -> DataFrame:
            frame = features.where(F.col(PARTITION) == F.lit(at))
            if target:
                frame = with_target(frame, realised_spend(values, after=at, end=at + timedelta(days=cfg.horizon_days)))
            return frame

        train = rows(dates.train, target=True).cache()
        cached.append(train)
        n_train = train.count()
        buyers = train.where(F.col(TARGET) > 0).count()
        if n_train == 0 or buyers < 2:
            return StageResult(STAGE, skipped=f"{buyers} of {n_train} customers at {dates.train} bought in the "
                                              f"following {cfg.horizon_days} days: too few to train on")
        candidates = features_ml.feature_columns()
        left_out = redundant_features(train, sorted(candidates.all, key=lambda c: c != "tenure_days"))
        columns = features_ml.combined(candidates, without=list(left_out))
        notes = [f"{c} {why}: left out of the model" for c, why in left_out.items()]
        model = fit_two_part(sized(train, n_train), columns, kind=cfg.model, max_iter=cfg.gbt_max_iter,
                             max_depth=cfg.gbt_max_depth, seed=cfg.seed)
        evaluation, calibration, frame, baseline_note = _evaluate(model, rows(dates.evaluate, target=True), values,
                                                                  dates, cfg)
        notes += [baseline_note] if baseline_note else []
        scored = _scored(model, rows(dates.score, target=False), cfg, as_of=as_of, cached=cached)
        ctx.publish(CLV_TABLE, scored, partition={PARTITION: as_of})
        metrics = dict(evaluation["model"])
        for name in BASELINES:
            metrics.update({f"baseline.{name}.{m}": v for m, v in evaluation[name].items()})
        metrics["evaluated_customers"] = float(len(frame))
        log.info("[clv] holdout %s..%s: MAE model %.2f, last period %.2f, historical rate %.2f, BG/NBD %.2f; "
                 "Spearman %.3f / %.3f / %.3f / %.3f", dates.evaluate, dates.score,
                 *[evaluation[k]["mae"] for k in ("model", *BASELINES)],
                 *[evaluation[k]["spearman"] for k in ("model", *BASELINES)])
        run_id = _log_run(ctx, as_of=as_of, cfg=cfg, dates=dates, metrics=metrics, calibration=calibration,
                          frame=frame, columns=columns.all)
    finally:
        for df in cached:
            df.unpersist()
    return StageResult(STAGE, notes=tuple(notes), metrics=metrics, mlflow_run_id=run_id,
                       outcome=ClvOutcome(dates, evaluation, calibration, columns.all))


def _evaluate(model: Any, rows: DataFrame, values: DataFrame, dates: ClvDates, cfg: ClvSettings) -> tuple[
        dict[str, dict[str, float]], list[dict[str, float]], Any, str | None]:
    """The model and the baselines on the customers of T', against their spend in (T', D] (on the driver:
    one row per customer; see the README's limits for bases of tens of millions)."""
    h = cfg.horizon_days
    last = realised_spend(values, after=dates.evaluate - timedelta(days=h), end=dates.evaluate)
    rate = F.col("monetary") / F.greatest(F.col("tenure_days").cast("double"), F.lit(float(h))) * F.lit(float(h))
    frame = (
        predict(model, rows).join(rows.select(CUSTOMER, TARGET, rate.alias("historical_rate")), CUSTOMER)
        .join(last.withColumnRenamed("spend", "last_period"), CUSTOMER, "left")
        .join(repeat_summary(values, end=dates.evaluate), CUSTOMER, "left")
        .withColumn("has_purchase", F.col("T").isNotNull())
        .fillna(0.0, subset=["last_period", "x", "t_x", "T", "m"])
        .select(CUSTOMER, TARGET, PREDICTED, "last_period", F.greatest("historical_rate", F.lit(0.0)).alias(
            "historical_rate"), "has_purchase", "x", "t_x", "T", "m")
        .toPandas()
    )
    frame = frame.sort_values(CUSTOMER, kind="stable").reset_index(drop=True)  # the same rows, the same order
    frame["bgnbd"], note = _bgnbd(frame, horizon=float(h), sample=cfg.bgnbd_sample, seed=cfg.seed)
    actual = frame[TARGET].to_numpy()
    evaluation = {"model": regression_metrics(actual, frame[PREDICTED].to_numpy())}
    for name in BASELINES:
        evaluation[name] = regression_metrics(actual, frame[name].to_numpy())
    return evaluation, decile_calibration(actual, frame[PREDICTED].to_numpy()), frame, note


_MIN_BGNBD_BUYERS = 10


def _bgnbd(frame: Any, *, horizon: float, sample: int, seed: int) -> tuple[np.ndarray, str | None]:
    """BG/NBD x Gamma-Gamma expected spend over the horizon for the buyers of ``frame`` (0 for customers
    without a purchase yet: the model starts at the first purchase), fitted on at most ``sample`` buyers
    (``frame`` sorted by customer, so the sample is reproducible); zeros and a note when it cannot be fitted."""
    buyers = frame["has_purchase"].to_numpy(dtype=bool)
    out = np.zeros(len(frame))
    fit_rows = frame[buyers]
    if len(fit_rows) < _MIN_BGNBD_BUYERS:
        return out, f"BG/NBD baseline not fitted: {len(fit_rows)} customers had bought by then (at least {_MIN_BGNBD_BUYERS})"
    if len(fit_rows) > sample:
        fit_rows = fit_rows.sample(n=sample, random_state=seed)
    try:
        purchases = fit_bgnbd(fit_rows["x"].to_numpy(), fit_rows["t_x"].to_numpy(), fit_rows["T"].to_numpy())
        spend = fit_gamma_gamma(fit_rows["x"].to_numpy(), fit_rows["m"].to_numpy())
    except ValueError as exc:
        return out, f"BG/NBD baseline not fitted: {exc}"
    x, t_x, big_t, m = (frame.loc[buyers, c].to_numpy() for c in ("x", "t_x", "T", "m"))
    out[buyers] = purchases.expected_purchases(horizon, x, t_x, big_t) * spend.expected_value(x, m)
    return out, None


def _scored(model: Any, features: DataFrame, cfg: ClvSettings, *, as_of: date, cached: list[DataFrame]) -> DataFrame:
    """``gold.clv`` rows of the scoring date (cached). Customers with equal predicted spend share a decile."""
    scored = predict(model, features).cache()
    cached.append(scored)
    # Deciles from approximate quantiles (one job, no single-partition sort): above k of the 9 cuts -> decile 10 - k.
    cuts = scored.approxQuantile(PREDICTED, [i / 10 for i in range(1, 10)], 0.001)
    decile = F.lit(10) - sum((F.col(PREDICTED) > F.lit(c)).cast("int") for c in cuts)
    rows = table(CLV_TABLE).conform(scored.select(
        CUSTOMER, F.lit(as_of).cast("date").alias(PARTITION), PREDICTED, P_PURCHASE,
        (F.col(PREDICTED) * F.lit(cfg.margin)).alias("clv"), decile.alias("value_decile"),
        F.lit(cfg.horizon_days).alias("horizon_days"), F.lit(cfg.model).alias("model_kind"),
    )).cache()
    cached.append(rows)
    return rows


def _log_run(ctx: StageContext, *, as_of: date, cfg: ClvSettings, dates: ClvDates, metrics: dict[str, float],
             calibration: list[dict[str, float]], frame: Any, columns: tuple[str, ...]) -> str:
    import pandas as pd

    tracker = ctx.tracker
    params = {**cfg.model_dump(mode="json"), "train_as_of": dates.train.isoformat(),
              "evaluate_as_of": dates.evaluate.isoformat(), "features_used": list(columns)}
    with tracker.start_run(STAGE, as_of=as_of, inputs=ctx.input_versions(), params=params,
                           quality=ctx.quality_summary()) as run:
        tracker.log_metrics({**metrics, **ctx.written_rows()})
        tracker.log_text(pd.DataFrame(calibration).to_csv(index=False), "decile_calibration.csv")
        tracker.log_figure(_calibration_figure(calibration, cfg), "clv_decile_calibration.png")
        tracker.log_figure(_scatter_figure(frame, cfg), "clv_predicted_vs_actual.png")
        return str(run.info.run_id)


def _calibration_figure(calibration: list[dict[str, float]], cfg: ClvSettings) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.subplots()
    deciles = [int(c["decile"]) for c in calibration]
    width = 0.4
    ax.bar([d - width / 2 for d in deciles], [c["predicted"] for c in calibration], width, label="predicted")
    ax.bar([d + width / 2 for d in deciles], [c["actual"] for c in calibration], width, label="actual")
    ax.set_xticks(deciles)
    ax.set_xlabel("decile of predicted spend (1 = highest)")
    ax.set_ylabel(f"mean spend per customer over {cfg.horizon_days} days")
    ax.set_title("CLV decile calibration on the holdout", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _scatter_figure(frame: Any, cfg: ClvSettings) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    ax.scatter(frame[PREDICTED] + 1, frame[TARGET] + 1, s=8, alpha=0.4, edgecolors="none")
    top = float(max(frame[PREDICTED].max(), frame[TARGET].max()) + 1)
    ax.plot([1, top], [1, top], color="grey", linewidth=1, label="predicted = actual")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"predicted spend over {cfg.horizon_days} days + 1 (log scale)")
    ax.set_ylabel(f"actual spend over {cfg.horizon_days} days + 1 (log scale)")
    ax.set_title(f"Predicted vs actual spend, {len(frame):,} customers", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
