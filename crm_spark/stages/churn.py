"""Stage ``churn``: labels, a tuned logistic regression (and a GBT challenger), an honest
holdout, the MLflow registry's champion alias, and ``gold.churn_scores``.

Dates (``churn.evaluation``). D is the scoring date (``--as-of``; default the latest
``gold.customer_features`` date). ``time``: the model is evaluated at T' = D -
``churn.eval_offset_days``, whose labels end at D and so are known, and trained at T = T' -
``churn.train_offset_days`` (both offsets default to ``churn.horizon_days``). ``snapshot`` (one
labelled customer table): training and evaluation rows come from one date, D for the user's
labels; a holdout of about ``churn.holdout_share`` of each class, drawn by a seeded hash of the
customer id (so a customer stays on its side from run to run), evaluates.
Each date's rows are the customers of ``gold.customer_features`` at that date (buyers only, by
default) with their label: no completed order in the horizon after the date (``silver.orders``),
or the user's ``silver.churn_labels`` (``churn.label_source: column``), joined with the
customer's attributes valid at that date (``silver.customer_attributes``, the latest snapshot on
or before it; ``churn.attributes`` chooses). Features come from the date's partition, so nothing
after the date reaches them. Columns with one value on every training row, or equal to an
earlier column, are left out (a note says which). An evaluation whose rows carry a training row's label (undated labels in ``time``
mode) is refused; the decision threshold is picked on the training rows.

Missing feature partitions. The stage declares the partitions it needs
(:func:`needed_partitions`: T, T' and D of ``gold.customer_features``); the runner computes the
missing ones with the features stage's declared backfill (one pass, one commit) and says so in
the notes; with ``churn.backfill_features: false`` it stops with a SourceError naming the
``crm-spark features --as-of`` runs to do first.

Flow of :func:`run`: gate and write the exact train + eval rows to ``gold.churn_training``
(partition ``run_as_of_date`` = D); fit the tuned LR (and the GBT); evaluate each on T'; in one
MLflow run log metrics, curves, the tuning grid and every model, registered as a new version
of ``crm-spark-churn``; move the alias ``champion`` to a new version only if it beats the
current champion *re-evaluated on the same T' rows* by ``churn.promotion_metric`` (the first
model becomes champion); then score D with the champion into ``gold.churn_scores``.
:func:`score` is the scoring step alone (``crm-spark churn --score``, a declared entry point).
MLflow and its registry are reached through :class:`crm_spark.tracking.Tracker` only.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from crm_spark.config import ChurnSettings, Settings
from crm_spark.contracts import table
from crm_spark.errors import SourceError
from crm_spark.lake import WriteResult
from crm_spark.ml import churn as ml
from crm_spark.ml import redundant_features, sized
from crm_spark.stages import StageContext, StageResult
from crm_spark.transforms.features import with_attributes

__all__ = ["MODEL_NAME", "CHAMPION", "ChurnDates", "ChurnOutcome", "churn_dates", "needed_partitions", "run", "score"]

log = logging.getLogger(__name__)

STAGE = "churn"
MODEL_NAME = "crm-spark-churn"
CHAMPION = "champion"
FEATURES, ORDERS, LABELS = "gold.customer_features", "silver.orders", "silver.churn_labels"
ATTRIBUTES = "silver.customer_attributes"
ORDER_ITEMS = "silver.order_items"
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
    """``time``: T' = D - eval offset (labels end by D); T = T' - train offset (training labels
    end by T'). ``snapshot``: one labelled date for training and holdout, D itself for the
    user's labels (they describe the snapshot), D - eval offset for computed labels (known by D)."""
    if cfg.evaluation == "snapshot":
        labelled = score_date if cfg.label_source == "column" else score_date - timedelta(days=cfg.eval_offset)
        return ChurnDates(train=labelled, evaluate=labelled, score=score_date)
    evaluate = score_date - timedelta(days=cfg.eval_offset)
    return ChurnDates(train=evaluate - timedelta(days=cfg.train_offset), evaluate=evaluate, score=score_date)


@dataclass
class _Candidate:
    kind: str
    model: PipelineModel
    evaluation: ml.Evaluation
    params: dict[str, Any]
    version: int | None = None


@dataclass(frozen=True)
class ChurnOutcome:
    dates: ChurnDates
    rows: dict[str, int]  # train / eval
    churn_rate: dict[str, float]
    metrics: dict[str, dict[str, float]]  # model kind -> metric -> value
    baseline_recency_roc_auc: float
    versions: dict[str, int | None]  # model kind -> registered version
    decisions: list[dict[str, Any]]
    champion_version: int


@dataclass(frozen=True)
class ScoreOutcome:
    score_as_of: date
    model_version: int
    scores: dict[str, Any]


# -- entry points ------------------------------------------------------------------------------
def needed_partitions(settings: Settings, as_of: date, entry: str) -> dict[str, list[date]]:
    """The ``gold.customer_features`` dates a run needs: T, T' and D (scoring alone: D)."""
    if entry == "score":
        return {FEATURES: [as_of]}
    d = churn_dates(as_of, settings.churn)
    return {FEATURES: sorted({d.train, d.evaluate, d.score})}


def run(ctx: StageContext, as_of: date) -> StageResult:
    """Train, evaluate, register, maybe promote, and score (see the module docstring)."""
    cfg = ctx.settings.churn
    label_table = ORDERS if cfg.label_source == "computed" else LABELS
    dates = churn_dates(as_of, cfg)
    log.info("[churn] train as of %s, evaluate as of %s, score as of %s", dates.train, dates.evaluate, dates.score)
    features = ctx.read(FEATURES)
    label_frame = ctx.read(label_table)
    # Order lines tell a purchase from a zero-value order (features.count_zero_value_orders).
    lines = ctx.read(ORDER_ITEMS) if cfg.label_source == "computed" and ctx.exists(ORDER_ITEMS) else None
    if cfg.label_source == "computed":
        _check_label_coverage(ctx.lake.max_value(ORDERS, "order_date"), dates)
    kinds = ctx.settings.model_attributes()
    attributes = _attributes(ctx)

    purchases = ctx.settings.features.count_zero_value_orders

    def labeled(as_of: date) -> DataFrame:
        rows = _labeled(features, label_frame, lines, as_of=as_of, cfg=cfg, zero_value=purchases)
        return with_attributes(rows, attributes, kinds)

    if cfg.evaluation == "snapshot":  # one cached frame, both splits read from it
        split = ml.stratified_holdout(labeled(dates.train), share=cfg.holdout_share, seed=cfg.seed).cache()
        cached: list[DataFrame] = [split]
        train, evaluate = (split.where(F.col("split") == side).drop("split") for side in ("train", "eval"))
    else:
        train, evaluate = labeled(dates.train).cache(), labeled(dates.evaluate).cache()
        cached = [train, evaluate]
    notes: list[str] = []
    try:
        counts = {"train": ml.label_counts(train), "eval": ml.label_counts(evaluate)}
        _check_classes(counts, dates, cfg)
        if cfg.label_source == "column":  # computed labels at T and T' look at disjoint windows (offsets >= horizon)
            _check_overlap(train, evaluate, counts)
        columns, left_out = _model_columns(train, kinds)
        if left_out:
            notes.append("left out of the model: " + "; ".join(f"{c} {why}" for c, why in left_out.items()))
            log.info("[churn] %s", notes[-1])
        training_write = _write_training(ctx, train, evaluate, dates=dates, cfg=cfg)

        weighted = sized(_weighted(train, counts["train"], cfg), counts["train"]["rows"]).cache()
        cached.append(weighted)
        candidates = _fit_candidates(weighted, evaluate, cfg, cached, columns)
        baseline = ml.roc_auc(evaluate.withColumn("_recency", F.col(BASELINE_FEATURE).cast("double")), score_col="_recency")
        log.info(
            "[churn] %s; recency baseline ROC-AUC %.3f",
            ", ".join(f"{c.kind} {cfg.promotion_metric} {c.evaluation.metrics[cfg.promotion_metric]:.4f}" for c in candidates),
            baseline,
        )
        outcome = _track(ctx, candidates, evaluate, dates=dates, counts=counts, training_version=training_write.version,
                         baseline=baseline, cfg=cfg, cached=cached, attributes=attributes)
    finally:
        for df in cached:
            df.unpersist()
    notes += outcome["notes"]
    result = ChurnOutcome(
        dates=dates,
        rows={k: int(v["rows"]) for k, v in counts.items()},
        churn_rate={k: v["positives"] / v["rows"] for k, v in counts.items()},
        metrics={c.kind: c.evaluation.metrics for c in candidates},
        baseline_recency_roc_auc=baseline,
        versions={c.kind: c.version for c in candidates},
        decisions=outcome["decisions"],
        champion_version=outcome["champion_version"],
    )
    metrics = {
        **{k: v for c in candidates for k, v in ml.prefixed(c.kind, c.evaluation.metrics).items()},
        "baseline.recency.roc_auc": baseline,
        "champion.version": float(result.champion_version),
    }
    return StageResult(STAGE, notes=tuple(notes), metrics=metrics, mlflow_run_id=outcome["run_id"],
                       model_version=result.champion_version, outcome=result)


def score(ctx: StageContext, as_of: date) -> StageResult:
    """Scoring only (``crm-spark churn --score``): the registered champion scores D into ``gold.churn_scores``."""
    champion = ctx.tracker.model_by_alias(MODEL_NAME, CHAMPION)
    if champion is None:
        raise SourceError(
            f"no '{CHAMPION}' version of model {MODEL_NAME} in {ctx.tracker.uri}: "
            f"train one first with `crm-spark churn --as-of {as_of.isoformat()}`"
        )
    version, model = champion
    features = ctx.read(FEATURES)
    attributes = _attributes(ctx)
    params = {"mode": "score", "score_as_of": as_of.isoformat(), "model_version": version}
    tracker = ctx.tracker
    with tracker.start_run(STAGE, as_of=as_of, inputs=ctx.input_versions(), params=params) as active:
        tracker.set_tags({"crm_spark.churn.mode": "score", "crm_spark.churn.model_version": version})
        try:
            write, summary = _publish_scores(ctx, model, version, features, attributes, as_of=as_of)
        except (AnalysisException, IllegalArgumentException) as exc:  # a column the champion learnt from is gone
            raise SourceError(
                f"{MODEL_NAME} version {version} ({CHAMPION}) cannot score {FEATURES} as of {as_of}: "
                f"{str(exc).strip().splitlines()[0][:200]}; train a new model (`crm-spark churn`) after changing "
                f"features or churn.attributes"
            ) from None
        tracker.log_json(ctx.quality_summary(), "quality_scores.json")
        tracker.log_metrics({**ml.prefixed("scores", summary), "scores.table_version": float(write.version)})
        run_id = str(active.info.run_id)
    return StageResult(STAGE, mlflow_run_id=run_id, model_version=version,
                       metrics=ml.prefixed("scores", summary), outcome=ScoreOutcome(as_of, version, summary))


# -- inputs ------------------------------------------------------------------------------------
def _check_label_coverage(latest: date | None, dates: ChurnDates) -> None:
    """Computed labels at T' need orders up to D (``latest``: the last order date, from the lake's
    file statistics where it keeps them); a lake that ends earlier would call everyone churned."""
    if latest is None or latest < dates.score:
        raise SourceError(
            f"{ORDERS} ends on {latest}: the labels of the evaluation date {dates.evaluate} need orders up to "
            f"{dates.score}; use --as-of {latest} or earlier"
        )


def _labeled(
    features: DataFrame, labels: DataFrame, lines: DataFrame | None, *, as_of: date, cfg: ChurnSettings, zero_value: bool
) -> DataFrame:
    at = ml.population(features.where(F.col("as_of_date") == F.lit(as_of)), who=cfg.population)
    if cfg.label_source == "computed":
        return ml.computed_labels(at, labels, horizon_days=cfg.horizon_days, order_items=lines,
                                  count_zero_value_orders=zero_value)
    return ml.provided_labels(at, labels, horizon_days=cfg.horizon_days, snapshot=cfg.evaluation == "snapshot")


def _attributes(ctx: StageContext) -> DataFrame | None:
    """``silver.customer_attributes`` when the model uses attributes and the table exists."""
    if not ctx.settings.model_attributes():
        return None
    if not ctx.exists(ATTRIBUTES):
        log.warning("[churn] attributes are configured but %s does not exist: they are left out", ATTRIBUTES)
        return None
    return ctx.read(ATTRIBUTES)


def _model_columns(train: DataFrame, kinds: dict[str, str]) -> tuple[ml.FeatureColumns, dict[str, str]]:
    """The behaviour features and configured attributes, without those that cannot help on the
    training rows (one value for everyone, or a copy of an earlier column: a customer table without
    orders has no behaviour to learn from, and its recency repeats its tenure), each with why."""
    candidates = ml.combined(ml.feature_columns(), ml.attribute_columns(kinds))
    # Of equal columns the first is kept: without orders (or web events) recency and the last
    # visit repeat the tenure, and the tenure is what they then mean.
    left_out = redundant_features(train, sorted(candidates.all, key=lambda c: c != "tenure_days"))
    columns = ml.combined(candidates, without=list(left_out))
    if not columns.all:
        raise SourceError(
            "every feature has one value on every training row: nothing to learn from (configure attributes, "
            "or check that silver.orders feeds gold.customer_features)"
        )
    return columns, left_out


def _check_overlap(train: DataFrame, evaluate: DataFrame, counts: dict[str, dict[str, float]]) -> None:
    """Refuse an evaluation whose rows carry the same labels as training rows (undated labels in ``time`` mode)."""
    shared = ml.shared_labels(train, evaluate)
    if shared:
        raise SourceError(
            f"{shared:,} of the {counts['eval']['rows']:,.0f} evaluation rows carry the same label as a training row "
            f"(same customer, undated label): the evaluation would measure memory, not prediction; set "
            f"churn.evaluation: snapshot (a stratified holdout of one labelled date), or date the labels"
        )


def _check_classes(counts: dict[str, dict[str, float]], dates: ChurnDates, cfg: ChurnSettings) -> None:
    for split, as_of in (("train", dates.train), ("eval", dates.evaluate)):
        rows, positives = counts[split]["rows"], counts[split]["positives"]
        if positives == 0 or positives == rows:
            hint = ""
            if rows == 0 and cfg.label_source == "column" and cfg.evaluation == "time":
                hint = (f"; no label in {LABELS} is dated in ({as_of}, {as_of + timedelta(days=cfg.horizon_days)}]: "
                        f"labels of one snapshot cannot label two dates, set churn.evaluation: snapshot")
            raise SourceError(
                f"the {split} set as of {as_of} has {rows:.0f} customers and {positives:.0f} churners: a churn model needs "
                f"both classes (check churn.label_source={cfg.label_source}, churn.population={cfg.population}, "
                f"churn.horizon_days={cfg.horizon_days} and the --as-of date){hint}"
            )


def _write_training(
    ctx: StageContext, train: DataFrame, evaluate: DataFrame, *, dates: ChurnDates, cfg: ChurnSettings
) -> WriteResult:
    """The exact train and eval rows, gated, in ``gold.churn_training`` partition ``run_as_of_date`` = D."""
    rows = train.withColumn("split", F.lit("train")).unionByName(evaluate.withColumn("split", F.lit("eval")))
    rows = rows.withColumn("run_as_of_date", F.lit(dates.score)).withColumn("label_source", F.lit(cfg.label_source))
    # The attribute values a row used are not kept here: silver.customer_attributes holds them by snapshot date.
    return ctx.publish(TRAINING, rows, partition={"run_as_of_date": dates.score})


# -- models ------------------------------------------------------------------------------------
def _weighted(train: DataFrame, counts: dict[str, float], cfg: ChurnSettings) -> DataFrame:
    if cfg.class_weight == "none":
        return ml.with_class_weight(train, negative=1.0, positive=1.0)
    negative, positive = ml.balanced_weights(rows=counts["rows"], positives=counts["positives"])
    return ml.with_class_weight(train, negative=negative, positive=positive)


def _fit_candidates(
    train: DataFrame, evaluate: DataFrame, cfg: ChurnSettings, cached: list[DataFrame], columns: ml.FeatureColumns
) -> list[_Candidate]:
    """The tuned logistic regression and, when configured, the GBT challenger.

    The two are fitted (and evaluated) at the same time from two driver threads: on small tables
    each L-BFGS iteration and each tree is a Spark job whose latency dwarfs its work, and the two
    fits share nothing (both are seeded).
    """
    weighted = cfg.class_weight != "none"

    def logistic() -> _Candidate:
        points = len(cfg.reg_params) * len(cfg.elastic_net_params)
        if points == 1:  # nothing to choose between: fit once, no folds
            log.info("[churn] fitting logistic regression (one grid point: no %s)", cfg.tuning)
            single = ml.logistic_regression(max_iter=cfg.max_iter, weighted=weighted, tol=cfg.tol)
            single = single.setRegParam(cfg.reg_params[0]).setElasticNetParam(cfg.elastic_net_params[0])
            best, grid = ml.churn_pipeline(single, columns).fit(train), []
        else:
            tuner = ml.tuned_logistic_regression(
                max_iter=cfg.max_iter, tol=cfg.tol, weighted=weighted, tuning=cfg.tuning, reg_params=cfg.reg_params,
                elastic_net_params=cfg.elastic_net_params, folds=cfg.folds, train_ratio=cfg.train_ratio, seed=cfg.seed,
                parallelism=cfg.parallelism, columns=columns,
                metric="areaUnderPR" if cfg.promotion_metric == "pr_auc" else "areaUnderROC",
            )
            log.info("[churn] tuning logistic regression (%s over %d grid points)", cfg.tuning, points)
            tuned = tuner.fit(train)
            grid, best = ml.tuning_results(tuned), tuned.bestModel
        lr = best.stages[-1]
        params = {"regParam": float(lr.getRegParam()), "elasticNetParam": float(lr.getElasticNetParam()), "grid": grid}
        return _Candidate("logistic_regression", best, _evaluate(best, evaluate, cfg, cached, train=train), params)

    def challenger() -> _Candidate:
        log.info("[churn] fitting the GBT challenger (%d trees of depth %d)", cfg.gbt_max_iter, cfg.gbt_max_depth)
        gbt = ml.churn_pipeline(
            ml.gbt_classifier(max_iter=cfg.gbt_max_iter, max_depth=cfg.gbt_max_depth, step_size=cfg.gbt_step_size,
                              seed=cfg.seed, weighted=weighted),
            columns,
        ).fit(train)
        params = {"maxIter": cfg.gbt_max_iter, "maxDepth": cfg.gbt_max_depth, "stepSize": cfg.gbt_step_size}
        return _Candidate("gbt", gbt, _evaluate(gbt, evaluate, cfg, cached, train=train), params)

    fits = [logistic] + ([challenger] if cfg.challenger == "gbt" else [])
    with ThreadPoolExecutor(max_workers=len(fits)) as pool:
        return list(pool.map(lambda fit: fit(), [inheritable_thread_target(f) for f in fits]))  # keep the job group


def _evaluate(
    model: PipelineModel, evaluate: DataFrame, cfg: ChurnSettings, cached: list[DataFrame], *, train: DataFrame | None = None
) -> ml.Evaluation:
    """Metrics on the evaluation rows; the confusion at the threshold ``churn.threshold_rule`` picks
    on the training rows (``train``; a champion re-evaluated without them: on the evaluation rows)."""
    threshold = None
    if train is not None:
        threshold = ml.pick_threshold(ml.score(model, train), bins=cfg.threshold_bins, rule=cfg.threshold_rule,
                                      target_recall=cfg.target_recall)
    scored = ml.score(model, evaluate).select("customer_id", ml.LABEL, ml.PROBABILITY).cache()
    cached.append(scored)
    return ml.evaluate(scored, bins=cfg.threshold_bins, rule=cfg.threshold_rule, target_recall=cfg.target_recall,
                       threshold=threshold)


# -- registry ----------------------------------------------------------------------------------
def _track(
    ctx: StageContext,
    candidates: list[_Candidate],
    evaluate: DataFrame,
    *,
    dates: ChurnDates,
    counts: dict[str, dict[str, float]],
    training_version: int,
    baseline: float,
    cfg: ChurnSettings,
    cached: list[DataFrame],
    attributes: DataFrame | None,
) -> dict[str, Any]:
    """One MLflow run: metrics, figures, models, champion decisions, then the scores of D."""
    metric = cfg.promotion_metric
    tracker = ctx.tracker
    params = {
        **dates.as_params(),
        **{f"churn.{k}": v for k, v in cfg.model_dump(mode="json").items()},
        **{f"{c.kind}.{k}": v for c in candidates for k, v in c.params.items() if k != "grid"},
        "registered_model": MODEL_NAME,
    }
    notes: list[str] = []
    with tracker.start_run(STAGE, as_of=dates.score, inputs=ctx.input_versions(), params=params,
                           quality=ctx.quality_summary()) as active:
        tracker.set_tags({"crm_spark.churn.mode": "train"})
        tracker.log_metrics({
            **{f"{split}.{k}": v for split, c in counts.items() for k, v in c.items()},
            **{k: v for c in candidates for k, v in ml.prefixed(c.kind, c.evaluation.metrics).items()},
            "baseline_recency.roc_auc": baseline,
        })
        for c in candidates:
            if c.params.get("grid"):
                tracker.log_json(c.params["grid"], f"{c.kind}_tuning.json")
            tracker.log_json(c.evaluation.calibration.to_dict(orient="records"), f"{c.kind}_calibration.json")
        _log_figures(ctx, candidates, evaluate, counts)

        champion = tracker.model_by_alias(MODEL_NAME, CHAMPION)
        champion_score = None
        champion_model: PipelineModel | None = None
        champion_version: int | None = None
        if champion is not None:
            champion_version, champion_model = champion
            champion_score = _champion_score(champion_model, evaluate, cfg, cached)
            if champion_score is None:
                notes.append(f"{CHAMPION} version {champion_version} could not score the evaluation rows: any new model replaces it")
            else:
                tracker.log_metrics({f"champion_before.{metric}": champion_score})

        decisions = []
        for c in candidates:
            c.version = tracker.log_spark_model(c.model, artifact_path=f"model_{c.kind}", registered_model=MODEL_NAME)
            value = c.evaluation.metrics[metric]
            promoted = ml.beats(value, champion_score, metric=metric, min_delta=cfg.promotion_min_delta)
            decision = {
                "version": c.version, "kind": c.kind, "metric": metric, "direction": ml.metric_direction(metric),
                "score": value, "champion_version": champion_version, "champion_score": champion_score,
                "min_delta": cfg.promotion_min_delta, "promoted": promoted,
            }
            decisions.append(decision)
            tracker.tag_version(MODEL_NAME, c.version, {
                "crm_spark.kind": c.kind,
                **{f"crm_spark.{k}": v for k, v in dates.as_params().items()},
                "crm_spark.training_table_version": training_version,
                f"crm_spark.eval.{metric}": f"{value:.6f}",
                "crm_spark.promoted": str(promoted).lower(),
            })
            if promoted:
                tracker.set_alias(MODEL_NAME, CHAMPION, c.version)
                champion_version, champion_score, champion_model = c.version, value, c.model
            log.info(
                "[churn] %s version %d (%s %s %.4f) vs champion %s (%s): %s", MODEL_NAME, c.version, c.kind, metric, value,
                decision["champion_version"], _fmt(decision["champion_score"]), "promoted" if promoted else "kept champion",
            )
        tracker.log_json(decisions, "champion_decisions.json")
        tracker.set_tags({
            "crm_spark.churn.champion_version": champion_version,
            **{f"crm_spark.churn.decision.v{d['version']}": "promoted" if d["promoted"] else "kept" for d in decisions},
        })
        if champion_model is None or champion_version is None:  # only when every candidate scored NaN
            raise SourceError(f"no {CHAMPION} for {MODEL_NAME}: no model has a usable {metric} on the evaluation rows")
        scores_write, summary = _publish_scores(ctx, champion_model, champion_version, ctx.read(FEATURES), attributes,
                                                as_of=dates.score)
        tracker.log_json(ctx.quality_summary(), "quality_scores.json")
        tracker.log_metrics({**ml.prefixed("scores", summary), "scores.table_version": float(scores_write.version),
                             "champion.version": float(champion_version)})
        run_id = str(active.info.run_id)
    return {"decisions": decisions, "champion_version": champion_version, "run_id": run_id, "notes": notes}


def _champion_score(model: PipelineModel, evaluate: DataFrame, cfg: ChurnSettings, cached: list[DataFrame]) -> float | None:
    """The current champion's promotion metric on this run's evaluation rows (None: it cannot score them)."""
    from py4j.protocol import Py4JJavaError

    try:
        return _evaluate(model, evaluate, cfg, cached).metrics[cfg.promotion_metric]
    except (AnalysisException, IllegalArgumentException, Py4JJavaError) as exc:
        log.warning("[churn] the %s cannot score the evaluation rows (%s)", CHAMPION, str(exc).splitlines()[0])
        return None


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
    ctx: StageContext, model: PipelineModel, version: int, features: DataFrame, attributes: DataFrame | None, *,
    as_of: date,
) -> tuple[WriteResult, dict[str, Any]]:
    """Score the population at ``as_of`` (with its attributes as of that date) with ``model`` and
    publish that ``gold.churn_scores`` partition; returns the write and a summary (rows, mean
    probability, customers per band)."""
    cfg = ctx.settings.churn
    at = ml.population(features.where(F.col("as_of_date") == F.lit(as_of)), who=cfg.population)
    at = with_attributes(at, attributes, ctx.settings.model_attributes())
    scores = table(SCORES).conform(_scores(model, version, at, cfg)).cache()
    try:
        write = ctx.publish(SCORES, scores, partition={"as_of_date": as_of})
        summary: dict[str, Any] = ml.summarize_scores(scores, bands=[b.band for b in cfg.risk_bands])
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


# -- helpers -----------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"
