"""Stage ``segment``: customer segments with MLlib clustering, tracked in MLflow.

Reads one ``as_of_date`` partition of ``gold.customer_features`` at a pinned version (the
latest date unless ``--as-of`` says otherwise), fits the preprocessing once and the configured
algorithm for every k in ``[segment.k_min, segment.k_max]``, keeps the k chosen by silhouette
and cost (:func:`crm_spark.ml.segment.choose_k`), names each cluster from its profile, gates
``gold.customer_segments`` and ``gold.segment_profiles`` and overwrites their partition of the
date (a re-run replaces that date only), then logs one MLflow run: parameters, silhouette and
cost per k, input version, quality summary, figures, and the fitted pipeline as a registered
model version of ``crm-spark-segment``.

With ``segment.buyers_only`` customers without a completed order are not clustered (their RFM
values are all zero or undefined, so they would form a cluster of their own and dominate the
silhouette); they get ``segment.prospect_segment``. ``segment.attributes`` adds customer
attributes (each customer's latest ``silver.customer_attributes`` snapshot on or before the
date, a missing value imputed with the median) to the clustering features; columns with one
value for everyone, or equal to an earlier column, are left out with a note.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_spark.config import SegmentSettings
from crm_spark.ml import redundant_features, sized
from crm_spark.ml import segment_figures as figures
from crm_spark.ml.segment import (
    CLUSTER,
    NAMING_COLUMNS,
    SEGMENT,
    KSelection,
    NamingRules,
    assign_clusters,
    euclidean_silhouette,
    name_segments,
    pipeline_model,
    preprocessing_stages,
    profile_rows,
    projection,
    segment_profiles,
    select_k,
    unclustered,
    with_segment_names,
)
from crm_spark.contracts import table
from crm_spark.contracts.gold import SEGMENT_PROFILE_FEATURES
from crm_spark.stages import StageContext, StageResult
from crm_spark.transforms.features import ATTRIBUTE_PREFIX, with_attributes

log = logging.getLogger(__name__)

STAGE = "segment"
FEATURES = "gold.customer_features"
ATTRIBUTES = "silver.customer_attributes"
SEGMENTS, PROFILES = "gold.customer_segments", "gold.segment_profiles"
PARTITION = "as_of_date"
REGISTERED_MODEL = "crm-spark-segment"
# Shown in the profile heatmap besides the clustering features and the naming columns.
_HEATMAP_EXTRAS = ("orders_90d", "distinct_categories", "return_rate", "cart_abandonment_rate", "sessions_30d",
                   "mean_rating", "nps")


@dataclass(frozen=True)
class SegmentOutcome:
    k: int
    silhouette: float  # squared Euclidean (Spark's evaluator): what k is chosen by
    segments: dict[int, str]  # cluster id -> segment name
    clustered_customers: int
    silhouette_euclidean: float  # plain Euclidean, as scikit-learn reports it


def run(ctx: StageContext, as_of: date) -> StageResult:
    cfg = ctx.settings.segment
    features = ctx.read(FEATURES, partition={PARTITION: as_of})
    attributes = [f"{ATTRIBUTE_PREFIX}{a}" for a in cfg.attributes]
    if cfg.attributes:  # each customer's latest attribute snapshot on or before the date
        found = ctx.read(ATTRIBUTES) if ctx.exists(ATTRIBUTES) else None
        features = with_attributes(features, found, {a: ctx.settings.attributes[a] for a in cfg.attributes})

    population = features.cache()
    cached: list[DataFrame] = [population]
    try:
        if population.isEmpty():
            return StageResult(STAGE, skipped=f"{FEATURES} has no rows for {as_of}: run the features stage for it")
        clustered = population.where(F.col("has_orders")) if cfg.buyers_only else population
        n = clustered.count()
        k_values = [k for k in range(cfg.k_min, cfg.k_max + 1) if k < n]
        if not k_values:
            who = "customers with a completed order" if cfg.buyers_only else "customers"
            return StageResult(STAGE, skipped=f"{n} {who} at {as_of}: too few for segment.k_min={cfg.k_min} clusters")
        left_out = redundant_features(clustered, [*cfg.features, *attributes])
        notes = tuple(f"segment.features: {c} {why}: left out of the clustering" for c, why in left_out.items())
        for note in notes:
            log.warning("[segment] %s", note)
        features = [c for c in (*cfg.features, *attributes) if c not in left_out]
        if not features:
            return StageResult(STAGE, notes=notes, skipped="no segment.features column varies between customers")
        log.info("[segment] %s customers as of %s; trying %s k=%s..%s on %s",
                 f"{n:,}", as_of, cfg.algorithm, k_values[0], k_values[-1], ", ".join(features))
        fit = _fit(cfg, clustered, features=features, k_values=k_values, cached=cached, rows=n)
        named = fit.named
        if cfg.buyers_only:
            rest = unclustered(population.where(~F.col("has_orders")), segment_name=cfg.prospect_segment)
            named = named.unionByName(rest, allowMissingColumns=True)
        named = named.withColumn(PARTITION, F.lit(as_of).cast("date")).cache()
        cached.append(named)
        profiles = segment_profiles(named, by=[CLUSTER, SEGMENT], columns=SEGMENT_PROFILE_FEATURES)
        profiles = profiles.withColumn(PARTITION, F.lit(as_of).cast("date"))
        ctx.publish(SEGMENTS, named, partition={PARTITION: as_of})
        ctx.publish(PROFILES, profiles, partition={PARTITION: as_of})
        run_id, model_version = _log_run(ctx, as_of=as_of, cfg=cfg, fit=fit, named=named,
                                         profiles=table(PROFILES).conform(profiles), clustered_rows=n)
    finally:
        for df in cached:
            df.unpersist()
    silhouette = fit.selection.metrics_by_k[fit.selection.k]["silhouette"]
    return StageResult(
        STAGE,
        metrics={"k": float(fit.selection.k), "silhouette": silhouette, "silhouette_euclidean": fit.silhouette_euclidean,
                 "clustered_customers": float(n)},
        notes=notes,
        mlflow_run_id=run_id,
        model_version=model_version,
        outcome=SegmentOutcome(fit.selection.k, silhouette, dict(sorted(fit.names.items())), n,
                               fit.silhouette_euclidean),
    )


@dataclass(frozen=True)
class _Fit:
    model: PipelineModel  # preprocessing + the chosen clustering model
    selection: KSelection
    names: dict[int, str]
    named: DataFrame  # the clustered customers with cluster, distance and segment name
    silhouette_euclidean: float  # of the chosen clustering
    features: list[str]  # segment.features less the constant and duplicate ones


def _fit(
    cfg: SegmentSettings, clustered: DataFrame, *, features: list[str], k_values: list[int], cached: list[DataFrame],
    rows: int,
) -> _Fit:
    """Preprocess once, choose k, assign clusters and name them from their profiles."""
    log_features = [c for c in cfg.log_features if c in features]
    impute = [c for c in features if c.startswith(ATTRIBUTE_PREFIX)]
    preprocessing = Pipeline(stages=preprocessing_stages(features=features, log_features=log_features, impute=impute))
    fitted = preprocessing.fit(clustered)
    # One partition per 50,000 customers: every k-means iteration is a job with a task per partition.
    prepared = sized(fitted.transform(clustered), rows).cache()
    cached.append(prepared)
    selection = select_k(
        prepared,
        algorithm=cfg.algorithm,
        k_values=k_values,
        seed=cfg.seed,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        silhouette_tolerance=cfg.silhouette_tolerance,
        min_cluster_share=cfg.min_cluster_share,
        restarts=cfg.restarts,
        parallelism=cfg.parallelism,
    )
    assigned = assign_clusters(prepared, selection.model).cache()
    cached.append(assigned)
    euclidean = euclidean_silhouette(assigned, total=rows, seed=cfg.seed)
    log.info("[segment] chose k=%d (silhouette %.3f with squared Euclidean distance, as k is chosen; %.3f with "
             "Euclidean distance, as scikit-learn reports it)",
             selection.k, selection.metrics_by_k[selection.k]["silhouette"], euclidean)
    names = name_segments(profile_rows(assigned), rules=NamingRules(**cfg.naming.model_dump()))
    log.info("[segment] segments: %s", ", ".join(f"{c}={n}" for c, n in sorted(names.items())))
    return _Fit(pipeline_model(fitted, selection.model), selection, names, with_segment_names(assigned, names), euclidean,
                features)


def _population(named: DataFrame, columns: list[str]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each column over all customers of the date."""
    aggs = []
    for c in columns:
        value = F.col(c).cast("double")
        aggs += [F.avg(value).alias(f"{c}__mean"), F.stddev_samp(value).alias(f"{c}__sd")]
    row = named.agg(*aggs).first()
    return {c: (float(row[f"{c}__mean"] or 0.0), float(row[f"{c}__sd"] or 0.0)) for c in columns}


