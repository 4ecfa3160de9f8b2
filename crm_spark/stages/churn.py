"""Stage ``churn``: labels, a tuned logistic regression (and a GBT challenger), time-based
evaluation, the MLflow registry's champion alias, and ``gold.churn_scores``.

Dates. D is the scoring date (``--as-of``; default the latest ``gold.customer_features`` date).
The model is evaluated at T' = D - ``churn.eval_offset_days``, whose labels end at D and so are
known, and trained at T = T' - ``churn.train_offset_days`` (both offsets default to
``churn.horizon_days``). Each date's rows are the customers of ``gold.customer_features`` at
that date (buyers only, by default) with their label: no completed order in the horizon after
the date (``silver.orders``), or the user's ``silver.churn_labels`` (``churn.label_source:
column``). Features come from the date's partition, so nothing after the date reaches them.

Missing feature partitions. When ``gold.customer_features`` lacks T, T' or D, the stage
computes them with the features stage's backfill (:func:`crm_spark.stages.features.run_dates`,
one pass, one commit) and says so in its notes; with ``churn.backfill_features: false`` it stops
with a SourceError naming the ``crm-spark features --as-of`` runs to do first.

Flow of :func:`run`: gate and write the exact train + eval rows to ``gold.churn_training``
(partition ``run_as_of_date`` = D); fit the tuned LR (and the GBT); evaluate each on T'; in one
MLflow run log metrics, curves, the tuning grid and every model, registered as a new version
of ``crm-spark-churn``; move the alias ``champion`` to a new version only if it beats the
current champion *re-evaluated on the same T' rows* by ``churn.promotion_metric`` (the first
model becomes champion); then score D with the champion into ``gold.churn_scores``.
:func:`score` is the scoring step alone (``crm-spark churn --score``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_spark.config import ChurnSettings
from crm_spark.errors import SourceError
from crm_spark.lake import Lake, WriteResult
from crm_spark.ml import churn as ml
from crm_spark.schemas import CHURN_SCORES_DDL, CHURN_TRAINING_DDL, conform
from crm_spark.stages import StageContext, StageResult

__all__ = ["MODEL_NAME", "CHAMPION", "ChurnDates", "churn_dates", "run", "score"]

log = logging.getLogger(__name__)

STAGE = "churn"
MODEL_NAME = "crm-spark-churn"
CHAMPION = "champion"
FEATURES, ORDERS, LABELS = "gold.customer_features", "silver.orders", "silver.churn_labels"
TRAINING, SCORES = "gold.churn_training", "gold.churn_scores"
BASELINE_FEATURE = "recency_days"
_TOP_FEATURES = 3


@dataclass(frozen=True)
class ChurnDates:
    """T (train), T' (evaluate) and D (score)."""

    train: date
    evaluate: date
    score: date

    def as_params(self) -> dict[str, str]:
        return {"train_as_of": self.train.isoformat(), "eval_as_of": self.evaluate.isoformat(), "score_as_of": self.score.isoformat()}


def churn_dates(score_date: date, cfg: ChurnSettings) -> ChurnDates:
    """T' = D - eval offset (labels end by D); T = T' - train offset (training labels end by T')."""
    evaluate = score_date - timedelta(days=cfg.eval_offset)
    return ChurnDates(train=evaluate - timedelta(days=cfg.train_offset), evaluate=evaluate, score=score_date)


@dataclass
class _Candidate:
    kind: str
    model: PipelineModel
    evaluation: ml.Evaluation
    params: dict[str, Any]
    version: int | None = None


