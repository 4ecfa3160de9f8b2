"""Table contracts: the typed schemas of silver and gold tables, as Spark DDL.

Every stage that writes one of these tables writes exactly this schema (the lake enforces it),
and every stage that reads one may rely on it. Money is decimal; model-facing gold features are
double/int with units in their names. ``_ingest_batch_id`` and ``_source_file`` keep lineage
from bronze into silver.
"""

from __future__ import annotations

import re

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

_LINEAGE = "_ingest_batch_id string, _source_file string"

RAW_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "first_name", "last_name", "email", "phone", "birth_date", "gender", "city",
                  "country", "signup_date", "acquisition_channel", "updated_at"),
    "products": ("product_id", "product_name", "category", "subcategory", "brand", "list_price"),
    "orders": ("order_id", "customer_id", "order_ts", "channel", "status", "payment_type"),
    "order_items": ("order_id", "line_no", "product_id", "quantity", "unit_price", "discount"),
    "web_events": ("event_id", "customer_id", "session_id", "event_ts", "event_type", "product_id", "page",
                   "duration_sec", "device"),
    "social_interactions": ("interaction_id", "customer_id", "platform", "interaction_type", "sentiment", "ts"),
    "feedback": ("feedback_id", "customer_id", "ts", "channel", "rating", "nps", "category", "text", "resolved"),
    "churn_labels": ("customer_id", "churned", "label_date"),
}

KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "products": ("product_id",),
    "orders": ("order_id",),
    "order_items": ("order_id", "line_no"),
    "web_events": ("event_id",),
    "social_interactions": ("interaction_id",),
    "feedback": ("feedback_id",),
    "churn_labels": ("customer_id",),
}

SILVER_DDL: dict[str, str] = {
    # PII is pseudonymised (HMAC-SHA256 hex) or coarsened; raw names/email/phone/birth date never land here.
    "customers": "customer_id string, name_pseudo string, email_pseudo string, phone_pseudo string, "
    "birth_year int, age_band string, gender string, city string, country string, signup_date date, "
    f"acquisition_channel string, updated_at timestamp, {_LINEAGE}",
    "products": "product_id string, product_name string, category string, subcategory string, brand string, "
    f"list_price decimal(12,2), {_LINEAGE}",
    "orders": "order_id string, customer_id string, order_ts timestamp, order_date date, channel string, "
    f"status string, payment_type string, {_LINEAGE}",
    # discount is the fraction taken off the line (0.15 = 15 %); line_amount = quantity * unit_price * (1 - discount).
    "order_items": "order_id string, line_no int, product_id string, quantity int, unit_price decimal(12,2), "
    f"discount decimal(5,4), line_amount decimal(14,2), {_LINEAGE}",
    "web_events": "event_id string, customer_id string, session_id string, event_ts timestamp, event_type string, "
    f"product_id string, page string, duration_sec int, device string, {_LINEAGE}",
    "social_interactions": "interaction_id string, customer_id string, platform string, interaction_type string, "
    f"sentiment double, ts timestamp, {_LINEAGE}",
    # text has e-mail addresses and phone numbers masked.
    "feedback": "feedback_id string, customer_id string, ts timestamp, channel string, rating int, nps int, "
    f"category string, text string, resolved boolean, {_LINEAGE}",
    # A user-provided churn label per customer (bring-your-own data, e.g. a subscription table).
    "churn_labels": f"customer_id string, churned boolean, label_date date, {_LINEAGE}",
}

ORDER_STATUSES = ("completed", "cancelled", "returned")
WEB_EVENT_TYPES = ("page_view", "product_view", "search", "add_to_cart", "checkout")
INTERACTION_TYPES = ("like", "comment", "share", "mention")
FEEDBACK_CATEGORIES = ("complaint", "praise", "question")

# gold.customer_features: one row per customer per as_of_date, partitioned by as_of_date.
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

