"""Customer segmentation (SPEC section 5, stage 4): a Spark ML clustering pipeline, the choice of
k by silhouette, segment profiles, and segment names derived from those profiles.

Grain: one row per customer of ``gold.customer_features`` at one as-of date. The pipeline is
``log1p`` of the heavy-tailed features (a :class:`SQLTransformer`), a :class:`VectorAssembler`
and a :class:`StandardScaler` (each feature divided by its standard deviation), then MLlib
KMeans, BisectingKMeans or GaussianMixture. Clusters live in this scaled space, so every
feature weighs the same and distances are in standard deviations.

Cluster ids are whatever the algorithm returns; nothing here gives an id a meaning. A segment's
name is a function of its mean profile relative to the mean of all clustered customers
(:func:`name_segments`), so the same data and seed give the same clusters and the same names.

Builders are lazy; ``select_k`` fits (an action, like any estimator) and returns plain metric
dicts; ``profile_rows`` collects one small aggregate row per cluster. Nothing here reads tables
or config, or talks to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pyspark.ml import Estimator, Model, Pipeline, PipelineModel, Transformer
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture, GaussianMixtureModel, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import PCA, Imputer, SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

Algorithm = Literal["kmeans", "bisecting", "gmm"]
ALGORITHMS: tuple[str, ...] = ("kmeans", "bisecting", "gmm")

CLUSTER = "cluster_id"
SEGMENT = "segment_name"
DISTANCE = "distance_to_centroid"
SCALED = "segment_features"  # the scaled feature vector (unit standard deviation) the clusters live in
_ASSEMBLED = "_segment_raw_features"
_IMPUTED = "__imputed"
_PROBABILITY = "_segment_probability"
_LOG_PREFIX = "log1p_"

# Profile columns the naming rules read (always profiled, whatever the clustering features are).
NAMING_COLUMNS: tuple[str, ...] = ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days")
REVENUE = "monetary"


# -- pipeline ---------------------------------------------------------------------------------
def log_column(feature: str) -> str:
    """Name of the ``log1p`` copy of a feature inside the pipeline."""
    return f"{_LOG_PREFIX}{feature}"


def preprocessing_stages(
    *, features: Sequence[str], log_features: Sequence[str] = (), impute: Sequence[str] = ()
) -> list[Transformer | Estimator]:
    """Median of the fitted rows for nulls of ``impute`` (customer attributes may be missing),
    log1p of ``log_features`` (negatives clamped to 0), assemble ``features``, divide each by its
    standard deviation.

    Heavy-tailed counts and amounts (monetary, frequency, recency) would otherwise let a few
    extreme customers own a cluster each; ``log1p`` keeps zeros at zero. The output vector is
    :data:`SCALED`; the input columns stay untouched.
    """
    if len(features) < 2:
        raise ValueError("segmentation needs at least two features")
    stray = [f for f in log_features if f not in features]
    if stray:
        raise ValueError(f"log_features {stray} are not among the features")
    stray = [f for f in impute if f not in features]
    if stray:
        raise ValueError(f"impute {stray} are not among the features")
    stages: list[Transformer | Estimator] = []
    if impute:
        stages.append(Imputer(inputCols=list(impute), outputCols=[f"{f}{_IMPUTED}" for f in impute], strategy="median"))
    if log_features:
        exprs = ", ".join(f"log1p(greatest(cast(`{f}` as double), 0D)) AS `{log_column(f)}`" for f in log_features)
        stages.append(SQLTransformer(statement=f"SELECT *, {exprs} FROM __THIS__"))
    inputs = [log_column(f) if f in log_features else f"{f}{_IMPUTED}" if f in impute else f for f in features]
    stages.append(VectorAssembler(inputCols=inputs, outputCol=_ASSEMBLED, handleInvalid="error"))
    # Scaled, not centred: Euclidean clusters, silhouette and distances ignore a shift, and
    # BisectingKMeans cannot split a root cluster centred on the origin (its split perturbs the
    # centre in proportion to the centre's norm).
    stages.append(StandardScaler(inputCol=_ASSEMBLED, outputCol=SCALED, withMean=False, withStd=True))
    return stages


KMEANS_TOL = 0.01


def clusterer(*, algorithm: Algorithm, k: int, seed: int, max_iter: int, tol: float = KMEANS_TOL) -> Estimator:
    """The clustering estimator on :data:`SCALED`, predicting :data:`CLUSTER`.

    ``tol``: k-means stops when no centre moves farther than this in the scaled space (Spark's
    default 1e-4 spends about 30 % more iterations, one Spark job each, for the same clusters:
    on the demo data every k's chosen fit and silhouette agreed to 0.001).
    """
    common: dict[str, Any] = {
        "k": k, "seed": seed, "maxIter": max_iter, "featuresCol": SCALED, "predictionCol": CLUSTER,
    }
    if algorithm == "kmeans":
        return KMeans(tol=tol, **common)
    if algorithm == "bisecting":
        return BisectingKMeans(**common)
    if algorithm == "gmm":
        return GaussianMixture(probabilityCol=_PROBABILITY, **common)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def segment_pipeline(
    *, features: Sequence[str], log_features: Sequence[str] = (), algorithm: Algorithm, k: int, seed: int, max_iter: int
) -> Pipeline:
    """The whole unfitted pipeline for a fixed k (the stage fits the preprocessing once and
    k candidates on its output, then assembles the same stages into one PipelineModel)."""
    return Pipeline(
        stages=[
            *preprocessing_stages(features=features, log_features=log_features),
            clusterer(algorithm=algorithm, k=k, seed=seed, max_iter=max_iter),
        ]
    )


def pipeline_model(preprocessing: PipelineModel, clustering: Model) -> PipelineModel:
    """Fitted preprocessing + the chosen clustering model: what scores new customers."""
    return PipelineModel(stages=[*preprocessing.stages, clustering])


# -- choosing k -------------------------------------------------------------------------------
def within_cluster_cost(predicted: DataFrame) -> float:
    """Sum of squared distances of each row of :data:`SCALED` to the mean of its cluster."""
    return sum(_cost(m) for m in _moments(predicted))


def _moments(predicted: DataFrame, by: Sequence[str] = (CLUSTER,)) -> list[Any]:
    """Per cluster (per ``by`` group): rows ``n``, summed squared norms ``sum_sq`` and the summed vector ``total``."""
    return (
        predicted.groupBy(*by)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(_squared_norm(vector_to_array(F.col(SCALED)))).alias("sum_sq"),
            Summarizer.sum(F.col(SCALED)).alias("total"),
        )
        .collect()
    )


def fit_moments(prepared: DataFrame, models: Sequence[Model]) -> list[list[Any]]:
    """:func:`_moments` of each model's clustering of ``prepared``, all in one Spark job.

    Every model predicts into its own column of one projection, the (model, cluster) pairs are
    stacked and aggregated together: a k sweep with restarts needs the cost of every fit, and
    one small job per fit would cost more than the fits' work on a few thousand customers.
    """
    frame = prepared.select(SCALED)
    for i, model in enumerate(models):
        own = model.copy()
        own.setPredictionCol(f"_fit_{i}")
        if isinstance(own, GaussianMixtureModel):
            own.setProbabilityCol(f"_fit_probability_{i}")
        frame = own.transform(frame).select(*frame.columns, f"_fit_{i}")
    pairs = F.array(*[F.struct(F.lit(i).alias("_fit"), F.col(f"_fit_{i}").alias(CLUSTER)) for i in range(len(models))])
    stacked = frame.select(F.col(SCALED), F.explode(pairs).alias("_p")).select("_p._fit", f"_p.{CLUSTER}", SCALED)
    out: list[list[Any]] = [[] for _ in models]
    for row in _moments(stacked, by=("_fit", CLUSTER)):
        out[int(row["_fit"])].append(row)
    return out


def _cost(moment: Any) -> float:
    # sum |x - mean|^2 = sum |x|^2 - |sum x|^2 / n
    return max(float(moment["sum_sq"]) - float(moment["total"].dot(moment["total"])) / int(moment["n"]), 0.0)


def clustering_metrics(predicted: DataFrame, *, moments: Sequence[Any] | None = None) -> dict[str, float]:
    """Quality of one clustering of :data:`SCALED` into :data:`CLUSTER`.

    * ``silhouette``: mean silhouette with squared Euclidean distance (Spark's
      ClusteringEvaluator), -1..1, higher is better; NaN with fewer than two clusters.
    * ``cost``: within-cluster sum of squared distances to each cluster's mean (the k-means
      objective, computed the same way for every algorithm).
    * ``clusters``: non-empty clusters; ``smallest_cluster_share``: the smallest one's share.

    ``moments``: the clustering's :func:`_moments` when already computed (:func:`fit_moments`).
    """
    if moments is None:
        moments = _moments(predicted)
    rows = sum(int(m["n"]) for m in moments)
    silhouette = math.nan
    if len(moments) >= 2:
        evaluator = ClusteringEvaluator(
            featuresCol=SCALED, predictionCol=CLUSTER, metricName="silhouette", distanceMeasure="squaredEuclidean"
        )
        silhouette = float(evaluator.evaluate(predicted))
    return {
        "silhouette": silhouette,
        "cost": sum(_cost(m) for m in moments),
        "clusters": float(len(moments)),
        "smallest_cluster_share": min(int(m["n"]) for m in moments) / rows if rows else 0.0,
    }


def at_most(frame: DataFrame, max_points: int, *, total: int, seed: int) -> DataFrame:
    """``frame`` (``total`` rows) itself, or a seeded random sample of at most ``max_points`` rows."""
    fraction = min(1.0, 1.2 * max_points / max(total, 1))
    return frame.sample(fraction=fraction, seed=seed).limit(max_points) if fraction < 1.0 else frame


def euclidean_silhouette(predicted: DataFrame, *, max_points: int = 5000, total: int | None = None,
                         seed: int = 0) -> float:
    """Mean silhouette with plain Euclidean distance, as scikit-learn's ``silhouette_score``
    reports it (Spark's evaluator offers squared Euclidean and cosine only), over :data:`SCALED`
    and :data:`CLUSTER`; exact up to ``max_points`` rows, else on a seeded random sample of about
    that many (``total``: the row count, when known). Computed on the driver in blocks of 1,000
    rows (one Spark job to collect the points). NaN with fewer than two clusters."""
    import numpy as np

    rows = predicted.limit(max_points) if total is None else at_most(predicted, max_points, total=total, seed=seed)
    got = rows.select(vector_to_array(F.col(SCALED)).alias("x"), F.col(CLUSTER).alias("c")).collect()
    if not got:
        return math.nan
    x = np.array([r["x"] for r in got], dtype=float)
    ids, labels = np.unique(np.array([r["c"] for r in got]), return_inverse=True)
    if len(ids) < 2:
        return math.nan
    onehot = np.eye(len(ids))[labels]  # n x k
    sizes = onehot.sum(axis=0)
    squares = (x * x).sum(axis=1)
    scores = np.empty(len(x))
    for start in range(0, len(x), 1000):
        block = slice(start, start + 1000)
        d = np.sqrt(np.maximum(squares[block, None] + squares[None, :] - 2.0 * x[block] @ x.T, 0.0))
        rows_here = np.arange(d.shape[0])
        d[rows_here, start + rows_here] = 0.0  # a point's distance to itself, not rounding noise
        sums = d @ onehot  # distance from each row of the block to every cluster, summed
        own = labels[block]
        own_size = sizes[own]
        a = sums[np.arange(len(own)), own] / np.maximum(own_size - 1, 1)
        other = sums / sizes
        other[np.arange(len(own)), own] = np.inf
        b = other.min(axis=1)
        s = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
        scores[block] = np.where(own_size > 1, s, 0.0)  # a cluster of one scores 0, as in scikit-learn
    return float(scores.mean())


def choose_k(
    metrics_by_k: Mapping[int, Mapping[str, float]],
    *,
    silhouette_tolerance: float = 0.0,
    min_cluster_share: float = 0.0,
) -> int:
    """The chosen k, from :func:`clustering_metrics` per k: by silhouette, then cost.

    Eligible: at least two clusters, a finite silhouette, and no cluster smaller than
    ``min_cluster_share`` (a k that only splits off a handful of outliers is not a segmentation);
    if no k is eligible on share, the share rule is dropped. Candidates: the eligible k whose
    silhouette is within ``silhouette_tolerance`` of the best; silhouettes closer than the
    spread between k-means restarts (about 0.01 on customer data) do not tell the k apart.
    Chosen: the candidate with the lowest cost (the most variance explained), then the smaller k.
    """
    if not metrics_by_k:
        raise ValueError("no k was evaluated")
    valid = {k: m for k, m in metrics_by_k.items() if m["clusters"] >= 2 and math.isfinite(m["silhouette"])}
    if not valid:
        raise ValueError(f"no k in {sorted(metrics_by_k)} gave two or more clusters")
    eligible = {k: m for k, m in valid.items() if m["smallest_cluster_share"] >= min_cluster_share} or valid
    best = max(m["silhouette"] for m in eligible.values())
    candidates = [k for k, m in eligible.items() if m["silhouette"] >= best - silhouette_tolerance]
    return min(candidates, key=lambda k: (eligible[k]["cost"], k))


@dataclass(frozen=True)
class KSelection:
    """The outcome of :func:`select_k`: the chosen k, its fitted model, metrics of every k."""

    k: int
    model: Model
    metrics_by_k: dict[int, dict[str, float]]

    def metrics(self) -> dict[str, float]:
        """Flat metrics for tracking: the chosen k's, then ``<metric>_k<k>`` for every k tried."""
        chosen = self.metrics_by_k[self.k]
        out: dict[str, float] = {"k": float(self.k), "silhouette": chosen["silhouette"], "cost": chosen["cost"]}
        for k, m in sorted(self.metrics_by_k.items()):
            out.update({f"{name}_k{k}": value for name, value in m.items() if name != "clusters"})
        return out


def select_k(
    prepared: DataFrame,
    *,
    algorithm: Algorithm,
    k_values: Sequence[int],
    seed: int,
    max_iter: int,
    silhouette_tolerance: float = 0.0,
    min_cluster_share: float = 0.0,
    restarts: int = 1,
    tol: float = KMEANS_TOL,
    parallelism: int = 1,
) -> KSelection:
    """Fit the clusterer for every k on ``prepared`` (with :data:`SCALED`; cache it first) and
    choose one with :func:`choose_k`.

    Each k is fitted ``restarts`` times with seeds ``seed, seed + 1, ...`` and the fit with the
    lowest cost is kept: k-means converges to a local optimum that depends on its initial
    centres, and one unlucky start would otherwise decide the silhouette of that k.

    ``parallelism``: k-means and bisecting k-means fits (and then per-k evaluations) submitted at
    once from as many driver threads, as MLlib's tuning does. On small inputs every k-means
    iteration is a Spark job whose scheduling latency dwarfs its work, so concurrent fits overlap
    that latency; each fit is seeded, so the result does not depend on the order in which they
    finish. Gaussian mixtures are always fitted one at a time: their covariance step calls the
    pure-Java LAPACK (F2J) eigen-solver, which is not thread-safe, and concurrent fits left a task
    spinning forever in ``dlascl``.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    ks = sorted(set(k_values))
    attempts = [(k, attempt) for k in ks for attempt in range(restarts)]

    def fit(job: tuple[int, int]) -> Model:
        k, attempt = job
        return clusterer(algorithm=algorithm, k=k, seed=seed + attempt, max_iter=max_iter, tol=tol).fit(prepared)

    def keep(k: int) -> tuple[Model, dict[str, float]]:
        # on equal costs, min keeps the earliest seed
        best = min(range(restarts), key=lambda attempt: sum(_cost(m) for m in moments[(k, attempt)]))
        model = fitted[(k, best)]
        return model, clustering_metrics(model.transform(prepared), moments=moments[(k, best)])

    with ThreadPoolExecutor(max_workers=1 if algorithm == "gmm" else parallelism) as pool:
        # inheritable: the driver threads' jobs keep the caller's job group (the stage's)
        fitted = dict(zip(attempts, pool.map(inheritable_thread_target(fit), attempts), strict=True))
        moments = dict(zip(attempts, fit_moments(prepared, [fitted[a] for a in attempts]), strict=True))
        kept = dict(zip(ks, pool.map(inheritable_thread_target(keep), ks), strict=True))
    models = {k: model for k, (model, _) in kept.items()}
    metrics = {k: m for k, (_, m) in kept.items()}
    k = choose_k(metrics, silhouette_tolerance=silhouette_tolerance, min_cluster_share=min_cluster_share)
    return KSelection(k=k, model=models[k], metrics_by_k=metrics)


# -- assignment -------------------------------------------------------------------------------
def cluster_centers(model: Model) -> list[list[float]]:
    """Centre of each cluster id in the scaled space (a GMM component's mean)."""
    if isinstance(model, GaussianMixtureModel):
        return [g.mean.toArray().tolist() for g in model.gaussians]
    return [c.tolist() for c in model.clusterCenters()]  # type: ignore[attr-defined]


def assign_clusters(prepared: DataFrame, model: Model) -> DataFrame:
    """``prepared`` with :data:`CLUSTER` and :data:`DISTANCE` (Euclidean, scaled space,
    from the customer to the centre of its cluster)."""
    centers = prepared.sparkSession.createDataFrame(
        list(enumerate(cluster_centers(model))), f"{CLUSTER} int, _center array<double>"
    )
    diff = F.zip_with(vector_to_array(F.col(SCALED)), F.col("_center"), lambda a, b: a - b)
    predicted = model.transform(prepared)
    if _PROBABILITY in predicted.columns:
        predicted = predicted.drop(_PROBABILITY)
    return (
        predicted.join(F.broadcast(centers), CLUSTER)
        .withColumn(DISTANCE, F.sqrt(_squared_norm(diff)))
        .drop("_center")
    )


def with_segment_names(assigned: DataFrame, names: Mapping[int, str]) -> DataFrame:
    """Add :data:`SEGMENT` from a cluster id -> name mapping (see :func:`name_segments`)."""
    pairs = [F.lit(x) for cluster, name in sorted(names.items()) for x in (int(cluster), name)]
    return assigned.withColumn(SEGMENT, F.create_map(*pairs)[F.col(CLUSTER)])


def unclustered(features: DataFrame, *, segment_name: str) -> DataFrame:
    """Customers left out of the clustering: null cluster and distance, a fixed segment name."""
    return (
        features.withColumn(CLUSTER, F.lit(None).cast("int"))
        .withColumn(DISTANCE, F.lit(None).cast("double"))
        .withColumn(SEGMENT, F.lit(segment_name))
    )


# -- profiles ---------------------------------------------------------------------------------
def segment_profiles(segments: DataFrame, *, by: Sequence[str], columns: Sequence[str]) -> DataFrame:
    """One row per group ``by``: ``customers``, ``customer_share`` (of all rows),
    ``revenue_share`` (its share of the summed ``monetary``; 0 when nobody spent) and the mean of
    every column in ``columns`` (booleans as the share of true)."""
    means = [F.avg(F.col(c).cast("double")).alias(c) for c in columns]
    grouped = segments.groupBy(*by).agg(
        F.count(F.lit(1)).alias("customers"), F.sum(F.col(REVENUE).cast("double")).alias("_revenue"), *means
    )
    totals = segments.agg(
        F.count(F.lit(1)).alias("_all_customers"), F.sum(F.col(REVENUE).cast("double")).alias("_all_revenue")
    )
    revenue_share = F.when(F.col("_all_revenue") > 0, F.col("_revenue") / F.col("_all_revenue")).otherwise(F.lit(0.0))
    return (
        grouped.crossJoin(totals)
        .withColumn("customer_share", F.col("customers") / F.col("_all_customers"))
        .withColumn("revenue_share", F.coalesce(revenue_share, F.lit(0.0)))
        .select(*by, "customers", "customer_share", "revenue_share", *columns)
    )


def profile_rows(assigned: DataFrame, *, columns: Sequence[str] = NAMING_COLUMNS) -> list[dict[str, Any]]:
    """The per-cluster profiles as plain dicts (k small rows), input of :func:`name_segments`."""
    wanted = list(dict.fromkeys([*NAMING_COLUMNS, *columns]))
    rows = segment_profiles(assigned, by=[CLUSTER], columns=wanted).orderBy(CLUSTER).collect()
    return [r.asDict() for r in rows]


# -- naming -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamingRules:
    """Thresholds of :func:`segment_name` (ratios of a cluster mean to the population mean)."""

    new_max_tenure_ratio: float = 0.5
    lapsed_min_recency_ratio: float = 1.5
    dormant_max_monetary_ratio: float = 0.25
    high_value_min_monetary_ratio: float = 2.0
    loyal_min_frequency_ratio: float = 1.5
    bargain_min_frequency_ratio: float = 1.0
    bargain_max_aov_ratio: float = 0.75
    regular_min_frequency_ratio: float = 1.0


SEGMENT_NAMES: tuple[str, ...] = (
    "New", "At-risk", "Dormant", "High-value loyal", "Bargain hunters", "Regulars", "Occasional",
)


def segment_name(ratios: Mapping[str, float], rules: NamingRules) -> str:
    """The name of a cluster from its profile ratios (cluster mean / population mean per
    :data:`NAMING_COLUMNS`); the first rule that holds wins:

    ================  ==========================================================================
    New               tenure_days <= new_max_tenure_ratio (joined recently; checked first, since
                      new customers also look recent and low-spend)
    At-risk           recency_days >= lapsed_min_recency_ratio and monetary >
                      dormant_max_monetary_ratio (used to spend, gone quiet: worth a win-back)
    Dormant           recency_days >= lapsed_min_recency_ratio (gone quiet, spent little)
    High-value loyal  monetary >= high_value_min_monetary_ratio and frequency >=
                      loyal_min_frequency_ratio
    Bargain hunters   frequency >= bargain_min_frequency_ratio and avg_order_value <=
                      bargain_max_aov_ratio (buy often, in small or discounted baskets)
    Regulars          frequency >= regular_min_frequency_ratio
    Occasional        anything else
    ================  ==========================================================================
    """
    r = ratios
    if r["tenure_days"] <= rules.new_max_tenure_ratio:
        return "New"
    if r["recency_days"] >= rules.lapsed_min_recency_ratio:
        return "At-risk" if r["monetary"] > rules.dormant_max_monetary_ratio else "Dormant"
    if r["monetary"] >= rules.high_value_min_monetary_ratio and r["frequency"] >= rules.loyal_min_frequency_ratio:
        return "High-value loyal"
    if r["frequency"] >= rules.bargain_min_frequency_ratio and r["avg_order_value"] <= rules.bargain_max_aov_ratio:
        return "Bargain hunters"
    if r["frequency"] >= rules.regular_min_frequency_ratio:
        return "Regulars"
    return "Occasional"


def profile_ratios(profiles: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Each profile's :data:`NAMING_COLUMNS` means divided by the population mean (the
    customer-weighted mean of the profiles). A column whose population mean is 0 gives 1.0 for a
    cluster at 0 and infinity above it."""
    total = sum(int(p["customers"]) for p in profiles)
    if total <= 0:
        raise ValueError("profiles hold no customers")
    population = {c: sum(float(p[c]) * int(p["customers"]) for p in profiles) / total for c in NAMING_COLUMNS}

    def ratio(value: float, mean: float) -> float:
        if mean > 0:
            return value / mean
        return 1.0 if value <= 0 else math.inf

    return [{c: ratio(float(p[c]), population[c]) for c in NAMING_COLUMNS} for p in profiles]


def name_segments(
    profiles: Sequence[Mapping[str, Any]], *, rules: NamingRules = NamingRules(), key: str = CLUSTER
) -> dict[Any, str]:
    """Cluster id -> segment name, from the profiles of all clustered customers.

    Each profile (a dict with ``key``, ``customers`` and the :data:`NAMING_COLUMNS` means, as
    :func:`profile_rows` returns) is named by :func:`segment_name`. When several clusters get
    the same name, each is told apart by where it differs most from the others of that name
    ("Occasional (higher spend)", "Occasional (more recent)"; see :data:`QUALIFIERS`), taking
    them in order of mean monetary (highest first), then frequency, then customers; a cluster
    within 10 % of its namesakes on every column is numbered instead ("Occasional 2"). The ids
    only carry the names: relabel the clusters and every profile keeps its name.
    """
    ratios = profile_ratios(profiles)
    base = [segment_name(r, rules) for r in ratios]
    names: dict[Any, str] = {}
    for name in dict.fromkeys(base):
        holders = sorted((p for p, b in zip(profiles, base) if b == name), key=_rank_key)
        if len(holders) == 1:
            names[holders[0][key]] = name
            continue
        taken: set[tuple[str, bool]] = set()
        for i, p in enumerate(holders):
            others = [o for o in holders if o is not p]
            qualifier = _qualifier(p, others, taken)
            if qualifier:
                names[p[key]] = f"{name} ({QUALIFIERS[qualifier]})"
            else:
                names[p[key]] = name if i == 0 else f"{name} {i + 1}"
    return names


# How a cluster differs from the namesakes it is told apart from: (column, above them) -> words.
QUALIFIERS: dict[tuple[str, bool], str] = {
    ("monetary", True): "higher spend", ("monetary", False): "lower spend",
    ("frequency", True): "more orders", ("frequency", False): "fewer orders",
    ("avg_order_value", True): "bigger baskets", ("avg_order_value", False): "smaller baskets",
    ("recency_days", True): "longer gone", ("recency_days", False): "more recent",
    ("tenure_days", True): "longer-standing", ("tenure_days", False): "newer",
}
_MIN_DIFFERENCE = math.log(1.1)


def _qualifier(
    profile: Mapping[str, Any], others: Sequence[Mapping[str, Any]], taken: set[tuple[str, bool]]
) -> tuple[str, bool] | None:
    """The column (and direction) where ``profile`` differs most from the customer-weighted mean
    of ``others``, on a log scale, among those not ``taken``; None under 10 % everywhere."""
    weight = sum(int(o["customers"]) for o in others) or 1
    gaps = []
    for c in NAMING_COLUMNS:
        mean = sum(float(o[c]) * int(o["customers"]) for o in others) / weight
        gap = math.log((max(float(profile[c]), 0.0) + 1.0) / (max(mean, 0.0) + 1.0))
        gaps.append((abs(gap), (c, gap > 0)))
    for size, qualifier in sorted(gaps, key=lambda g: -g[0]):
        if size < _MIN_DIFFERENCE:
            return None
        if qualifier not in taken:
            taken.add(qualifier)
            return qualifier
    return None


def _rank_key(profile: Mapping[str, Any]) -> tuple[float, ...]:
    # Profiles equal on all of these would be the same segment; the id is never a tie-breaker
    # that matters in practice.
    return (
        -float(profile["monetary"]), -float(profile["frequency"]), -int(profile["customers"]),
        float(profile["recency_days"]), float(profile["tenure_days"]), float(profile["avg_order_value"]),
    )


# -- projection -------------------------------------------------------------------------------
def projection(segments: DataFrame, *, max_points: int, total: int, seed: int) -> tuple[DataFrame, tuple[float, float]]:
    """A sample of at most ``max_points`` clustered customers on the first two principal
    components of :data:`SCALED` (fitted on all rows): ``pc1, pc2, cluster_id, segment_name``,
    and the share of variance each component explains."""
    clustered = segments.where(F.col(CLUSTER).isNotNull())
    pca = PCA(k=2, inputCol=SCALED, outputCol="_pc").fit(clustered)
    sample = at_most(clustered, max_points, total=total, seed=seed)
    pcs = vector_to_array(F.col("_pc"))
    points = pca.transform(sample).select(pcs[0].alias("pc1"), pcs[1].alias("pc2"), CLUSTER, SEGMENT)
    explained = pca.explainedVariance.toArray()
    return points, (float(explained[0]), float(explained[1]))


def _squared_norm(values: Column) -> Column:
    return F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x * x)