# -- entry points ------------------------------------------------------------------------------
def run(ctx: StageContext) -> StageResult:
    """Train, evaluate, register, maybe promote, and score (see the module docstring)."""
    cfg = ctx.settings.churn
    label_table = ORDERS if cfg.label_source == "computed" else LABELS
    if not ctx.lake.exists(label_table):
        return StageResult(STAGE, skipped=f"{label_table} not found: run ingest and refine first")
    score_date = _score_date(ctx)
    if score_date is None:
        return StageResult(STAGE, skipped=f"{FEATURES} not found and no --as-of given: run the features stage first")
    dates = churn_dates(score_date, cfg)
    log.info("[churn] train as of %s, evaluate as of %s, score as of %s", dates.train, dates.evaluate, dates.score)
    backfill, notes = _ensure_features(ctx, [dates.train, dates.evaluate, dates.score])

    versions = {FEATURES: ctx.lake.version(FEATURES), label_table: ctx.lake.version(label_table)}
    features = ctx.lake.read(FEATURES, version=versions[FEATURES])
    label_frame = ctx.lake.read(label_table, version=versions[label_table])
    if cfg.label_source == "computed":
        _check_label_coverage(label_frame, dates)

    train = _labeled(features, label_frame, as_of=dates.train, cfg=cfg).cache()
    evaluate = _labeled(features, label_frame, as_of=dates.evaluate, cfg=cfg).cache()
    cached: list[DataFrame] = [train, evaluate]
    try:
        counts = {"train": ml.label_counts(train), "eval": ml.label_counts(evaluate)}
        _check_classes(counts, dates, cfg)
        training_write, training_quality = _write_training(ctx, train, evaluate, dates=dates, cfg=cfg)
        versions[TRAINING] = training_write.version

        weighted = _weighted(train, counts["train"], cfg).cache()
        cached.append(weighted)
        candidates = _fit_candidates(weighted, evaluate, cfg, cached)
        baseline = ml.roc_auc(evaluate.withColumn("_recency", F.col(BASELINE_FEATURE).cast("double")), score_col="_recency")
        log.info(
            "[churn] %s; recency baseline ROC-AUC %.3f",
            ", ".join(f"{c.kind} {cfg.promotion_metric} {c.evaluation.metrics[cfg.promotion_metric]:.4f}" for c in candidates),
            baseline,
        )
        outcome = _track(ctx, candidates, evaluate, dates=dates, counts=counts, versions=versions, baseline=baseline,
                         quality=training_quality, cfg=cfg, cached=cached)
    finally:
        for df in cached:
            df.unpersist()
    return StageResult(
        STAGE,
        writes=(*backfill, training_write, outcome["scores_write"]),
        notes=(*notes, *outcome["notes"]),
        details={
            **dates.as_params(),
            "rows": {k: v["rows"] for k, v in counts.items()},
            "churn_rate": {k: v["positives"] / v["rows"] for k, v in counts.items()},
            "metrics": {c.kind: c.evaluation.metrics for c in candidates},
            "baseline_recency_roc_auc": baseline,
            "versions": {c.kind: c.version for c in candidates},
            "decisions": outcome["decisions"],
            "champion_version": outcome["champion_version"],
            "mlflow_run_id": outcome["run_id"],
        },
    )


def score(ctx: StageContext) -> StageResult:
    """Scoring only (``crm-spark churn --score``): the registered champion scores D into ``gold.churn_scores``."""
    import mlflow

    cfg = ctx.settings.churn
    score_date = _score_date(ctx)
    if score_date is None:
        return StageResult(STAGE, skipped=f"{FEATURES} not found and no --as-of given: run the features stage first")
    backfill, notes = _ensure_features(ctx, [score_date])
    champion = _load_champion(ctx)
    if champion is None:
        raise SourceError(
            f"no '{CHAMPION}' version of model {MODEL_NAME} in {ctx.tracker.uri}: "
            f"train one first with `crm-spark churn --as-of {score_date.isoformat()}`"
        )
    version, model = champion
    features_version = ctx.lake.version(FEATURES)
    features = ctx.lake.read(FEATURES, version=features_version)
    inputs = {FEATURES: features_version}
    params = {"mode": "score", "score_as_of": score_date.isoformat(), "model_version": version}
    with ctx.tracker.start_run(STAGE, as_of=score_date, inputs=inputs, params=params) as active:
        mlflow.set_tags({"crm_spark.churn.mode": "score", "crm_spark.churn.model_version": str(version)})
        write, summary = _publish_scores(ctx, model, version, features, as_of=score_date, cfg=cfg)
        ctx.tracker.log_json(summary.pop("quality"), "quality_scores.json")
        mlflow.log_metrics({**ml.prefixed("scores", summary), "scores.table_version": float(write.version)})
        run_id = str(active.info.run_id)
    return StageResult(
        STAGE,
        writes=(*backfill, write),
        notes=notes,
        details={"score_as_of": score_date.isoformat(), "model_version": version, "scores": summary, "mlflow_run_id": run_id},
    )


