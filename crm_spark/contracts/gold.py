"""Contracts of the gold tables: schema, keys, partitioning and checks, one declaration each.

Every gold table is partitioned by a date and rewritten one partition at a time, so a re-run of
a date replaces that date and nothing else; the frame a check sees is that partition. Model
features are double/int with units in their names; money in gold is double.
"""

from __future__ import annotations

from crm_spark.contracts import Table, register
from crm_spark.contracts.checks import (
    Check,
    CheckContext,
    Columns,
    ColumnSum,
    RowCount,
    Rule,
    Unique,
    between,
    freshness,
    in_set,
    keys,
    not_null,
    row_count_change,
)

VALUE_TIERS = ("high", "mid", "low")

# -- gold.customer_features ------------------------------------------------------------------------
CUSTOMER_FEATURES_DDL = (
    "customer_id string, as_of_date date, "
    "recency_days int, frequency int, monetary double, "
    "r_score int, f_score int, m_score int, rfm_segment string, value_tier string, "
    "tenure_days int, avg_order_value double, "
    "spend_30d double, spend_90d double, spend_365d double, "
    "orders_30d int, orders_90d int, orders_365d int, "
    "distinct_categories int, return_rate double, "
    "sessions_30d int, browse_minutes_30d double, cart_abandonment_rate double, "
    "social_interactions_90d int, mean_sentiment double, mean_rating double, nps double, "
    "complaints_90d int, days_since_last_visit int, has_orders boolean"
)
_FEATURE_COUNTS = (
    "recency_days", "frequency", "tenure_days", "orders_30d", "orders_90d", "orders_365d", "distinct_categories",
    "sessions_30d", "social_interactions_90d", "complaints_90d", "days_since_last_visit",
)
_FEATURE_AMOUNTS = ("monetary", "avg_order_value", "spend_30d", "spend_90d", "spend_365d", "browse_minutes_30d")


def _customer_features(t: Table, cc: CheckContext) -> list[Check]:
    f = cc.settings.features
    key = ("customer_id", "as_of_date")
    # Every column is a model input, so none may be null; ranges and cross-column rules follow
    # the feature definitions in crm_spark/transforms/features.py (scores 0 = no completed order yet).
    return [
        Columns(t.columns),
        *keys(key),
        *row_count_change(cc),
        *freshness("recency_days", cc, per=("as_of_date",)),
        *not_null(*(c for c in t.columns if c not in key)),
        *(between(c, 0) for c in (*_FEATURE_COUNTS, *_FEATURE_AMOUNTS)),
        *(between(c, 0, 5) for c in ("r_score", "f_score", "m_score")),
        *(between(c, 0, 1) for c in ("return_rate", "cart_abandonment_rate")),
        between("mean_sentiment", -1, 1),
        between("mean_rating", 1, 5),
        between("nps", 0, 10),
        Rule("has_orders = (frequency > 0)"),
        Rule("has_orders = (least(r_score, f_score, m_score) >= 1)"),
        Rule("greatest(r_score, f_score, m_score) >= 1 OR NOT has_orders"),
        Rule("orders_30d <= orders_90d AND orders_90d <= orders_365d AND orders_365d <= frequency"),
        in_set("rfm_segment", sorted({r.segment for r in f.segments} | {f.no_orders_segment})),
        in_set("value_tier", VALUE_TIERS),
    ]


CUSTOMER_FEATURES = Table(
    "gold.customer_features", ddl=CUSTOMER_FEATURES_DDL, keys=("customer_id", "as_of_date"),
    partition_by=("as_of_date",), checks=_customer_features, date_column="as_of_date",
    doc="one row per customer per as_of_date: RFM, scores, tiers and behaviour, from data on or before the date",
)

# -- segment: gold.customer_segments, gold.segment_profiles ------------------------------------------
# distance_to_centroid is Euclidean, in the model's scaled feature space (units of standard
# deviations). Customers not clustered (segment.buyers_only: no completed order yet) carry the
# prospect segment with null cluster_id and distance.
SEGMENT_PROFILE_FEATURES = (
    "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "tenure_days", "avg_order_value",
    "spend_30d", "spend_90d", "spend_365d", "orders_30d", "orders_90d", "orders_365d", "distinct_categories",
    "return_rate", "sessions_30d", "browse_minutes_30d", "cart_abandonment_rate", "social_interactions_90d",
    "mean_sentiment", "mean_rating", "nps", "complaints_90d", "days_since_last_visit", "has_orders",
)


def _customer_segments(t: Table, cc: CheckContext) -> list[Check]:
    s = cc.settings.segment
    return [
        Columns(t.columns), *keys(t.keys), *not_null("segment_name"), *row_count_change(cc),
        between("cluster_id", 0, s.k_max - 1), between("distance_to_centroid", 0.0),
    ]


