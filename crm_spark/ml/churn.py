"""Churn prediction (SPEC section 5, stage 6): point-in-time labels, model pipelines, evaluators,
the champion rule and per-customer explanations.

Vocabulary. An *as-of date* X is the date of a ``gold.customer_features`` row: its features use
data on or before X only. The *label* of that row looks forward: ``churned = 1`` when the
customer placed no completed order in (X, X + horizon] (or, for a customer table that carries
its own label, what ``silver.churn_labels`` says for a label dated in that window, or in
[X, X + horizon] when the label describes the snapshot X itself). A *scored*
frame holds ``churned`` and ``churn_probability`` per customer.

Model. One preprocessing for every classifier: median imputation of the numeric features,
one-hot encoding of the categoricals (alphabetical indices, unseen values kept in their own
slot), assembly and standardisation (mean 0, variance 1), so a logistic-regression coefficient
times a standardised value is that feature's additive contribution to the log-odds. The
classifier is a class-weighted LogisticRegression, tuned over regParam x elasticNetParam by
CrossValidator or TrainValidationSplit, or a GBTClassifier challenger.

Builders are lazy; ``fit`` calls fit (an action, like any estimator); the evaluators run small
aggregations and return plain numbers or small pandas frames (at most ``bins`` rows), never the
scored rows. Nothing here reads tables or config, or talks to MLflow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression, LogisticRegressionModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crm_spark.contracts.gold import CUSTOMER_FEATURES_DDL
from crm_spark.transforms.features import ATTRIBUTE_PREFIX, purchases

LABEL = "churned"
WEIGHT = "class_weight"
PROBABILITY = "churn_probability"
LABEL_END = "label_end_date"
RAW_FEATURES = "features__raw"
STD_FEATURES = "features__std"
KEY = ("customer_id", "as_of_date")

Tuning = Literal["cv", "tvs"]
ThresholdRule = Literal["max_f1", "target_recall"]
Metric = Literal["roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile"]
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "brier"})
_EPS = 1e-15  # log loss clips probabilities to [eps, 1 - eps]
_IMPUTED, _INDEXED, _ONE_HOT = "__imp", "__idx", "__ohe"


@dataclass(frozen=True)
class FeatureColumns:
    """The model inputs of ``gold.customer_features``, by how the pipeline treats them."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    boolean: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical, *self.boolean)


LABEL_KEY = "_label_key"  # which label a row carries: the same customer and key in two rows is one label used twice


def attribute_columns(kinds: Mapping[str, str]) -> FeatureColumns:
    """The model columns :func:`crm_spark.transforms.features.with_attributes` adds: ``attr_<name>``; numeric, boolean (0/1)
    and date (days before the as-of date) attributes are numeric, categorical ones categorical."""
    return FeatureColumns(
        numeric=tuple(f"{ATTRIBUTE_PREFIX}{n}" for n, k in kinds.items() if k in ("numeric", "boolean", "date")),
        categorical=tuple(f"{ATTRIBUTE_PREFIX}{n}" for n, k in kinds.items() if k == "categorical"),
        boolean=(),
    )


def combined(*groups: FeatureColumns, without: Sequence[str] = ()) -> FeatureColumns:
    """The columns of ``groups`` together, minus ``without``."""
    drop = set(without)

    def keep(kind: str) -> tuple[str, ...]:
        return tuple(c for g in groups for c in getattr(g, kind) if c not in drop)

    return FeatureColumns(numeric=keep("numeric"), categorical=keep("categorical"), boolean=keep("boolean"))


_HOLDOUT_GRID = 1_000_000