# -- inputs ------------------------------------------------------------------------------------
def _score_date(ctx: StageContext) -> date | None:
    if ctx.as_of is not None:
        return ctx.as_of
    if not ctx.lake.exists(FEATURES):
        return None
    return ctx.lake.read(FEATURES).agg(F.max("as_of_date")).first()[0]


def _ensure_features(ctx: StageContext, dates: Sequence[date]) -> tuple[tuple[WriteResult, ...], tuple[str, ...]]:
    """Make sure ``gold.customer_features`` holds every date: backfill the missing ones or say how."""
    wanted = sorted(set(dates))
    present: set[date] = set()
    if ctx.lake.exists(FEATURES):
        rows = ctx.lake.read(FEATURES, partition={"as_of_date": wanted}).select("as_of_date").distinct().collect()
        present = {r[0] for r in rows}
    missing = [d for d in wanted if d not in present]
    if not missing:
        return (), ()
    shown = ", ".join(d.isoformat() for d in missing)
    if not ctx.settings.churn.backfill_features:
        commands = "; ".join(f"crm-spark features --as-of {d.isoformat()}" for d in missing)
        raise SourceError(
            f"{FEATURES} has no rows as of {shown}: run `{commands}` first, or set churn.backfill_features: true"
        )
    from crm_spark.stages.features import run_dates

    log.info("[churn] %s lacks %s: computing them (churn.backfill_features)", FEATURES, shown)
    result = run_dates(ctx, missing)
    if result.skipped:
        raise SourceError(f"cannot compute {FEATURES} as of {shown}: {result.skipped}")
    return result.writes, (f"computed {FEATURES} as of {shown} (churn.backfill_features)", *result.notes)


def _check_label_coverage(orders: DataFrame, dates: ChurnDates) -> None:
    """Computed labels at T' need orders up to D; a lake that ends earlier would call everyone churned."""
    latest = orders.agg(F.max("order_date")).first()[0]
    if latest is None or latest < dates.score:
        raise SourceError(
            f"{ORDERS} ends on {latest}: the labels of the evaluation date {dates.evaluate} need orders up to "
            f"{dates.score}; use --as-of {latest} or earlier"
        )


def _labeled(features: DataFrame, labels: DataFrame, *, as_of: date, cfg: ChurnSettings) -> DataFrame:
    at = ml.population(features.where(F.col("as_of_date") == F.lit(as_of)), who=cfg.population)
    if cfg.label_source == "computed":
        return ml.computed_labels(at, labels, horizon_days=cfg.horizon_days)
    return ml.provided_labels(at, labels, horizon_days=cfg.horizon_days)


def _check_classes(counts: dict[str, dict[str, float]], dates: ChurnDates, cfg: ChurnSettings) -> None:
    for split, as_of in (("train", dates.train), ("eval", dates.evaluate)):
        rows, positives = counts[split]["rows"], counts[split]["positives"]
        if positives == 0 or positives == rows:
            raise SourceError(
                f"the {split} set as of {as_of} has {rows:.0f} customers and {positives:.0f} churners: a churn model needs "
                f"both classes (check churn.label_source={cfg.label_source}, churn.population={cfg.population}, "
                f"churn.horizon_days={cfg.horizon_days} and the --as-of date)"
            )