# Market basket tables (stage basket), each partitioned by as_of_date and rewritten per date.
# An item is a product id or a category (item_level says which); itemsets and antecedents are
# sorted ascending, so an itemset has one spelling. support = share of baskets holding the
# itemset; confidence = support(A + c) / support(A); lift = confidence / support(c).
# gold.basket_itemsets: one row per frequent itemset per as_of_date.
BASKET_ITEMSETS_DDL = (
    "items array<string>, item_names array<string>, itemset_size int, freq bigint, support double, "
    "item_level string, as_of_date date"
)
# gold.basket_rules: one row per rule antecedent -> consequent (a single item) per as_of_date.
BASKET_RULES_DDL = (
    "antecedent array<string>, consequent string, antecedent_names array<string>, consequent_name string, "
    "antecedent_size int, support double, confidence double, lift double, item_level string, as_of_date date"
)
# gold.cross_sell: top-N suggestions per customer per as_of_date; score = confidence * lift of the
# best rule the customer's recent purchases trigger (its antecedent kept as the reason).
CROSS_SELL_DDL = (
    "customer_id string, rank int, item_id string, item_name string, score double, confidence double, "
    "lift double, antecedent array<string>, item_level string, as_of_date date"
)


# Churn tables (stage churn). gold.churn_training: the exact rows a churn run trained (split
# "train", features at T) and evaluated on (split "eval", features at T'), with their label:
# churned = 1 when the customer placed no completed order in (as_of_date, label_end_date]
# (label_source "computed") or as the user's silver.churn_labels says (label_source "column").
# Partitioned by run_as_of_date, the run's scoring date D; a re-run of D replaces its partition.
CHURN_TRAINING_DDL = (
    "run_as_of_date date, split string, churned int, label_end_date date, label_source string, "
    + CUSTOMER_FEATURES_DDL
)
# gold.churn_scores: one row per customer per as_of_date (partition), scored by the registered
# champion; top_feature_1..3 are the features pushing this customer's churn risk up the most
# (coefficient x standardised value for a logistic regression; importance x |standardised value|
# for trees), null when fewer features push it up.
CHURN_SCORES_DDL = (
    "customer_id string, as_of_date date, churn_probability double, risk_band string, "
    "model_version int, model_kind string, top_feature_1 string, top_feature_2 string, top_feature_3 string"
)
# Segment tables (stage segment), each partitioned by as_of_date and rewritten per date.
# gold.customer_segments: one row per customer of gold.customer_features at that date.
# distance_to_centroid is Euclidean, in the model's scaled feature space (units of standard
# deviations). Customers not clustered (segment.buyers_only: no completed order yet) carry the
# prospect segment with null cluster_id and distance.
CUSTOMER_SEGMENTS_DDL = (
    "customer_id string, as_of_date date, cluster_id int, segment_name string, distance_to_centroid double"
)
# gold.segment_profiles: one row per segment per as_of_date; customer_share and revenue_share are
# shares of all customers / of all monetary at the date; every feature column holds the segment's
# mean of that gold.customer_features column (has_orders as the share with a completed order).
SEGMENT_PROFILE_FEATURES = (
    "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "tenure_days", "avg_order_value",
    "spend_30d", "spend_90d", "spend_365d", "orders_30d", "orders_90d", "orders_365d", "distinct_categories",
    "return_rate", "sessions_30d", "browse_minutes_30d", "cart_abandonment_rate", "social_interactions_90d",
    "mean_sentiment", "mean_rating", "nps", "complaints_90d", "days_since_last_visit", "has_orders",
)
SEGMENT_PROFILES_DDL = (
    "as_of_date date, cluster_id int, segment_name string, customers bigint, customer_share double, "
    "revenue_share double, " + ", ".join(f"{c} double" for c in SEGMENT_PROFILE_FEATURES)
)


def silver_schema(source: str) -> StructType:
    return StructType.fromDDL(SILVER_DDL[source])


def customer_features_schema() -> StructType:
    return StructType.fromDDL(CUSTOMER_FEATURES_DDL)


def silver_ddl_columns(source: str) -> list[str]:
    """Column names of a silver table, in order, without needing a SparkSession."""
    return re.findall(r"(?:^|,)\s*(\w+)\s", SILVER_DDL[source])


def conform(df: DataFrame, ddl: str) -> DataFrame:
    """Exactly the columns of a table's DDL, in its order, cast to its types."""
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in StructType.fromDDL(ddl).fields])