def _segment_profiles(t: Table, cc: CheckContext) -> list[Check]:
    s = cc.settings.segment
    return [
        Columns(t.columns),
        *keys(("as_of_date", "segment_name")),
        Unique(("cluster_id",)),  # nulls (the prospect row) are ignored
        RowCount(low=1, high=s.k_max + 1, why="one row per segment"),
        *not_null("customers", "customer_share", "revenue_share"),
        between("customers", 1), between("customer_share", 0.0, 1.0), between("revenue_share", 0.0, 1.0),
        ColumnSum("customer_share", 1 - 1e-9, 1 + 1e-9),  # shares of one date add up to 1
    ]


CUSTOMER_SEGMENTS = Table(
    "gold.customer_segments",
    ddl="customer_id string, as_of_date date, cluster_id int, segment_name string, distance_to_centroid double",
    keys=("customer_id", "as_of_date"), partition_by=("as_of_date",), checks=_customer_segments,
    date_column="as_of_date", doc="one row per customer of gold.customer_features at the date, with its segment",
)
SEGMENT_PROFILES = Table(
    "gold.segment_profiles",
    ddl="as_of_date date, cluster_id int, segment_name string, customers bigint, customer_share double, "
    "revenue_share double, " + ", ".join(f"{c} double" for c in SEGMENT_PROFILE_FEATURES),
    keys=("as_of_date", "segment_name"), partition_by=("as_of_date",), checks=_segment_profiles,
    date_column="as_of_date",
    doc="one row per segment per date: size, shares of customers and revenue, and the mean of every feature",
)

# -- basket: gold.basket_itemsets, gold.basket_rules, gold.cross_sell --------------------------------
# An item is a product id or a category (item_level says which); itemsets and antecedents are
# sorted ascending, so an itemset has one spelling. support = share of baskets holding the
# itemset; confidence = support(A + c) / support(A); lift = confidence / support(c). Support can
# sit a rounding step below min_support (ceil(min_support * n) / n in floating point): 1e-9 slack.


def _basket_itemsets(t: Table, cc: CheckContext) -> list[Check]:
    b = cc.settings.basket
    return [
        Columns(t.columns), *keys(("items",)),
        *not_null("itemset_size", "freq", "support", "item_level", "as_of_date"),
        between("itemset_size", 1, b.max_itemset_size), between("freq", 1),
        between("support", b.min_support * (1 - 1e-9), 1.0), in_set("item_level", ["product", "category"]),
    ]


def _basket_rules(t: Table, cc: CheckContext) -> list[Check]:
    b = cc.settings.basket
    return [
        Columns(t.columns), *keys(("antecedent", "consequent")),
        *not_null("antecedent_size", "support", "confidence", "lift", "item_level", "as_of_date"),
        between("antecedent_size", 1, b.max_itemset_size - 1),
        between("support", b.min_support * (1 - 1e-9), 1.0),
        between("confidence", b.min_confidence * (1 - 1e-9), 1.0 + 1e-9),
        between("lift", b.min_lift * (1 - 1e-9)),
    ]


def _cross_sell(t: Table, cc: CheckContext) -> list[Check]:
    b = cc.settings.basket
    return [
        Columns(t.columns), *keys(("customer_id", "rank")), Unique(("customer_id", "item_id")),
        *not_null("item_id", "score", "confidence", "lift", "antecedent", "as_of_date"),
        between("rank", 1, b.cross_sell_top_n), between("score", 0.0),
    ]


BASKET_ITEMSETS = Table(
    "gold.basket_itemsets",
    ddl="items array<string>, item_names array<string>, itemset_size int, freq bigint, support double, "
    "item_level string, as_of_date date",
    keys=("items",), partition_by=("as_of_date",), checks=_basket_itemsets, date_column="as_of_date",
    doc="one row per frequent itemset per date",
)
BASKET_RULES = Table(
    "gold.basket_rules",
    ddl="antecedent array<string>, consequent string, antecedent_names array<string>, consequent_name string, "
    "antecedent_size int, support double, confidence double, lift double, item_level string, as_of_date date",
    keys=("antecedent", "consequent"), partition_by=("as_of_date",), checks=_basket_rules, date_column="as_of_date",
    doc="one row per rule antecedent -> consequent (a single item) per date",
)
CROSS_SELL = Table(
    "gold.cross_sell",
    # score = confidence * lift of the best rule the customer's recent purchases trigger (its antecedent kept as the reason)
    ddl="customer_id string, rank int, item_id string, item_name string, score double, confidence double, "
    "lift double, antecedent array<string>, item_level string, as_of_date date",
    keys=("customer_id", "rank"), partition_by=("as_of_date",), checks=_cross_sell, date_column="as_of_date",
    doc="top-N cross-sell suggestions per customer per date, never an item bought in the window",
)

# -- churn: gold.churn_training, gold.churn_scores -----------------------------------------------------
# gold.churn_training: the exact rows a churn run trained (split "train", features at T) and
# evaluated on (split "eval", features at T'; in snapshot mode both at one date, the eval rows a
# stratified holdout), with their label: churned = 1 when the customer
# placed no completed order in (as_of_date, label_end_date] (label_source "computed") or as the
# user's silver.churn_labels says (label_source "column"). Partitioned by the run's scoring date D.