def _write_training(
    ctx: StageContext, train: DataFrame, evaluate: DataFrame, *, dates: ChurnDates, cfg: ChurnSettings
) -> tuple[WriteResult, dict[str, Any]]:
    """The exact train and eval rows, gated, in ``gold.churn_training`` partition ``run_as_of_date`` = D."""
    rows = train.withColumn("split", F.lit("train")).unionByName(evaluate.withColumn("split", F.lit("eval")))
    rows = rows.withColumn("run_as_of_date", F.lit(dates.score)).withColumn("label_source", F.lit(cfg.label_source))
    table = conform(rows, CHURN_TRAINING_DDL)
    report = ctx.gate.check(TRAINING, table, as_of=dates.score)
    write = ctx.lake.overwrite(TRAINING, table, partition={"run_as_of_date": dates.score}, partition_by=["run_as_of_date"])
    return write, {f"{TRAINING}.{k}": v for k, v in report.summary().items() if k != "table"}


# -- models ------------------------------------------------------------------------------------
def _weighted(train: DataFrame, counts: dict[str, float], cfg: ChurnSettings) -> DataFrame:
    if cfg.class_weight == "none":
        return ml.with_class_weight(train, negative=1.0, positive=1.0)
    negative, positive = ml.balanced_weights(rows=counts["rows"], positives=counts["positives"])
    return ml.with_class_weight(train, negative=negative, positive=positive)


def _fit_candidates(train: DataFrame, evaluate: DataFrame, cfg: ChurnSettings, cached: list[DataFrame]) -> list[_Candidate]:
    weighted = cfg.class_weight != "none"
    points = len(cfg.reg_params) * len(cfg.elastic_net_params)
    if points == 1:  # nothing to choose between: fit once, no folds
        log.info("[churn] fitting logistic regression (one grid point: no %s)", cfg.tuning)
        single = ml.logistic_regression(max_iter=cfg.max_iter, weighted=weighted)
        single = single.setRegParam(cfg.reg_params[0]).setElasticNetParam(cfg.elastic_net_params[0])
        best, grid = ml.churn_pipeline(single).fit(train), []
    else:
        tuner = ml.tuned_logistic_regression(
            max_iter=cfg.max_iter, weighted=weighted, tuning=cfg.tuning, reg_params=cfg.reg_params,
            elastic_net_params=cfg.elastic_net_params, folds=cfg.folds, train_ratio=cfg.train_ratio, seed=cfg.seed,
            metric="areaUnderPR" if cfg.promotion_metric == "pr_auc" else "areaUnderROC",
        )
        log.info("[churn] tuning logistic regression (%s over %d grid points)", cfg.tuning, points)
        tuned = tuner.fit(train)
        grid, best = ml.tuning_results(tuned), tuned.bestModel
    lr = best.stages[-1]
    lr_params = {"regParam": float(lr.getRegParam()), "elasticNetParam": float(lr.getElasticNetParam()), "grid": grid}
    candidates = [_Candidate("logistic_regression", best, _evaluate(best, evaluate, cfg, cached), lr_params)]
    if cfg.challenger == "gbt":
        log.info("[churn] fitting the GBT challenger (%d trees of depth %d)", cfg.gbt_max_iter, cfg.gbt_max_depth)
        gbt = ml.churn_pipeline(
            ml.gbt_classifier(max_iter=cfg.gbt_max_iter, max_depth=cfg.gbt_max_depth, step_size=cfg.gbt_step_size,
                              seed=cfg.seed, weighted=weighted)
        ).fit(train)
        gbt_params = {"maxIter": cfg.gbt_max_iter, "maxDepth": cfg.gbt_max_depth, "stepSize": cfg.gbt_step_size}
        candidates.append(_Candidate("gbt", gbt, _evaluate(gbt, evaluate, cfg, cached), gbt_params))
    return candidates


