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
silhouette); they get ``segment.prospect_segment``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType, StructType

from crm_spark.config import SegmentSettings
from crm_spark.errors import ConfigError
from crm_spark.ml import segment_figures as figures
from crm_spark.ml.segment import (
    CLUSTER,
    NAMING_COLUMNS,
    SEGMENT,
    KSelection,
    NamingRules,
    assign_clusters,
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
from crm_spark.schemas import CUSTOMER_SEGMENTS_DDL, SEGMENT_PROFILE_FEATURES, SEGMENT_PROFILES_DDL, conform
from crm_spark.stages import StageContext, StageResult

log = logging.getLogger(__name__)

STAGE = "segment"
FEATURES = "gold.customer_features"
SEGMENTS, PROFILES = "gold.customer_segments", "gold.segment_profiles"
PARTITION = "as_of_date"
REGISTERED_MODEL = "crm-spark-segment"
# Shown in the profile heatmap besides the clustering features and the naming columns.
_HEATMAP_EXTRAS = ("orders_90d", "distinct_categories", "return_rate", "cart_abandonment_rate", "sessions_30d",
                   "mean_rating", "nps")


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.settings.segment
    if not ctx.lake.exists(FEATURES):
        return StageResult(STAGE, skipped=f"{FEATURES} not found: run the features stage first")
    version = ctx.lake.version(FEATURES)
    as_of = ctx.as_of or _latest_as_of(ctx.lake.read(FEATURES, version=version))
    if as_of is None:
        return StageResult(STAGE, skipped=f"{FEATURES} holds no rows: run the features stage first")
    features = ctx.lake.read(FEATURES, version=version, partition={PARTITION: as_of})
    _check_features(cfg, features.schema)

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
        log.info("[segment] %s customers as of %s; trying %s k=%s..%s",
                 f"{n:,}", as_of, cfg.algorithm, k_values[0], k_values[-1])
        fit = _fit(cfg, clustered, k_values=k_values, cached=cached)
        named = fit.named
        if cfg.buyers_only:
            rest = unclustered(population.where(~F.col("has_orders")), segment_name=cfg.prospect_segment)
            named = named.unionByName(rest, allowMissingColumns=True)
        named = named.cache()
        cached.append(named)

        gold = {
            SEGMENTS: _conform(named, CUSTOMER_SEGMENTS_DDL, as_of=as_of),
            PROFILES: _conform(
                segment_profiles(named, by=[CLUSTER, SEGMENT], columns=SEGMENT_PROFILE_FEATURES),
                SEGMENT_PROFILES_DDL,
                as_of=as_of,
            ),
        }
        previous = {SEGMENTS: _previous_rows(ctx, SEGMENTS, as_of)}
        reports = {t: ctx.gate.check(t, df, as_of=as_of, previous_rows=previous.get(t)) for t, df in gold.items()}
        writes = tuple(
            ctx.lake.overwrite(t, df, partition={PARTITION: as_of}, partition_by=[PARTITION]) for t, df in gold.items()
        )
        run_id, model_version = _log_run(
            ctx,
            as_of=as_of,
            inputs={FEATURES: version},
            cfg=cfg,
            fit=fit,
            named=named,
            profiles=gold[PROFILES],
            clustered_rows=n,
            reports=reports,
            rows={w.table: w.rows for w in writes},
        )
    finally:
        for df in cached:
            df.unpersist()
    return StageResult(
        STAGE,
        writes=writes,
        details={
            "as_of": as_of.isoformat(),
            "k": fit.selection.k,
            "silhouette": fit.selection.metrics_by_k[fit.selection.k]["silhouette"],
            "segments": dict(sorted(fit.names.items())),
            "inputs": {FEATURES: version},
            "mlflow_run_id": run_id,
            "model_version": model_version,
        },
    )


@dataclass(frozen=True)
class _Fit:
    model: PipelineModel  # preprocessing + the chosen clustering model
    selection: KSelection
    names: dict[int, str]
    named: DataFrame  # the clustered customers with cluster, distance and segment name


def _fit(cfg: SegmentSettings, clustered: DataFrame, *, k_values: list[int], cached: list[DataFrame]) -> _Fit:
    """Preprocess once, choose k, assign clusters and name them from their profiles."""
    preprocessing = Pipeline(stages=preprocessing_stages(features=cfg.features, log_features=cfg.log_features))
    fitted = preprocessing.fit(clustered)
    prepared = fitted.transform(clustered).cache()
    cached.append(prepared)
    selection = select_k(
        prepared,
        algorithm=cfg.algorithm,
        k_values=k_values,
        seed=cfg.seed,
        max_iter=cfg.max_iter,
        silhouette_tolerance=cfg.silhouette_tolerance,
        min_cluster_share=cfg.min_cluster_share,
        restarts=cfg.restarts,
    )
    log.info("[segment] chose k=%d (silhouette %.3f)", selection.k, selection.metrics_by_k[selection.k]["silhouette"])
    assigned = assign_clusters(prepared, selection.model).cache()
    cached.append(assigned)
    names = name_segments(profile_rows(assigned), rules=NamingRules(**cfg.naming.model_dump()))
    log.info("[segment] segments: %s", ", ".join(f"{c}={n}" for c, n in sorted(names.items())))
    return _Fit(pipeline_model(fitted, selection.model), selection, names, with_segment_names(assigned, names))


def _latest_as_of(features: DataFrame) -> date | None:
    return features.agg(F.max(PARTITION)).first()[0]


def _check_features(cfg: SegmentSettings, schema: StructType) -> None:
    """Every configured feature is a numeric column of gold.customer_features."""
    numeric = [f.name for f in schema.fields if isinstance(f.dataType, NumericType)]
    wrong = [f for f in cfg.features if f not in numeric]
    if wrong:
        raise ConfigError(
            f"segment.features {wrong} are not numeric columns of {FEATURES}; choose from {', '.join(numeric)}"
        )


def _conform(df: DataFrame, ddl: str, *, as_of: date) -> DataFrame:
    """Stamp the partition, then select exactly the table's columns and types."""
    stamped = df.withColumn(PARTITION, F.lit(as_of).cast("date"))
    return conform(stamped, ddl)


def _previous_rows(ctx: StageContext, table: str, as_of: date) -> int | None:
    """Rows now in the partition being replaced (the gate's row-count-change check)."""
    if not ctx.lake.exists(table):
        return None
    return ctx.lake.read(table, partition={PARTITION: as_of}).count() or None


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
    inputs: Mapping[str, int],
    cfg: SegmentSettings,
    fit: _Fit,
    named: DataFrame,
    profiles: DataFrame,
    clustered_rows: int,
    reports: Mapping[str, Any],
    rows: Mapping[str, int],
) -> tuple[str, int]:
    """One MLflow run: settings, metrics per k, names, profiles, figures and the model."""
    import mlflow

    selection = fit.selection
    quality = {f"{t}.{k}": v for t, report in reports.items() for k, v in report.summary().items() if k != "table"}
    profile_frame = profiles.drop(PARTITION).toPandas()
    heatmap_columns = list(dict.fromkeys([*cfg.features, *NAMING_COLUMNS, *_HEATMAP_EXTRAS]))
    population = _population(named, heatmap_columns)
    points, explained = projection(named, max_points=cfg.projection_points, total=clustered_rows, seed=cfg.seed)
    point_frame = points.toPandas()
    tracker = ctx.tracker
    params = cfg.model_dump(mode="json")
    with tracker.start_run(STAGE, as_of=as_of, inputs=inputs, params=params, quality=quality) as run:
        mlflow.log_metrics({**selection.metrics(), **{f"rows.{t}": float(n) for t, n in rows.items()},
                            "clustered_customers": float(clustered_rows)})
        for k, m in sorted(selection.metrics_by_k.items()):
            mlflow.log_metrics({"silhouette_by_k": m["silhouette"], "cost_by_k": m["cost"]}, step=k)
        tracker.log_json({str(k): v for k, v in sorted(fit.names.items())}, "segment_names.json")
        mlflow.log_text(profile_frame.to_csv(index=False), "segment_profiles.csv")
        drawn = {
            "segment_sizes.png": figures.segment_sizes_figure(profile_frame),
            "segment_profiles_heatmap.png": figures.profile_heatmap_figure(profile_frame, population, heatmap_columns),
            "segment_pca.png": figures.projection_figure(point_frame, explained),
            "segment_k_selection.png": figures.k_selection_figure(selection.metrics_by_k, selection.k),
        }
        for filename, fig in drawn.items():
            tracker.log_figure(fig, filename)
        version = tracker.log_spark_model(fit.model, artifact_path="model", registered_model=REGISTERED_MODEL)
        mlflow.set_tag("crm_spark.registered_model_version", str(version))
        return str(run.info.run_id), version