def _log_run(
    ctx: StageContext,
    *,
    as_of: date,
    cfg: SegmentSettings,
    fit: _Fit,
    named: DataFrame,
    profiles: DataFrame,
    clustered_rows: int,
) -> tuple[str, int]:
    """One MLflow run: settings, metrics per k, names, profiles, figures and the model."""
    selection = fit.selection
    profile_frame = profiles.drop(PARTITION).toPandas()
    heatmap_columns = list(dict.fromkeys([*cfg.features, *NAMING_COLUMNS, *_HEATMAP_EXTRAS]))
    population = _population(named, heatmap_columns)
    points, explained = projection(named, max_points=cfg.projection_points, total=clustered_rows, seed=cfg.seed)
    point_frame = points.toPandas()
    tracker = ctx.tracker
    params = {**cfg.model_dump(mode="json"), "features_used": fit.features}
    with tracker.start_run(STAGE, as_of=as_of, inputs=ctx.input_versions(), params=params,
                           quality=ctx.quality_summary()) as run:
        tracker.log_metrics({**selection.metrics(), **ctx.written_rows(), "clustered_customers": float(clustered_rows),
                             "silhouette_euclidean": fit.silhouette_euclidean})
        for k, m in sorted(selection.metrics_by_k.items()):
            tracker.log_metrics({"silhouette_by_k": m["silhouette"], "cost_by_k": m["cost"]}, step=k)
        tracker.log_json({str(k): v for k, v in sorted(fit.names.items())}, "segment_names.json")
        tracker.log_text(profile_frame.to_csv(index=False), "segment_profiles.csv")
        drawn = {
            "segment_sizes.png": figures.segment_sizes_figure(profile_frame),
            "segment_profiles_heatmap.png": figures.profile_heatmap_figure(profile_frame, population, heatmap_columns),
            "segment_pca.png": figures.projection_figure(point_frame, explained),
            "segment_k_selection.png": figures.k_selection_figure(selection.metrics_by_k, selection.k),
        }
        for filename, fig in drawn.items():
            tracker.log_figure(fig, filename)
        version = tracker.log_spark_model(fit.model, artifact_path="model", registered_model=REGISTERED_MODEL)
        return str(run.info.run_id), version