def _evaluate(model: PipelineModel, evaluate: DataFrame, cfg: ChurnSettings, cached: list[DataFrame]) -> ml.Evaluation:
    scored = ml.score(model, evaluate).select("customer_id", ml.LABEL, ml.PROBABILITY).cache()
    cached.append(scored)
    return ml.evaluate(scored, bins=cfg.threshold_bins, rule=cfg.threshold_rule, target_recall=cfg.target_recall)


# -- registry ----------------------------------------------------------------------------------
def _load_champion(ctx: StageContext) -> tuple[int, PipelineModel] | None:
    """The version the alias points at and its Spark model, or None when there is no champion yet."""
    import mlflow.spark
    from mlflow.exceptions import MlflowException

    try:
        found = ctx.tracker.client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    version = int(found.version)
    # The artifact URI from this tracker's registry, not models:/ (which reads MLflow's global registry URI).
    source = ctx.tracker.client.get_model_version_download_uri(MODEL_NAME, str(version))
    log.info("[churn] loading %s version %d (%s) from %s", MODEL_NAME, version, CHAMPION, source)
    return version, mlflow.spark.load_model(source)


def _log_model(model: PipelineModel, *, name: str) -> int:
    """Log and register a fitted pipeline; returns its version.

    Not ``Tracker.log_spark_model``: that lets MLflow infer pip requirements, which starts a
    second Python process that loads the model in a new Spark session (over a minute); the
    requirement of a Spark ML model is pyspark itself.
    """
    import mlflow.spark
    import pyspark

    info = mlflow.spark.log_model(
        model, artifact_path=name, registered_model_name=MODEL_NAME, pip_requirements=[f"pyspark=={pyspark.__version__}"]
    )
    return int(info.registered_model_version)


