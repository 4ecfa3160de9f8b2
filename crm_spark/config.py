"""Configuration: ``conf/base.yaml`` + one overlay, parsed once into frozen, typed settings.

Layers, later wins: ``base.yaml`` -> the overlay (``conf/<env>.yaml``, or the file given with
``--config``) -> command-line overrides (``--raw``, ``--lake``). ``${VAR}`` and
``${VAR:-default}`` in string values are replaced from the environment, so secrets stay out of
the files. Unknown keys and wrong types raise :class:`ConfigError` naming the key path and the
file that holds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from crm_spark.errors import ConfigError
from crm_spark.sqlcheck import check_expression

DEFAULT_ENV = "local"
ENV_VAR_ENV = "CRM_SPARK_ENV"
ENV_VAR_CONF_DIR = "CRM_SPARK_CONF_DIR"
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Section(BaseModel):
    """A config section: frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsSettings(_Section):
    """Where data lives. Relative paths resolve against the project root (the conf dir's parent)."""

    raw: str = Field(description="root URI of the raw landing zone; source paths are relative to it")
    lake: str = Field(description="root URI of the lakehouse (bronze/, silver/, gold/, ...)")


class SmallInputs(_Section):
    """Spark settings for a stage whose input tables are small (measured from the Delta log)."""

    max_bytes: int | None = Field(
        default=None, ge=0, description="a stage whose input tables hold fewer bytes than this runs with `conf`; null: never"
    )
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)


class SparkSettings(_Section):
    """Everything the session factory needs; nothing else builds a SparkSession."""

    master: str | None = Field(
        default=None, description="spark master; leave unset under spark-submit so its --master wins"
    )
    app_name: str = "crm-spark"
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    small_inputs: SmallInputs = Field(default_factory=lambda: SmallInputs())


class LakeSettings(_Section):
    engine: Literal["auto", "embedded", "delta-spark"] = "auto"
    delta_jars: str | None = Field(
        default=None,
        description="folder of delta-spark jars the session puts on spark.jars; default: the project's "
        "jars/delta, which make install fills from Maven Central; '' for none",
    )
    vacuum_retention_hours: int = Field(default=168, ge=0)
    umask: str | None = Field(
        default="027", pattern=r"^0?[0-7]{3}$",
        description="permission bits taken away from every file and folder the run writes (027: no access for "
        "others, read-only for the group); null leaves the process's umask",
    )
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict, description="object-store options for the embedded engine (deltalake)"
    )