def stratified_holdout(labeled: DataFrame, *, share: float, seed: int) -> DataFrame:
    """``labeled`` + ``split``: ``eval`` for the customers whose seeded hash of the id falls in the
    lowest ``share`` of its range, else ``train``. Each customer's side depends on its id and the
    seed only, never on who else is in the data, so a later run with the same seed and share
    holds out the same customers (the champion's training customers stay out of its holdout);
    each class is held out at about ``share`` (a uniform draw per customer, independent of the label)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"holdout share must lie in (0, 1), got {share}")
    draw = F.pmod(F.xxhash64(F.col("customer_id"), F.lit(seed)), F.lit(_HOLDOUT_GRID))
    held = draw < F.lit(int(round(share * _HOLDOUT_GRID)))
    return labeled.withColumn("split", F.when(held, F.lit("eval")).otherwise(F.lit("train")))


def shared_labels(train: DataFrame, evaluate: DataFrame) -> int:
    """Evaluation rows that carry a label some training row carries too (same customer, same
    ``_label_key``): such an evaluation measures memory, not prediction. One join."""
    key = ["customer_id", LABEL_KEY]
    return int(evaluate.select(*key).join(train.select(*key).distinct(), key, "left_semi").count())


def feature_columns(ddl: str = CUSTOMER_FEATURES_DDL) -> FeatureColumns:
    """Every column of the features contract except the key, grouped by type (no SparkSession needed)."""
    fields = re.findall(r"(?:^|,)\s*(\w+)\s+(\w+)", ddl)
    kept = [(name, kind.lower()) for name, kind in fields if name not in KEY]
    return FeatureColumns(
        numeric=tuple(n for n, k in kept if k in ("int", "bigint", "double", "float", "smallint")),
        categorical=tuple(n for n, k in kept if k == "string"),
        boolean=tuple(n for n, k in kept if k == "boolean"),
    )


# -- labels ----------------------------------------------------------------------------------
def population(features: DataFrame, *, who: Literal["buyers", "all"]) -> DataFrame:
    """The customers a churn model is about: ``buyers`` (a completed order by the as-of date) or all."""
    return features.where(F.col("has_orders")) if who == "buyers" else features


def computed_labels(
    features: DataFrame,
    orders: DataFrame,
    *,
    horizon_days: int,
    order_items: DataFrame | None = None,
    count_zero_value_orders: bool = False,
) -> DataFrame:
    """``features`` + ``label_end_date`` + ``churned``: 1 when the customer has no purchase
    dated in (as_of_date, as_of_date + horizon_days], else 0.

    A purchase is a completed order, with ``order_items`` one whose accepted lines add up to more
    than 0 unless ``count_zero_value_orders`` (:func:`crm_spark.transforms.features.is_purchase`,
    the rule the features use); without them every completed order. The window opens strictly after the as-of date (an order on the
    as-of date is already in the features) and includes its last day. Orders of other statuses
    do not keep a customer. Works for frames holding several as-of dates: each row looks at its
    own window.
    """
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, got {horizon_days}")
    windows = features.select(*KEY).withColumn(LABEL_END, F.date_add(F.col("as_of_date"), horizon_days))
    known = orders.where(F.col("customer_id").isNotNull() & F.col("order_date").isNotNull())
    completed = purchases(known, order_items, count_zero_value_orders=count_zero_value_orders).select(
        F.col("customer_id").alias("_o_customer"), F.col("order_date").alias("_o_date")
    )
    retained = (
        windows.join(
            completed,
            (F.col("customer_id") == F.col("_o_customer"))
            & (F.col("_o_date") > F.col("as_of_date"))
            & (F.col("_o_date") <= F.col(LABEL_END)),
            "left_semi",
        )
        .select(*KEY)
        .withColumn("_retained", F.lit(True))
    )
    return (
        features.join(retained, list(KEY), "left")
        .withColumn(LABEL_END, F.date_add(F.col("as_of_date"), horizon_days))
        .withColumn(LABEL, F.when(F.col("_retained"), F.lit(0)).otherwise(F.lit(1)))
        .drop("_retained")
    )


def provided_labels(
    features: DataFrame, labels: DataFrame, *, horizon_days: int, snapshot: bool = False
) -> DataFrame:
    """``features`` + ``label_end_date`` + ``churned`` from a user label table (customer_id, churned, label_date).

    A label applies to an as-of date X when its ``label_date`` lies in (X, X + horizon_days],
    the same window a computed label looks at, so a label already known at X never leaks into
    X's training row; an undated label (null ``label_date``) applies to every as-of date.
    ``snapshot``: the label describes the snapshot the features are taken from, so a label dated
    X itself applies too ([X, X + horizon_days]). Customers without an applicable label drop out.
    """
    known = labels.where(F.col("customer_id").isNotNull() & F.col("churned").isNotNull()).select(
        F.col("customer_id").alias("_l_customer"), F.col("churned").alias("_l_churned"), F.col("label_date").alias("_l_date")
    )
    end = F.date_add(F.col("as_of_date"), horizon_days)
    after = F.col("_l_date") >= F.col("as_of_date") if snapshot else F.col("_l_date") > F.col("as_of_date")
    applies = F.col("_l_date").isNull() | (after & (F.col("_l_date") <= end))
    return (
        features.join(known, F.col("customer_id") == F.col("_l_customer"), "inner")
        .where(applies)
        .withColumn(LABEL_END, end)
        .withColumn(LABEL, F.col("_l_churned").cast("int"))
        .withColumn(LABEL_KEY, F.coalesce(F.col("_l_date").cast("string"), F.lit("undated")))
        .drop("_l_customer", "_l_churned", "_l_date")
    )


def label_counts(labeled: DataFrame) -> dict[str, float]:
    """Rows and churners of a labelled frame (one aggregation)."""
    row = labeled.agg(F.count(F.lit(1)).alias("rows"), F.coalesce(F.sum(LABEL), F.lit(0)).alias("positives")).first()
    return {"rows": float(row["rows"]), "positives": float(row["positives"])}


def balanced_weights(*, rows: float, positives: float) -> tuple[float, float]:
    """(negative, positive) weights n / (2 n_class): both classes weigh half of the loss."""
    negatives = rows - positives
    if positives <= 0 or negatives <= 0:
        raise ValueError(f"both classes are needed for class weights ({positives:.0f} of {rows:.0f} rows churned)")
    return rows / (2.0 * negatives), rows / (2.0 * positives)


def with_class_weight(labeled: DataFrame, *, negative: float, positive: float) -> DataFrame:
    """Adds ``class_weight`` per row from its label."""
    return labeled.withColumn(WEIGHT, F.when(F.col(LABEL) == 1, F.lit(positive)).otherwise(F.lit(negative)))


# -- model -----------------------------------------------------------------------------------
def preprocessing(columns: FeatureColumns) -> list:
    """Imputer -> StringIndexer -> OneHotEncoder -> VectorAssembler -> StandardScaler stages."""
    imputed = [f"{c}{_IMPUTED}" for c in columns.numeric]
    indexed = [f"{c}{_INDEXED}" for c in columns.categorical]
    one_hot = [f"{c}{_ONE_HOT}" for c in columns.categorical]
    stages: list = [Imputer(inputCols=list(columns.numeric), outputCols=imputed, strategy="median")]
    if columns.categorical:
        stages += [
            StringIndexer(
                inputCols=list(columns.categorical), outputCols=indexed, handleInvalid="keep", stringOrderType="alphabetAsc"
            ),
            OneHotEncoder(inputCols=indexed, outputCols=one_hot, handleInvalid="keep"),
        ]
    stages += [
        VectorAssembler(inputCols=[*imputed, *columns.boolean, *one_hot], outputCol=RAW_FEATURES, handleInvalid="keep"),
        StandardScaler(inputCol=RAW_FEATURES, outputCol=STD_FEATURES, withMean=True, withStd=True),
    ]
    return stages


def logistic_regression(*, max_iter: int, weighted: bool, tol: float = 1e-6) -> LogisticRegression:
    lr = LogisticRegression(featuresCol=STD_FEATURES, labelCol=LABEL, maxIter=max_iter, tol=tol, family="binomial")
    return lr.setWeightCol(WEIGHT) if weighted else lr


def gbt_classifier(*, max_iter: int, max_depth: int, step_size: float, seed: int, weighted: bool) -> GBTClassifier:
    gbt = GBTClassifier(
        featuresCol=STD_FEATURES, labelCol=LABEL, maxIter=max_iter, maxDepth=max_depth, stepSize=step_size, seed=seed
    )
    return gbt.setWeightCol(WEIGHT) if weighted else gbt


def churn_pipeline(classifier: LogisticRegression | GBTClassifier, columns: FeatureColumns | None = None) -> Pipeline:
    """Preprocessing + ``classifier``: fitted, it takes raw ``gold.customer_features`` rows."""
    return Pipeline(stages=[*preprocessing(columns or feature_columns()), classifier])


def tuned_logistic_regression(
    *,
    max_iter: int,
    weighted: bool,
    tuning: Tuning,
    tol: float = 1e-6,
    reg_params: Sequence[float],
    elastic_net_params: Sequence[float],
    folds: int,
    train_ratio: float,
    seed: int,
    metric: Literal["areaUnderROC", "areaUnderPR"] = "areaUnderROC",
    columns: FeatureColumns | None = None,
    parallelism: int = 1,
) -> CrossValidator | TrainValidationSplit:
    """The LR pipeline inside a seeded CrossValidator (``cv``) or TrainValidationSplit (``tvs``).

    Preprocessing is inside the tuned pipeline, so each fold fits its own imputer and scaler.
    """
    lr = logistic_regression(max_iter=max_iter, weighted=weighted, tol=tol)
    grid = ParamGridBuilder().addGrid(lr.regParam, list(reg_params)).addGrid(lr.elasticNetParam, list(elastic_net_params))
    evaluator = BinaryClassificationEvaluator(labelCol=LABEL, rawPredictionCol="rawPrediction", metricName=metric)
    pipeline = churn_pipeline(lr, columns)
    if tuning == "cv":
        return CrossValidator(
            estimator=pipeline, estimatorParamMaps=grid.build(), evaluator=evaluator, numFolds=folds, seed=seed, parallelism=parallelism
        )
    if tuning == "tvs":
        return TrainValidationSplit(
            estimator=pipeline, estimatorParamMaps=grid.build(), evaluator=evaluator, trainRatio=train_ratio, seed=seed,
            parallelism=parallelism,
        )
    raise ValueError(f"tuning must be 'cv' or 'tvs', got {tuning!r}")


def tuning_results(tuned: object) -> list[dict[str, float]]:
    """One dict per grid point of a fitted CrossValidatorModel / TrainValidationSplitModel: its params and metric."""
    metrics = getattr(tuned, "avgMetrics", None) or getattr(tuned, "validationMetrics")
    out = []
    for params, value in zip(tuned.getEstimatorParamMaps(), metrics, strict=True):  # type: ignore[attr-defined]
        row = {p.name: float(v) for p, v in params.items()}
        row["metric"] = float(value)
        out.append(row)
    return out


def model_kind(model: PipelineModel) -> str:
    return "logistic_regression" if isinstance(model.stages[-1], LogisticRegressionModel) else "gbt"


# -- scoring and explanations ------------------------------------------------------------------
def score(model: PipelineModel, features: DataFrame) -> DataFrame:
    """``features`` through a fitted churn pipeline, plus ``churn_probability`` (P(churned = 1))."""
    return model.transform(features).withColumn(PROBABILITY, vector_to_array(F.col("probability")).getItem(1))


def feature_names(model: PipelineModel, features: DataFrame) -> list[str]:
    """Readable names of the standardised vector's slots: ``recency_days``, ``rfm_segment=At Risk``.

    Read from the assembler's ML attributes on an empty transform (no Spark job runs).
    """
    meta = model.transform(features.limit(0)).schema[RAW_FEATURES].metadata["ml_attr"]
    slots: dict[int, str] = {}
    for group in meta["attrs"].values():
        for attr in group:
            slots[int(attr["idx"])] = _readable(attr["name"])
    return [slots[i] for i in range(int(meta["num_attrs"]))]


def _readable(name: str) -> str:
    if name.endswith(_IMPUTED):
        return name[: -len(_IMPUTED)]
    column, sep, value = name.partition(f"{_ONE_HOT}_")
    if sep:
        return f"{column}=(unseen)" if value == "__unknown" else f"{column}={value}"
    return name


def explanation_weights(model: PipelineModel) -> tuple[list[float], bool]:
    """Per-slot weights and whether they are signed: LR coefficients (signed), else tree importances."""
    classifier = model.stages[-1]
    if isinstance(classifier, LogisticRegressionModel):
        return [float(v) for v in classifier.coefficients.toArray()], True
    return [float(v) for v in classifier.featureImportances.toArray()], False


def top_contributions(
    scored: DataFrame,
    *,
    names: Sequence[str],
    weights: Sequence[float],
    signed: bool,
    top_n: int = 3,
    features_col: str = STD_FEATURES,
) -> DataFrame:
    """Adds ``top_feature_1..top_n``: the features pushing each customer's churn risk up the most.

    Signed weights (LR coefficients b): contribution = b x z, z the standardised value, i.e. the
    feature's share of the log-odds relative to an average customer; only positive
    contributions count. Unsigned weights (tree importances w): w x |z|, how far the customer
    sits from average on features the model relies on. Ties go to the name sorting last; a slot
    is null when fewer features contribute. Native Spark array functions, no UDF.
    """
    if len(names) != len(weights):
        raise ValueError(f"{len(names)} names for {len(weights)} weights")
    w = F.array(*(F.lit(float(v)) for v in weights))
    n = F.array(*(F.lit(s) for s in names))
    z = vector_to_array(F.col(features_col))

    def contribution(x: Column, i: Column) -> Column:
        size = x * F.get(w, i) if signed else F.abs(x) * F.get(w, i)
        return F.struct(size.alias("c"), F.get(n, i).alias("name"))

    ranked = F.sort_array(F.filter(F.transform(z, contribution), lambda p: p["c"] > 0), asc=False)
    out = scored.withColumn("_ranked", ranked)
    for k in range(top_n):
        out = out.withColumn(f"top_feature_{k + 1}", F.get(F.col("_ranked"), k).getField("name"))
    return out.drop("_ranked")


def risk_band(bands: Sequence[tuple[str, float]], probability: Column | None = None) -> Column:
    """The first (band, min_probability) whose cut-off the probability reaches; bands sorted high to low."""
    p = F.col(PROBABILITY) if probability is None else probability
    expr: Column | None = None
    for name, cut in bands:
        expr = F.when(p >= F.lit(cut), F.lit(name)) if expr is None else expr.when(p >= F.lit(cut), F.lit(name))
    if expr is None:
        raise ValueError("at least one risk band is needed")
    return expr


# -- evaluation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """Metrics of one scored frame, the threshold curve and the calibration table behind them."""

    metrics: dict[str, float]
    curve: pd.DataFrame  # one row per threshold on the grid (see threshold_curve)
    calibration: pd.DataFrame  # one row per non-empty probability group (see calibration_table)


def roc_auc(scored: DataFrame, *, score_col: str = PROBABILITY, label_col: str = LABEL) -> float:
    """Area under the ROC curve of any score (higher = more likely churned)."""
    return _area(scored, score_col=score_col, label_col=label_col, metric="areaUnderROC")


def _area(scored: DataFrame, *, score_col: str, label_col: str, metric: str) -> float:
    frame = scored.select(F.col(score_col).cast("double").alias("_s"), F.col(label_col).cast("double").alias("_y"))
    evaluator = BinaryClassificationEvaluator(rawPredictionCol="_s", labelCol="_y", metricName=metric)
    return float(evaluator.evaluate(frame))


def probability_metrics(scored: DataFrame, *, prob_col: str = PROBABILITY, label_col: str = LABEL) -> dict[str, float]:
    """rows, positives, base_rate, log_loss (probabilities clipped to [1e-15, 1 - 1e-15]) and brier."""
    p = F.least(F.greatest(F.col(prob_col), F.lit(_EPS)), F.lit(1.0 - _EPS))
    y = F.col(label_col).cast("double")
    row = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(y).alias("positives"),
        F.avg(-(y * F.log(p) + (F.lit(1.0) - y) * F.log(F.lit(1.0) - p))).alias("log_loss"),
        F.avg(F.pow(F.col(prob_col) - y, 2)).alias("brier"),
    ).first()
    rows = float(row["rows"])
    if rows == 0:
        raise ValueError("cannot evaluate an empty scored frame")
    positives = float(row["positives"])
    return {
        "rows": rows,
        "positives": positives,
        "base_rate": positives / rows,
        "log_loss": float(row["log_loss"]),
        "brier": float(row["brier"]),
    }


def top_decile_lift(
    scored: DataFrame, *, prob_col: str = PROBABILITY, label_col: str = LABEL, key_col: str = "customer_id"
) -> dict[str, float]:
    """Lift and capture rate of the top decile of customers by probability.

    The top decile is the ceil(n / 10) highest probabilities (ties broken by ``key_col``, so the
    set is deterministic); capture = churners in it / all churners; lift = its churn rate / the
    overall rate. Spark keeps a top-k per partition, so no global sort of the scored rows.
    """
    totals = scored.agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col(label_col)).alias("positives")).first()
    rows, positives = int(totals["rows"]), float(totals["positives"] or 0)
    k = math.ceil(rows / 10)
    if rows == 0 or positives == 0:
        return {"lift_top_decile": float("nan"), "capture_top_decile": float("nan")}
    top = scored.orderBy(F.col(prob_col).desc(), F.col(key_col).asc()).limit(k)
    caught = float(top.agg(F.sum(F.col(label_col))).first()[0] or 0)
    return {"lift_top_decile": (caught / k) / (positives / rows), "capture_top_decile": caught / positives}


def score_bins(scored: DataFrame, *, bins: int, prob_col: str = PROBABILITY, label_col: str = LABEL) -> DataFrame:
    """One row per non-empty probability bin ``floor(p x bins)`` (p = 1 joins the top bin):
    ``bin, rows, positives, probability_sum``. At most ``bins`` rows, whatever the input size."""
    b = F.least(F.floor(F.col(prob_col) * F.lit(bins)), F.lit(bins - 1)).cast("int")
    return scored.groupBy(b.alias("bin")).agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col(label_col).cast("long")).alias("positives"),
        F.sum(F.col(prob_col)).alias("probability_sum"),
    )


def threshold_curve(bins_table: pd.DataFrame, *, bins: int) -> pd.DataFrame:
    """Confusion counts at every threshold t = i / bins (i = bins .. 0), predicting churn when a
    row's bin is >= i: ``threshold, tp, fp, tn, fn, precision, recall, f1, fpr, share_flagged``.

    Row i = bins flags nobody (the ROC curve's origin); row i = 0 flags everybody.
    """
    counts = pd.DataFrame({"bin": range(bins)}).merge(bins_table[["bin", "rows", "positives"]], on="bin", how="left")
    counts = counts.fillna(0).sort_values("bin", ascending=False)
    pos_total = float(counts["positives"].sum())
    neg_total = float((counts["rows"] - counts["positives"]).sum())
    tp = counts["positives"].cumsum().to_numpy(dtype=float)
    fp = (counts["rows"] - counts["positives"]).cumsum().to_numpy(dtype=float)
    curve = pd.DataFrame({"threshold": counts["bin"].to_numpy() / bins, "tp": tp, "fp": fp})
    curve = pd.concat([pd.DataFrame({"threshold": [1.0], "tp": [0.0], "fp": [0.0]}), curve], ignore_index=True)
    curve["fn"] = pos_total - curve["tp"]
    curve["tn"] = neg_total - curve["fp"]
    flagged = curve["tp"] + curve["fp"]
    curve["precision"] = (curve["tp"] / flagged.where(flagged > 0)).fillna(1.0)
    curve["recall"] = curve["tp"] / pos_total if pos_total else 0.0
    denom = curve["precision"] + curve["recall"]
    curve["f1"] = (2 * curve["precision"] * curve["recall"] / denom.where(denom > 0)).fillna(0.0)
    curve["fpr"] = curve["fp"] / neg_total if neg_total else 0.0
    total = pos_total + neg_total
    curve["share_flagged"] = flagged / total if total else 0.0
    return curve


def choose_threshold(curve: pd.DataFrame, *, rule: ThresholdRule, target_recall: float = 0.8) -> pd.Series:
    """The curve row of the chosen threshold.

    ``max_f1``: the highest F1 (among equal F1, the highest threshold: fewer customers flagged);
    ``target_recall``: the highest threshold whose recall reaches ``target_recall``.
    """
    usable = curve[curve["threshold"] < 1.0]  # the flag-nobody row is not a threshold to act on
    if rule == "max_f1":
        best = usable["f1"].max()
        return usable[usable["f1"] == best].sort_values("threshold", ascending=False).iloc[0]
    if rule == "target_recall":
        reaching = usable[usable["recall"] >= target_recall - 1e-12]
        return reaching.sort_values("threshold", ascending=False).iloc[0]
    raise ValueError(f"threshold rule must be 'max_f1' or 'target_recall', got {rule!r}")


def calibration_table(bins_table: pd.DataFrame, *, bins: int, groups: int = 10) -> pd.DataFrame:
    """Reliability diagram data: per probability group (``groups`` equal widths), ``group,
    rows, mean_probability, observed_rate``; empty groups are left out."""
    frame = bins_table.assign(group=(bins_table["bin"] * groups) // bins)
    out = frame.groupby("group", as_index=False)[["rows", "positives", "probability_sum"]].sum()
    out["mean_probability"] = out["probability_sum"] / out["rows"]
    out["observed_rate"] = out["positives"] / out["rows"]
    return out[["group", "rows", "mean_probability", "observed_rate"]].sort_values("group").reset_index(drop=True)


def evaluate(
    scored: DataFrame,
    *,
    bins: int,
    rule: ThresholdRule,
    target_recall: float,
    key_col: str = "customer_id",
    threshold: float | None = None,
) -> Evaluation:
    """Every metric of stage 6 on a scored frame with known labels.

    ``roc_auc``, ``pr_auc`` (Spark's trapezoidal area under precision-recall), ``log_loss``,
    ``brier``, ``lift_top_decile``, ``capture_top_decile``, ``base_rate``, ``rows``,
    ``positives`` and the confusion matrix (``threshold``, ``tp``, ``fp``, ``tn``, ``fn``,
    ``precision``, ``recall``, ``f1``) at ``threshold`` (chosen beforehand on other rows, see
    :func:`pick_threshold`), or else at the one the rule picks on these rows on the ``bins`` grid.
    Cache ``scored`` first: each metric is one pass.
    """
    metrics = probability_metrics(scored)
    if metrics["positives"] in (0.0, metrics["rows"]):
        raise ValueError(f"both classes are needed to evaluate ({metrics['positives']:.0f} of {metrics['rows']:.0f} churned)")
    metrics["roc_auc"] = roc_auc(scored)
    metrics["pr_auc"] = _area(scored, score_col=PROBABILITY, label_col=LABEL, metric="areaUnderPR")
    metrics.update(top_decile_lift(scored, key_col=key_col))
    table = score_bins(scored, bins=bins).toPandas()
    curve = threshold_curve(table, bins=bins)
    if threshold is None:
        chosen = choose_threshold(curve, rule=rule, target_recall=target_recall)
    else:
        chosen = curve.iloc[int((curve["threshold"] - threshold).abs().to_numpy().argmin())]
    metrics.update({k: float(chosen[k]) for k in ("threshold", "tp", "fp", "tn", "fn", "precision", "recall", "f1")})
    return Evaluation(metrics=metrics, curve=curve, calibration=calibration_table(table, bins=bins))


def pick_threshold(scored: DataFrame, *, bins: int, rule: ThresholdRule, target_recall: float) -> float:
    """The threshold ``rule`` picks on ``scored`` (training rows): the evaluation then reports the
    confusion at it, so the threshold is never tuned on the rows it is judged on. One aggregation."""
    curve = threshold_curve(score_bins(scored, bins=bins).toPandas(), bins=bins)
    return float(choose_threshold(curve, rule=rule, target_recall=target_recall)["threshold"])


# -- champion rule -----------------------------------------------------------------------------
def beats(challenger: float, champion: float | None, *, metric: str, min_delta: float = 0.0) -> bool:
    """Whether a challenger's score on the evaluation data beats the champion's by more than
    ``min_delta`` (lower wins for log_loss and brier). No champion (None): it wins; a NaN score never wins."""
    if math.isnan(challenger):
        return False
    if champion is None or math.isnan(champion):
        return True
    if metric in LOWER_IS_BETTER:
        return challenger < champion - min_delta
    return challenger > champion + min_delta


def summarize_scores(scores: DataFrame, *, bands: Sequence[str]) -> dict[str, float]:
    """Rows, mean probability and customers per risk band of a scores frame (one aggregation)."""
    row = scores.agg(
        F.count(F.lit(1)).alias("rows"),
        F.avg(PROBABILITY).alias("mean_probability"),
        *(F.sum((F.col("risk_band") == F.lit(b)).cast("long")).alias(f"band.{b}") for b in bands),
    ).first()
    return {k: float(v) if v is not None else 0.0 for k, v in row.asDict().items()}


def named_weights(names: Sequence[str], weights: Sequence[float]) -> pd.DataFrame:
    """``feature, weight`` sorted by |weight| (the coefficient or importance plot's data)."""
    frame = pd.DataFrame({"feature": list(names), "weight": list(weights)})
    return frame.reindex(frame["weight"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def metric_direction(metric: str) -> Literal["lower", "higher"]:
    return "lower" if metric in LOWER_IS_BETTER else "higher"


def prefixed(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": float(v) for k, v in values.items()}