def _track(
    ctx: StageContext,
    candidates: list[_Candidate],
    evaluate: DataFrame,
    *,
    dates: ChurnDates,
    counts: dict[str, dict[str, float]],
    versions: dict[str, int],
    baseline: float,
    quality: dict[str, Any],
    cfg: ChurnSettings,
    cached: list[DataFrame],
) -> dict[str, Any]:
    """One MLflow run: metrics, figures, models, champion decisions, then the scores of D."""
    import mlflow

    metric = cfg.promotion_metric
    tracker = ctx.tracker
    params = {
        **dates.as_params(),
        **{f"churn.{k}": v for k, v in cfg.model_dump(mode="json").items()},
        **{f"{c.kind}.{k}": v for c in candidates for k, v in c.params.items() if k != "grid"},
        "registered_model": MODEL_NAME,
    }
    notes: list[str] = []
    with tracker.start_run(STAGE, as_of=dates.score, inputs=versions, params=params, quality=quality) as active:
        mlflow.set_tags({"crm_spark.churn.mode": "train"})
        mlflow.log_metrics({
            **{f"{split}.{k}": v for split, c in counts.items() for k, v in c.items()},
            **{k: v for c in candidates for k, v in ml.prefixed(c.kind, c.evaluation.metrics).items()},
            "baseline_recency.roc_auc": baseline,
        })
        for c in candidates:
            if c.params.get("grid"):
                tracker.log_json(c.params["grid"], f"{c.kind}_tuning.json")
            tracker.log_json(c.evaluation.calibration.to_dict(orient="records"), f"{c.kind}_calibration.json")
        _log_figures(ctx, candidates, evaluate, counts)

        champion = _load_champion(ctx)
        champion_score = None
        champion_model: PipelineModel | None = None
        champion_version: int | None = None
        if champion is not None:
            champion_version, champion_model = champion
            champion_score = _champion_score(champion_model, evaluate, cfg, cached)
            if champion_score is None:
                notes.append(f"{CHAMPION} version {champion_version} could not score the evaluation rows: any new model replaces it")
            else:
                mlflow.log_metric(f"champion_before.{metric}", champion_score)

        decisions = []
        for c in candidates:
            c.version = _log_model(c.model, name=f"model_{c.kind}")
            value = c.evaluation.metrics[metric]
            promoted = ml.beats(value, champion_score, metric=metric, min_delta=cfg.promotion_min_delta)
            decision = {
                "version": c.version, "kind": c.kind, "metric": metric, "direction": ml.metric_direction(metric),
                "score": value, "champion_version": champion_version, "champion_score": champion_score,
                "min_delta": cfg.promotion_min_delta, "promoted": promoted,
            }
            decisions.append(decision)
            _tag_version(ctx, c, dates=dates, versions=versions, promoted=promoted, metric=metric)
            if promoted:
                tracker.client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(c.version))
                champion_version, champion_score, champion_model = c.version, value, c.model
            log.info(
                "[churn] %s version %d (%s %s %.4f) vs champion %s (%s): %s", MODEL_NAME, c.version, c.kind, metric, value,
                decision["champion_version"], _fmt(decision["champion_score"]), "promoted" if promoted else "kept champion",
            )
        tracker.log_json(decisions, "champion_decisions.json")
        mlflow.set_tags({
            "crm_spark.churn.champion_version": str(champion_version),
            **{f"crm_spark.churn.decision.v{d['version']}": "promoted" if d["promoted"] else "kept" for d in decisions},
        })
        if champion_model is None or champion_version is None:  # only when every candidate scored NaN
            raise SourceError(f"no {CHAMPION} for {MODEL_NAME}: no model has a usable {metric} on the evaluation rows")
        features = ctx.lake.read(FEATURES, version=versions[FEATURES])
        scores_write, summary = _publish_scores(ctx, champion_model, champion_version, features, as_of=dates.score, cfg=cfg)
        tracker.log_json(summary.pop("quality"), "quality_scores.json")
        mlflow.log_metrics({**ml.prefixed("scores", summary), "scores.table_version": float(scores_write.version),
                            "champion.version": float(champion_version)})
        run_id = str(active.info.run_id)
    return {
        "scores_write": scores_write, "decisions": decisions, "champion_version": champion_version, "run_id": run_id,
        "notes": notes,
    }


def _champion_score(model: PipelineModel, evaluate: DataFrame, cfg: ChurnSettings, cached: list[DataFrame]) -> float | None:
    """The current champion's promotion metric on this run's evaluation rows (None: it cannot score them)."""
    from py4j.protocol import Py4JJavaError

    try:
        return _evaluate(model, evaluate, cfg, cached).metrics[cfg.promotion_metric]
    except (AnalysisException, IllegalArgumentException, Py4JJavaError) as exc:
        log.warning("[churn] the %s cannot score the evaluation rows (%s)", CHAMPION, str(exc).splitlines()[0])
        return None


def _tag_version(
    ctx: StageContext, c: _Candidate, *, dates: ChurnDates, versions: dict[str, int], promoted: bool, metric: str
) -> None:
    tags = {
        "crm_spark.kind": c.kind,
        **{f"crm_spark.{k}": v for k, v in dates.as_params().items()},
        "crm_spark.training_table_version": str(versions[TRAINING]),
        f"crm_spark.eval.{metric}": f"{c.evaluation.metrics[metric]:.6f}",
        "crm_spark.promoted": str(promoted).lower(),
    }
    for key, value in tags.items():
        ctx.tracker.client.set_model_version_tag(MODEL_NAME, str(c.version), key, value)