class GenerateSettings(_Section):
    """Defaults of ``crm-spark generate`` (each can be overridden on its command line)."""

    customers: int = Field(default=2000, ge=100)
    seed: int = 7
    start: date = date(2024, 1, 1)
    end: date = date(2025, 12, 31)
    dirty_rate: float = Field(default=0.01, ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _range(self) -> GenerateSettings:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class IngestSettings(_Section):
    """What ingest does with a raw file it cannot read as rows (recorded in quarantine.rejected_files)."""

    on_rejected_file: Literal["warn", "error"] = Field(
        default="warn",
        description="warn: log it and go on; error: still ingest every other file and source, then exit non-zero (4)",
    )


class QualitySettings(_Section):
    """Table-level gate thresholds (row-level rules live with the refine stage)."""

    max_row_drop: float = Field(default=0.5, ge=0.0, le=1.0, description="largest allowed shrink vs previous version")
    freshness_days: int = Field(default=30, ge=0, description="newest event may be this many days before as-of")
    local_dir: str = Field(default="/tmp/crm-spark-quality", description="GX context dir when the lake is remote")


class SegmentRule(_Section):
    """One row of the RFM segment table: a name and inclusive score ranges; first match wins."""

    segment: str = Field(min_length=1)
    r: tuple[int, int] = (1, 5)
    f: tuple[int, int] = (1, 5)
    m: tuple[int, int] = (1, 5)

    @model_validator(mode="after")
    def _ranges(self) -> SegmentRule:
        for name in ("r", "f", "m"):
            low, high = getattr(self, name)
            if not 1 <= low <= high <= 5:
                raise ValueError(f"{name} range {[low, high]} of {self.segment!r} must satisfy 1 <= low <= high <= 5")
        return self

    def matches(self, r: int, f: int, m: int) -> bool:
        return self.r[0] <= r <= self.r[1] and self.f[0] <= f <= self.f[1] and self.m[0] <= m <= self.m[1]


_DEFAULT_SEGMENTS = (
    SegmentRule(segment="Champions", r=(4, 5), f=(4, 5), m=(4, 5)),
    SegmentRule(segment="Loyal", r=(3, 5), f=(3, 5)),
    SegmentRule(segment="New", r=(5, 5), f=(1, 1)),
    SegmentRule(segment="Potential Loyalist", r=(4, 5), f=(1, 2)),
    SegmentRule(segment="Need Attention", r=(3, 3), f=(1, 2)),
    SegmentRule(segment="Can't Lose", r=(1, 2), f=(4, 5), m=(4, 5)),
    SegmentRule(segment="At Risk", r=(1, 2), f=(3, 5)),
    SegmentRule(segment="Hibernating", r=(2, 2), f=(1, 2)),
    SegmentRule(segment="Lost", r=(1, 1), f=(1, 2)),
)


class FeaturesSettings(_Section):
    """Customer features (stage ``features``): the RFM segment table, value tiers, missing-value fills.

    ``segments`` must give every (r, f, m) score combination of 1..5 a segment (checked here);
    customers without a completed order get ``no_orders_segment`` instead.
    """

    segments: tuple[SegmentRule, ...] = Field(default=_DEFAULT_SEGMENTS, min_length=1)
    no_orders_segment: str = Field(default="Prospect", min_length=1)
    high_tier_percentile: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="value tier high: monetary percentile among buyers >= this"
    )
    mid_tier_percentile: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="value tier mid: monetary percentile among buyers >= this"
    )
    missing_rating: float = Field(default=3.0, ge=1.0, le=5.0, description="mean_rating of a customer without ratings")
    missing_nps: float = Field(default=7.5, ge=0.0, le=10.0, description="nps of a customer without NPS answers")
    count_zero_value_orders: bool = Field(
        default=False,
        description="a completed order without accepted lines adding up to more than 0 is a purchase (features, baskets, churn labels)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeaturesSettings:
        if self.mid_tier_percentile >= self.high_tier_percentile:
            raise ValueError(
                f"mid_tier_percentile ({self.mid_tier_percentile}) must be below "
                f"high_tier_percentile ({self.high_tier_percentile})"
            )
        uncovered = [
            (r, f, m)
            for r in range(1, 6)
            for f in range(1, 6)
            for m in range(1, 6)
            if not any(rule.matches(r, f, m) for rule in self.segments)
        ]
        if uncovered:
            shown = ", ".join(f"r={r} f={f} m={m}" for r, f, m in uncovered[:5])
            raise ValueError(f"segments leave {len(uncovered)} score combinations without a segment, e.g. {shown}")
        return self


class BasketSettings(_Section):
    """Market basket analysis (stage ``basket``): FPGrowth thresholds, explosion guard, cross-sell."""

    item_level: Literal["product", "category"] = Field(
        default="product", description="what an item is: a product id, or the product's category"
    )
    min_support: float = Field(default=0.005, gt=0.0, le=1.0, description="share of baskets an itemset must be in")
    min_confidence: float = Field(default=0.1, ge=0.0, le=1.0, description="P(consequent | antecedent) of a rule")
    min_lift: float = Field(default=1.0, ge=0.0, description="rules below this lift are dropped")
    max_itemset_size: int = Field(default=3, ge=2, description="largest itemset kept (antecedent + consequent)")
    max_itemsets: int = Field(
        default=200_000, ge=1, description="explosion guard: refuse when the itemset count bound exceeds this"
    )
    on_explosion: Literal["error", "warn"] = Field(
        default="error", description="what the guard does past max_itemsets: stop the stage, or log and mine anyway"
    )
    num_partitions: int | None = Field(default=None, ge=1, description="FPGrowth numPartitions (None: input's)")
    cross_sell_window_days: int = Field(default=90, ge=1, description="purchases in this window trigger rules")
    cross_sell_top_n: int = Field(default=5, ge=1, description="suggestions kept per customer")
    top_rules_logged: int = Field(default=25, ge=1, description="rules (by lift) logged to MLflow as an artifact")


class RecommendSettings(_Section):
    """Product recommendations (stage ``recommend``): implicit-feedback ALS, its holdout and the fallbacks.

    Interaction strength per (customer, product) = the weighted count of purchases (completed
    orders holding it), add-to-carts and product views up to the date. ``rank``, ``reg_param`` and
    ``alpha`` are lists: with more than one combination, each is fitted on the data up to
    T - ``holdout_days`` and the best NDCG@k on the following ``holdout_days`` wins (T = the as-of
    date less ``holdout_days``, where the reported metrics are measured).
    """

    top_n: int = Field(default=10, ge=1, description="recommendations kept per customer")
    k: int = Field(default=10, ge=1, description="list length the holdout metrics (precision@k, ...) look at")
    weights: dict[Literal["purchase", "add_to_cart", "product_view"], float] = Field(
        default_factory=lambda: {"purchase": 1.0, "add_to_cart": 1.0, "product_view": 0.5},
        description="weight of each interaction kind in the strength ALS learns from (0 leaves a kind out)",
    )
    rank: list[int] = Field(default_factory=lambda: [16], min_length=1, description="ALS latent factors")
    reg_param: list[float] = Field(default_factory=lambda: [1.0], min_length=1, description="ALS regularisation")
    alpha: list[float] = Field(default_factory=lambda: [5.0], min_length=1, description="ALS implicit confidence scale")
    max_iter: int = Field(default=10, ge=1, description="ALS iterations")
    seed: int = 7
    holdout_days: int = Field(default=60, ge=1, description="evaluation window: purchases in (as_of - N, as_of]")
    min_interactions: int = Field(
        default=3, ge=1, description="distinct products a customer must have interacted with to get ALS "
        "recommendations; below it, popular products of the categories they touched; without any, popular products",
    )
    checkpoint_dir: str | None = Field(
        default=None, description="ALS checkpoint directory (cuts long lineage); null: <lake>/_checkpoints"
    )

    @model_validator(mode="after")
    def _valid(self) -> RecommendSettings:
        if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ValueError("recommend.weights must be >= 0 and at least one above 0")
        if any(r < 1 for r in self.rank) or any(r < 0 for r in self.reg_param) or any(a <= 0 for a in self.alpha):
            raise ValueError("recommend.rank must be >= 1, recommend.reg_param >= 0 and recommend.alpha > 0")
        return self

    def grid(self) -> list[dict[str, float]]:
        """Every (rank, reg_param, alpha) combination, in config order."""
        return [{"rank": r, "reg_param": g, "alpha": a} for r in self.rank for g in self.reg_param for a in self.alpha]


class ClvSettings(_Section):
    """Customer lifetime value (stage ``clv``): horizon, model, margin, the BG/NBD baseline's sample.

    For a scoring date D the model is trained on features at T = D - 2 x ``horizon_days`` with the
    spend of (T, T + horizon] as target, evaluated on features at T' = D - ``horizon_days`` against
    the spend of (T', D], and scores D; the baselines are measured on the same evaluation rows.
    """

    horizon_days: int = Field(default=90, ge=7, description="the spend predicted is that of (as_of, as_of + horizon]")
    model: Literal["gbt", "linear"] = Field(
        default="gbt", description="both parts of P(buy) x E(spend | buy): GBT trees, or logistic + linear regression")
    margin: float = Field(default=0.3, gt=0.0, le=1.0, description="gross margin: clv = margin x predicted spend")
    gbt_max_iter: int = Field(default=20, ge=1)
    gbt_max_depth: int = Field(default=4, ge=1)
    seed: int = 7
    bgnbd_sample: int = Field(default=200_000, ge=100, description="most customers the BG/NBD baseline is fitted on")
    backfill_features: bool = Field(
        default=True, description="compute missing gold.customer_features partitions for T, T' and D (false: stop)")


class ReportSettings(_Section):
    """The HTML report (stage ``report``): how many rows its tables show and how many customers its
    distributions are drawn from."""

    top_rows: int = Field(default=10, ge=1, le=100, description="rows of each top-N table (rules, at-risk customers, ...)")
    sample_customers: int = Field(
        default=100_000, ge=1_000, description="most customers drawn (at random, seeded) for the distribution figures")
    seed: int = 7


class RiskBand(_Section):
    """A churn risk band: customers with ``churn_probability >= min_probability`` (first match wins)."""

    band: str = Field(min_length=1)
    min_probability: float = Field(ge=0.0, le=1.0)


_DEFAULT_RISK_BANDS = (
    RiskBand(band="high", min_probability=0.7),
    RiskBand(band="medium", min_probability=0.4),
    RiskBand(band="low", min_probability=0.0),
)


class ChurnSettings(_Section):
    """Churn model (stage ``churn``): labels, evaluation, tuning, challenger, promotion, threshold, risk bands.

    ``evaluation: time``: for a scoring date D the model is evaluated at T' = D -
    ``eval_offset_days`` (labels known up to D) and trained at T = T' - ``train_offset_days``; both
    offsets default to ``horizon_days`` and may not be shorter, so no label window reaches past D
    and the training labels end by T'. ``evaluation: snapshot``: one labelled date (D for the
    user's labels, D - ``eval_offset_days`` for computed ones) whose customers are split by a
    seeded hash into training and a holdout of about ``holdout_share`` of each class.
    """

    horizon_days: int = Field(default=90, ge=1, description="churned = no completed order in (as_of, as_of + horizon]")
    eval_offset_days: int | None = Field(default=None, ge=1, description="D - T' (None: horizon_days)")
    train_offset_days: int | None = Field(default=None, ge=1, description="T' - T (None: horizon_days)")
    backfill_features: bool = Field(
        default=True, description="compute missing gold.customer_features partitions (else stop and say which to run)"
    )
    label_source: Literal["computed", "column"] = Field(
        default="computed", description="computed from silver.orders, or the user's silver.churn_labels.churned"
    )
    evaluation: Literal["time", "snapshot"] = Field(
        default="time",
        description="time: train at T, evaluate at T', score D; snapshot: one labelled date D, a holdout of "
        "about holdout_share of each class (by a seeded hash of the customer id) for evaluation",
    )
    holdout_share: float = Field(default=0.2, gt=0.0, lt=1.0, description="snapshot: share of each class held out")
    attributes: tuple[str, ...] | None = Field(
        default=None, description="silver.customer_attributes columns the model uses (None: every configured one)"
    )
    population: Literal["buyers", "all"] = Field(
        default="buyers", description="buyers: customers with a completed order by the as-of date; all: everyone"
    )
    class_weight: Literal["balanced", "none"] = "balanced"
    tuning: Literal["cv", "tvs"] = Field(default="tvs", description="CrossValidator or TrainValidationSplit")
    folds: int = Field(default=3, ge=2, description="cv folds")
    parallelism: int = Field(default=2, ge=1, description="grid points fitted at once")
    train_ratio: float = Field(default=0.75, gt=0.0, lt=1.0, description="tvs share used for fitting")
    reg_params: tuple[float, ...] = Field(default=(0.001, 0.01, 0.1), min_length=1)
    elastic_net_params: tuple[float, ...] = Field(default=(0.0,), min_length=1)
    max_iter: int = Field(default=100, ge=1, description="LogisticRegression iterations")
    tol: float = Field(default=1e-3, gt=0.0, lt=1.0, description="LogisticRegression convergence tolerance")
    seed: int = 42
    challenger: Literal["gbt", "none"] = Field(default="gbt", description="also train a GBTClassifier challenger")
    gbt_max_iter: int = Field(default=20, ge=1)
    gbt_max_depth: int = Field(default=4, ge=1)
    gbt_step_size: float = Field(default=0.1, gt=0.0, le=1.0)
    promotion_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "lift_top_decile"] = "roc_auc"
    promotion_min_delta: float = Field(default=0.0, ge=0.0, description="a challenger must win by more than this")
    threshold_rule: Literal["max_f1", "target_recall"] = "max_f1"
    target_recall: float = Field(default=0.8, gt=0.0, le=1.0)
    threshold_bins: int = Field(default=1000, ge=10, le=100_000, description="probability grid of threshold and curves")
    risk_bands: tuple[RiskBand, ...] = Field(default=_DEFAULT_RISK_BANDS, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ChurnSettings:
        for name in ("eval_offset_days", "train_offset_days"):
            value = getattr(self, name)
            if value is not None and value < self.horizon_days:
                raise ValueError(f"{name} ({value}) may not be shorter than horizon_days ({self.horizon_days})")
        if any(not 0.0 <= v <= 1.0 for v in self.elastic_net_params):
            raise ValueError(f"elastic_net_params {list(self.elastic_net_params)} must lie in [0, 1]")
        if any(v < 0.0 for v in self.reg_params):
            raise ValueError(f"reg_params {list(self.reg_params)} must be >= 0")
        cuts = [b.min_probability for b in self.risk_bands]
        if cuts != sorted(cuts, reverse=True) or len(set(cuts)) != len(cuts) or cuts[-1] != 0.0:
            raise ValueError(f"risk_bands min_probability {cuts} must strictly decrease and end at 0.0")
        if len({b.band for b in self.risk_bands}) != len(self.risk_bands):
            raise ValueError("risk_bands names must be distinct")
        return self

    @property
    def eval_offset(self) -> int:
        return self.eval_offset_days or self.horizon_days

    @property
    def train_offset(self) -> int:
        return self.train_offset_days or self.horizon_days


class SegmentNamingSettings(_Section):
    """Thresholds of the segment naming rules (see :func:`crm_spark.ml.segment.name_segments`).

    Each is a ratio of a cluster's mean to the mean of all clustered customers (1.0 = average).
    """

    new_max_tenure_ratio: float = Field(default=0.5, gt=0, description="New: mean tenure at most this ratio")
    lapsed_min_recency_ratio: float = Field(
        default=1.5, gt=0, description="At-risk / Dormant: days since the last order at least this ratio"
    )
    dormant_max_monetary_ratio: float = Field(
        default=0.25, ge=0, description="a lapsed cluster spending at most this ratio is Dormant, else At-risk"
    )
    high_value_min_monetary_ratio: float = Field(default=2.0, gt=0, description="High-value loyal: spend ratio")
    loyal_min_frequency_ratio: float = Field(default=1.5, gt=0, description="High-value loyal: order count ratio")
    bargain_min_frequency_ratio: float = Field(default=1.0, gt=0, description="Bargain hunters: order count ratio")
    bargain_max_aov_ratio: float = Field(
        default=0.75, gt=0, description="Bargain hunters: average order value at most this ratio"
    )
    regular_min_frequency_ratio: float = Field(default=1.0, gt=0, description="Regulars: order count ratio")


_SEGMENT_FEATURES = ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days", "days_since_last_visit")


class SegmentSettings(_Section):
    """Customer segmentation (stage ``segment``): model, k range, features, naming thresholds."""

    algorithm: Literal["kmeans", "bisecting", "gmm"] = Field(
        default="kmeans", description="MLlib KMeans, BisectingKMeans or GaussianMixture"
    )
    k_min: int = Field(default=4, ge=2, description="smallest number of clusters tried")
    k_max: int = Field(default=8, ge=2, description="largest number of clusters tried")
    features: tuple[str, ...] = Field(
        default=_SEGMENT_FEATURES, min_length=2, description="numeric columns of gold.customer_features clustered on"
    )
    log_features: tuple[str, ...] = Field(
        default=_SEGMENT_FEATURES, description="features replaced by log(1 + max(x, 0)) before scaling (heavy tails)"
    )
    attributes: tuple[str, ...] = Field(
        default=(), description="customer attributes (numeric, boolean or date) clustered on besides features; "
        "a missing value takes the median"
    )
    buyers_only: bool = Field(
        default=True, description="cluster customers with a completed order; the others get prospect_segment"
    )
    prospect_segment: str = Field(default="Prospects", min_length=1)
    seed: int = 42
    max_iter: int = Field(default=50, ge=1)
    tol: float = Field(
        default=0.01, gt=0.0, description="k-means stops when no centre moves farther than this (scaled units)"
    )
    restarts: int = Field(
        default=3, ge=1, description="fits per k (seeds seed, seed+1, ...); the lowest-cost fit is kept"
    )
    parallelism: int = Field(
        default=8, ge=1, description="k-means fits submitted at once (driver threads; the fits are seeded)"
    )
    silhouette_tolerance: float = Field(
        default=0.02, ge=0.0, lt=1.0, description="silhouettes this close to the best tie; the lowest cost wins"
    )
    min_cluster_share: float = Field(
        default=0.01, ge=0.0, lt=0.5, description="a k leaving a cluster smaller than this share is not chosen"
    )
    projection_points: int = Field(default=5000, ge=100, description="points drawn in the 2-D PCA figure")
    naming: SegmentNamingSettings = Field(default_factory=SegmentNamingSettings)

    @model_validator(mode="after")
    def _consistent(self) -> SegmentSettings:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        repeated = sorted({f for f in self.features if self.features.count(f) > 1})
        if repeated:
            raise ValueError(f"features lists {repeated} more than once")
        stray = [f for f in self.log_features if f not in self.features]
        if stray:
            raise ValueError(f"log_features {stray} are not in features")
        return self


class TrackingSettings(_Section):
    """MLflow. Unset uri: a SQLite database under <lake>/_mlflow (MLFLOW_TRACKING_URI overrides both)."""

    uri: SecretStr | None = Field(default=None, description="tracking/registry URI; may hold a password")
    experiment_prefix: str = "crm-spark"


SILVER_TARGETS = (
    "customers", "products", "orders", "order_items", "web_events", "social_interactions", "feedback", "churn_labels",
    "customer_attributes",
)
AttributeKind = Literal["numeric", "categorical", "boolean", "date"]
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# The columns of silver.customer_attributes a mapping may name besides the declared attributes,
# and the names an attribute may not take (they are the table's own columns).
ATTRIBUTE_KEYS = ("customer_id", "snapshot_date")
_RESERVED_ATTRIBUTE_NAMES = (*ATTRIBUTE_KEYS, "attribute", "value", "kind")


# A Spark SQL expression from config: only allowlisted functions, no subquery (crm_spark/sqlcheck.py).
SqlExpression = Annotated[str, AfterValidator(check_expression)]


class TargetMapping(_Section):
    """How one raw source feeds one silver table.

    ``columns`` maps our column -> a Spark SQL expression over the source's columns (a column
    name, ``try_to_timestamp(InvoiceDate, 'M/d/yyyy H:mm')``, ``'online'``, ``concat(a, '-', b)``);
    a column not listed is taken from the same-named source column. ``explode`` turns an array
    expression into one row per element, available to ``columns`` as ``_item`` (and ``_pos``).
    """

    columns: dict[str, SqlExpression] = Field(default_factory=dict)
    filter: SqlExpression | None = Field(default=None, description="keep only rows where this SQL expression is true")
    explode: SqlExpression | None = None
    collapse: bool = Field(
        default=False,
        description="several source rows per key are expected (invoice lines -> orders): keep one, quarantine none",
    )


class SourceSettings(_Section):
    """A folder of raw files under the landing zone and the silver tables it feeds."""

    path: str = Field(description="folder relative to paths.raw, or an absolute URI")
    format: Literal["csv", "json", "parquet", "text"] = "csv"
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    targets: dict[str, TargetMapping] = Field(default_factory=dict)
    enabled: bool = True
    timestamp_formats: list[str] | None = Field(
        default=None,
        description="formats of this source's date/time columns, tried in order (default: refine.timestamp_formats); "
        "a month-first export (12/10/2010 = 10 December) says so here: the default reads slashes day-first",
    )
    timezone: str | None = Field(
        default=None,
        description="IANA time zone (Europe/Paris) of this source's times written without an offset; null: UTC. "
        "Times with an offset, and dates, are read as written",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Paris or UTC") from None
        return value

    @model_validator(mode="after")
    def _known_targets(self) -> SourceSettings:
        unknown = [t for t in self.targets if t not in SILVER_TARGETS]
        if unknown:
            raise ValueError(f"unknown target tables {unknown}; targets are {', '.join(SILVER_TARGETS)}")
        return self


# multiLine only where a field legitimately spans lines (feedback text): with it, one unclosed
# quote would swallow the rest of its file into a single malformed record.
_CSV = {"header": True, "escape": '"'}
_CSV_MULTILINE = {**_CSV, "multiLine": True}


def builtin_sources() -> dict[str, SourceSettings]:
    """The seven sources of SPEC section 3, as ``crm-spark generate`` writes them."""
    csv = ("customers", "products", "orders", "order_items", "feedback")
    out = {
        name: SourceSettings(
            path=name, format="csv", options=_CSV_MULTILINE if name == "feedback" else _CSV,
            targets={name: TargetMapping()},
        )
        for name in csv
    }
    for name in ("web_events", "social_interactions"):
        out[name] = SourceSettings(path=name, format="json", targets={name: TargetMapping()})
    return out


class OutlierRule(_Section):
    policy: Literal["cap", "flag"] = "flag"
    lower: float | None = Field(default=None, ge=0, le=1, description="lower percentile, e.g. 0.001")
    upper: float | None = Field(default=None, ge=0, le=1, description="upper percentile, e.g. 0.999")


class RefineSettings(_Section):
    """Row-level rules of bronze -> silver (keys are '<table>.<column>')."""

    pii_key_env: str = Field(default="CRM_SPARK_PII_KEY", description="env variable holding the HMAC key")
    timestamp_formats: list[str] = Field(
        default_factory=lambda: [
            "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss'Z'", "yyyy-MM-dd'T'HH:mm:ssXXX", "yyyy-MM-dd HH:mm:ssXXX",
            "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd HH:mm", "dd/MM/yyyy HH:mm:ss", "dd/MM/yyyy HH:mm", "yyyy-MM-dd",
            "dd/MM/yyyy",
        ]
    )
    missing: dict[str, str] = Field(default_factory=dict, description="'<table>.<column>': value used when empty")
    outliers: dict[str, OutlierRule] = Field(default_factory=dict)
    country_aliases: dict[str, str] = Field(default_factory=dict)
    max_reject_share: float = Field(
        default=0.2, ge=0, le=1, description="gate: a batch with more quarantined rows than this share stops refine"
    )
    earliest_date: date = Field(
        default=date(1900, 1, 1), description="a date or time before this is quarantined as implausible_<column>"
    )
    future_tolerance_days: int = Field(
        default=1, ge=0, description="a date or time later than its ingest time plus this many days is implausible_<column>"
    )
    max_field_length: int = Field(
        default=32_768, ge=1, description="a raw value longer than this many characters is quarantined as too_long_<column>"
    )


class Settings(_Section):
    """The whole validated configuration of one run."""

    env: str
    paths: PathsSettings
    spark: SparkSettings = Field(default_factory=SparkSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    refine: RefineSettings = Field(default_factory=RefineSettings)
    sources: dict[str, SourceSettings] = Field(
        default_factory=builtin_sources,
        description="raw sources; when a config sets this key it replaces the built-in seven",
    )
    attributes: dict[str, AttributeKind] = Field(
        default_factory=dict,
        description="customer attribute columns (name -> numeric | categorical | boolean | date) a source maps "
        "onto silver.customer_attributes, one version per customer and snapshot date",
    )
    basket: BasketSettings = Field(default_factory=BasketSettings)
    features: FeaturesSettings = Field(default_factory=FeaturesSettings)
    segment: SegmentSettings = Field(default_factory=SegmentSettings)
    churn: ChurnSettings = Field(default_factory=ChurnSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)
    clv: ClvSettings = Field(default_factory=ClvSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)

    def feeding(self, target: str) -> list[str]:
        """The enabled sources that feed ``silver.<target>``."""
        return [n for n, s in self.sources.items() if s.enabled and target in s.targets]

    @model_validator(mode="after")
    def _source_names(self) -> Settings:
        if "rejected_files" in self.sources:
            raise ValueError("'sources.rejected_files': the name is taken by quarantine.rejected_files; rename the source")
        return self

    @model_validator(mode="after")
    def _attributes(self) -> Settings:
        bad = [n for n in self.attributes if not _ATTRIBUTE_NAME.match(n) or n in _RESERVED_ATTRIBUTE_NAMES]
        if bad:
            raise ValueError(f"attribute names {bad} must be lower-case identifiers (a-z, 0-9, _; a letter first) "
                             f"other than {', '.join(_RESERVED_ATTRIBUTE_NAMES)}")
        feeding = self.feeding("customer_attributes")
        if feeding and not self.attributes:
            raise ValueError(f"sources {feeding} feed customer_attributes but no attributes are declared "
                             "(attributes: {name: numeric | categorical | boolean | date})")
        for name in feeding:
            mapped = self.sources[name].targets["customer_attributes"].columns
            stray = [k for k in mapped if k not in ATTRIBUTE_KEYS and k not in self.attributes]
            if stray:
                raise ValueError(f"sources.{name}.targets.customer_attributes.columns {stray} are not declared under "
                                 f"attributes ({', '.join(self.attributes)})")
        for key, wanted in (("churn.attributes", self.churn.attributes or ()), ("segment.attributes", self.segment.attributes)):
            unknown = [a for a in wanted if a not in self.attributes]
            if unknown:
                raise ValueError(f"{key} {unknown} are not declared under attributes "
                                 f"({', '.join(self.attributes) or 'none declared'})")
        categorical = [a for a in self.segment.attributes if self.attributes[a] == "categorical"]
        if categorical:
            raise ValueError(f"segment.attributes {categorical} are categorical: k-means clusters numbers "
                             "(numeric, boolean or date attributes)")
        return self

    def model_attributes(self) -> dict[str, str]:
        """The attributes the churn model uses, with their kinds."""
        chosen = self.attributes if self.churn.attributes is None else self.churn.attributes
        return {n: self.attributes[n] for n in chosen}

    def public_dict(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked (for logs and MLflow)."""
        return _mask(self.model_dump(mode="json"), self)


# A key naming a secret, wherever it sits (``spark.conf``'s ``fs.s3a.secret.key``,
# ``spark.hadoop.fs.azure.account.key.<account>``, a ``password`` or ``token`` option): its value
# is masked even when the model types it as a plain string.
SECRET_KEY_PATTERN = re.compile(
    r"(secret|passw(or)?d|pwd|token|credential|private|api[._-]?key|access[._-]?key|account[._-]?key|"
    r"\bsas\b|signature|auth)",
    re.IGNORECASE,
)


def _mask(dumped: Any, model: Any, key: str = "") -> Any:
    if isinstance(model, SecretStr) or (key and SECRET_KEY_PATTERN.search(key) and dumped not in (None, "")):
        return "***"
    if isinstance(model, BaseModel):
        return {k: _mask(dumped[k], getattr(model, k), k) for k in dumped}
    if isinstance(model, Mapping):
        return {k: _mask(dumped[k], model[k], str(k)) for k in dumped}
    return dumped


def default_conf_dir() -> Path:
    """``$CRM_SPARK_CONF_DIR``, else ``./conf``, else the ``conf/`` beside the package source."""
    if os.environ.get(ENV_VAR_CONF_DIR):
        return Path(os.environ[ENV_VAR_CONF_DIR])
    cwd_conf = Path.cwd() / "conf"
    if (cwd_conf / "base.yaml").is_file():
        return cwd_conf
    return Path(__file__).resolve().parent.parent / "conf"


def load_settings(
    *,
    config_file: str | Path | None = None,
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read base + overlay, apply ``overrides`` (dotted keys), interpolate, validate.

    ``config_file`` is the overlay when given (its stem names the env unless ``env`` is given);
    otherwise the overlay is ``conf/<env>.yaml`` with env from the argument, ``$CRM_SPARK_ENV``
    or ``local``.
    """
    environ = os.environ if environ is None else environ
    if config_file is not None:
        overlay = Path(config_file)
        if not overlay.is_file():
            raise ConfigError(f"config file {overlay} not found")
        conf_dir = overlay.parent if (overlay.parent / "base.yaml").is_file() else default_conf_dir()
        env_name = env or overlay.stem
    else:
        conf_dir = default_conf_dir()
        env_name = env or environ.get(ENV_VAR_ENV) or DEFAULT_ENV
        overlay = conf_dir / f"{env_name}.yaml"
        if not overlay.is_file():
            known = sorted(p.stem for p in conf_dir.glob("*.yaml") if p.stem != "base")
            raise ConfigError(f"unknown env '{env_name}': {overlay} not found (known: {', '.join(known)})")
    base = conf_dir / "base.yaml"
    if not base.is_file():
        raise ConfigError(f"{base} not found; set {ENV_VAR_CONF_DIR} to the folder holding base.yaml")

    layers: list[tuple[str, dict[str, Any]]] = [(str(base), _read_yaml(base))]
    if overlay.resolve() != base.resolve():
        layers.append((str(overlay), _read_yaml(overlay)))
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _deep_merge(merged, data)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(merged, dotted, value)
            layers.append(("command line", _nest(dotted, value)))
    merged = _interpolate(merged, environ, path=())
    merged["env"] = env_name

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers)) from None
    project_root = conf_dir.resolve().parent
    paths = PathsSettings(
        raw=resolve_uri(settings.paths.raw, project_root, from_cli="paths.raw" in (overrides or {})),
        lake=resolve_uri(settings.paths.lake, project_root, from_cli="paths.lake" in (overrides or {})),
    )
    from crm_spark.contracts import check_config_columns

    problems = check_config_columns(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    return settings.model_copy(update={"paths": paths})


def resolve_uri(value: str, project_root: Path, *, from_cli: bool = False) -> str:
    """A URI with a scheme stays as is; a path becomes absolute.

    Paths from config files are relative to the project root; paths typed on the command line
    are relative to the working directory, as a user expects.
    """
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        return value.rstrip("/")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (Path.cwd() if from_cli else project_root) / path
    return str(path.resolve())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _set_dotted(out, dotted, value)
    return out


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _interpolate(value: Any, environ: Mapping[str, str], path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, (*path, str(i))) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{'.'.join(path)}: environment variable {name} is not set (referenced as ${{{name}}})")

    return _INTERPOLATION.sub(replace, value)


def _describe(exc: ValidationError, layers: list[tuple[str, dict[str, Any]]]) -> str:
    """One line naming each bad key path, what is wrong and the file it came from."""
    parts = []
    wrong: dict[str, list[str]] = {}  # key -> what its value should be (one entry per union member)
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if err["type"] != "missing":
            # A union type reports one error per member (spark.conf.x.str, spark.conf.x.int):
            # name the key the user wrote, not pydantic's member tags.
            loc = loc[: _present_depth(loc, layers)] or loc
        key = ".".join(loc) or "(top level)"
        origin = _origin(loc, layers)
        where = f" in {origin}" if origin else ""
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'{where}")
        elif err["type"] == "missing":
            parts.append(f"missing key '{key}'")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            head = f"'{key}'{where}: "
            if head not in wrong:
                wrong[head] = []
                parts.append(head)
            wrong[head].append(f"{err['msg']}{shown}")
    return "; ".join(f"{p}{' or '.join(dict.fromkeys(wrong[p]))}" if p in wrong else p for p in parts)


def _present_depth(loc: list[str], layers: list[tuple[str, dict[str, Any]]]) -> int:
    """How many leading parts of ``loc`` name keys that some layer actually holds."""
    best = 0
    for _, data in layers:
        node: Any = data
        depth = 0
        for part in loc:
            if not (isinstance(node, Mapping) and part in node):
                break
            node = node[part]
            depth += 1
        best = max(best, depth)
    return best


def _origin(loc: list[str], layers: list[tuple[str, dict[str, Any]]]) -> str | None:
    for name, data in reversed(layers):
        node: Any = data
        for part in loc:
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                break
        else:
            return name
    return None