def _churn_training(t: Table, cc: CheckContext) -> list[Check]:
    key = ("run_as_of_date", "split", "customer_id")
    return [
        Columns(t.columns), Unique(key), RowCount(low=1, why="a churn run has rows"),
        *not_null(*key, "as_of_date", "label_end_date"),
        in_set("split", ["train", "eval"]), Rule("churned IN (0, 1)"),
        in_set("label_source", ["computed", "column"]),
        # time: training and evaluation dates lie before the scoring date; snapshot: the labelled
        # date may be the scoring date itself (the user's labels describe that snapshot).
        Rule("as_of_date < label_end_date AND as_of_date "
             + ("<=" if cc.settings.churn.evaluation == "snapshot" else "<") + " run_as_of_date"),
    ]


def _churn_scores(t: Table, cc: CheckContext) -> list[Check]:
    return [
        Columns(t.columns), Unique(t.keys), *row_count_change(cc), *not_null(*t.keys),
        Rule("churn_probability BETWEEN 0 AND 1"),
        Rule("risk_band IS NOT NULL"), in_set("risk_band", [b.band for b in cc.settings.churn.risk_bands]),
        Rule("model_version >= 1"), Rule("model_kind IN ('logistic_regression', 'gbt')"),
    ]


CHURN_TRAINING = Table(
    "gold.churn_training",
    ddl="run_as_of_date date, split string, churned int, label_end_date date, label_source string, "
    + CUSTOMER_FEATURES_DDL,
    keys=("run_as_of_date", "split", "customer_id"), partition_by=("run_as_of_date",), checks=_churn_training,
    date_column="run_as_of_date", doc="the labelled rows each churn run trained and evaluated on",
)
# top_feature_1..3 are the features pushing this customer's churn risk up the most (coefficient x
# standardised value for a logistic regression; importance x |standardised value| for trees).
CHURN_SCORES = Table(
    "gold.churn_scores",
    ddl="customer_id string, as_of_date date, churn_probability double, risk_band string, "
    "model_version int, model_kind string, top_feature_1 string, top_feature_2 string, top_feature_3 string",
    keys=("customer_id", "as_of_date"), partition_by=("as_of_date",), checks=_churn_scores, date_column="as_of_date",
    doc="one row per customer per date scored by the registered champion, with band and top drivers",
)

# -- recommend: gold.recommendations ----------------------------------------------------------------
# source, per row: "als" (the ALS model's preference score; customers with at least
# recommend.min_interactions products interacted with), "popular_in_category" (the customer's share
# of interest in the category x the product's share of buyers: the list of a customer with fewer
# interactions, or the top-up of an ALS list that falls short) or "popular" (the share of buyers
# who bought it: customers without interactions, and the last top-up). Scores compare within one
# source only.
RECOMMENDATION_SOURCES = ("als", "popular_in_category", "popular")


def _recommendations(t: Table, cc: CheckContext) -> list[Check]:
    r = cc.settings.recommend
    return [
        Columns(t.columns), *keys(("customer_id", "rank")), Unique(("customer_id", "product_id")),
        *not_null("product_id", "score", "source", "as_of_date"), *row_count_change(cc),
        between("rank", 1, r.top_n), in_set("source", RECOMMENDATION_SOURCES),
    ]


RECOMMENDATIONS = Table(
    "gold.recommendations",
    ddl="customer_id string, rank int, product_id string, product_name string, category string, score double, "
    "source string, as_of_date date",
    keys=("customer_id", "rank"), partition_by=("as_of_date",), checks=_recommendations, date_column="as_of_date",
    doc="top-N products per customer per date, best first, never a product the customer bought on or before it",
)

# -- clv: gold.clv ------------------------------------------------------------------------------------
# predicted_spend: expected value of the customer's purchases in (as_of_date, as_of_date +
# horizon_days] = p_purchase x the expected spend if they buy; clv = clv.margin x predicted_spend;
# value_decile 1 = the tenth of customers with the highest predicted spend (customers with equal
# predicted spend share a decile, so deciles can be uneven).


def _clv(t: Table, cc: CheckContext) -> list[Check]:
    return [
        Columns(t.columns), *keys(("customer_id",)), *row_count_change(cc),
        *not_null("predicted_spend", "p_purchase", "clv", "value_decile", "horizon_days", "model_kind"),
        between("predicted_spend", 0.0), between("p_purchase", 0.0, 1.0), between("clv", 0.0),
        between("value_decile", 1, 10), in_set("model_kind", ["gbt", "linear"]),
    ]


CLV = Table(
    "gold.clv",
    ddl="customer_id string, as_of_date date, predicted_spend double, p_purchase double, clv double, "
    "value_decile int, horizon_days int, model_kind string",
    keys=("customer_id", "as_of_date"), partition_by=("as_of_date",), checks=_clv, date_column="as_of_date",
    doc="one row per customer of gold.customer_features at the date: predicted spend over the horizon and CLV",
)

register(
    CUSTOMER_FEATURES, CUSTOMER_SEGMENTS, SEGMENT_PROFILES, BASKET_ITEMSETS, BASKET_RULES, CROSS_SELL,
    CHURN_TRAINING, CHURN_SCORES, RECOMMENDATIONS, CLV,
)