def _log_figures(ctx: StageContext, candidates: list[_Candidate], evaluate: DataFrame, counts: dict[str, dict[str, float]]) -> None:
    from crm_spark.ml import churn_figures as figs

    curves = {c.kind: c.evaluation.curve for c in candidates}
    tracker = ctx.tracker
    tracker.log_figure(figs.roc_figure(curves, {c.kind: c.evaluation.metrics["roc_auc"] for c in candidates}), "churn_roc.png")
    base_rate = counts["eval"]["positives"] / counts["eval"]["rows"]
    tracker.log_figure(
        figs.pr_figure(curves, {c.kind: c.evaluation.metrics["pr_auc"] for c in candidates}, base_rate=base_rate),
        "churn_pr.png",
    )
    tracker.log_figure(figs.calibration_figure({c.kind: c.evaluation.calibration for c in candidates}), "churn_calibration.png")
    tracker.log_figure(figs.lift_figure(curves), "churn_lift.png")
    for c in candidates:
        names = ml.feature_names(c.model, evaluate)
        weights, signed = ml.explanation_weights(c.model)
        frame = ml.named_weights(names, weights)
        tracker.log_json(frame.to_dict(orient="records"), f"{c.kind}_{'coefficients' if signed else 'importances'}.json")
        if signed:
            fig = figs.weights_figure(frame, title="Logistic regression coefficients (standardised features)",
                                      xlabel="coefficient (log-odds of churn per standard deviation)")
            tracker.log_figure(fig, "churn_coefficients.png")
        else:
            fig = figs.weights_figure(frame, title=f"{c.kind} feature importances", xlabel="importance")
            tracker.log_figure(fig, f"churn_{c.kind}_importances.png")


# -- scores ------------------------------------------------------------------------------------
def _publish_scores(
    ctx: StageContext, model: PipelineModel, version: int, features: DataFrame, *, as_of: date, cfg: ChurnSettings
) -> tuple[WriteResult, dict[str, Any]]:
    """Score the population at ``as_of`` with ``model``, gate and overwrite that ``gold.churn_scores`` partition.

    Returns the write and a summary: rows, mean probability, customers per band, and under
    ``quality`` the gate's report summary.
    """
    at = ml.population(features.where(F.col("as_of_date") == F.lit(as_of)), who=cfg.population)
    scores = conform(_scores(model, version, at, cfg), CHURN_SCORES_DDL).cache()
    try:
        report = ctx.gate.check(SCORES, scores, previous_rows=_previous_rows(ctx.lake, as_of), as_of=as_of)
        summary: dict[str, Any] = ml.summarize_scores(scores, bands=[b.band for b in cfg.risk_bands])
        summary["quality"] = report.summary()
        write = ctx.lake.overwrite(SCORES, scores, partition={"as_of_date": as_of}, partition_by=["as_of_date"])
    finally:
        scores.unpersist()
    log.info("[churn] scored %s customers as of %s with %s version %d", f"{write.rows:,}", as_of, MODEL_NAME, version)
    return write, summary


def _scores(model: PipelineModel, version: int, population: DataFrame, cfg: ChurnSettings) -> DataFrame:
    names = ml.feature_names(model, population)
    weights, signed = ml.explanation_weights(model)
    scored = ml.top_contributions(
        ml.score(model, population), names=names, weights=weights, signed=signed, top_n=_TOP_FEATURES
    )
    return scored.select(
        "customer_id", "as_of_date", ml.PROBABILITY,
        ml.risk_band([(b.band, b.min_probability) for b in cfg.risk_bands]).alias("risk_band"),
        F.lit(version).alias("model_version"),
        F.lit(ml.model_kind(model)).alias("model_kind"),
        *(f"top_feature_{k + 1}" for k in range(_TOP_FEATURES)),
    )


def _previous_rows(lake: Lake, as_of: date) -> int | None:
    """Rows of the partition being replaced, else of the latest earlier one (the gate's shrink check)."""
    if not lake.exists(SCORES):
        return None
    replaced = lake.read(SCORES, partition={"as_of_date": as_of}).count()
    if replaced:
        return replaced
    earlier = lake.read(SCORES).where(F.col("as_of_date") < F.lit(as_of)).agg(F.max("as_of_date")).first()[0]
    return None if earlier is None else lake.read(SCORES, partition={"as_of_date": earlier}).count()


# -- helpers -----------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"
