"""Contracts of the raw layers and the silver tables (SPEC sections 3 and 4).

A silver table declares its raw columns (``fields``: what a source maps onto, all strings, and
how each parses and what it must satisfy), its typed DDL, its key and references. Refine parses
with the fields and routes rule breakers to quarantine; the gate then re-checks the accepted
rows against the same rules (keys, value sets, ranges) as table-level expectations.

PII is pseudonymised (HMAC-SHA256 hex) or coarsened; raw names, e-mail, phone and birth date
never land in silver. ``_ingest_batch_id`` and ``_source_file`` keep lineage from bronze.
"""

from __future__ import annotations

import math

from crm_spark.contracts import Field, Table, register
from crm_spark.contracts.checks import Check, CheckContext, Columns, RowCount, Rule, between, in_set, keys

ORDER_STATUSES = ("completed", "cancelled", "returned")
WEB_EVENT_TYPES = ("page_view", "product_view", "search", "add_to_cart", "checkout")
INTERACTION_TYPES = ("like", "comment", "share", "mention")
FEEDBACK_CATEGORIES = ("complaint", "praise", "question")
_LINEAGE = "_ingest_batch_id string, _source_file string"


def _silver_checks(t: Table, cc: CheckContext) -> list[Check]:
    out: list[Check] = [Columns(t.columns), *keys(t.keys), *_reject_share(cc)]
    typed = set(t.columns)
    for f in t.fields:
        if f.allowed is not None:
            out.append(in_set(f.name, f.allowed))
        if (f.low is not None or f.high is not None) and f.name in typed:
            out.append(between(f.name, f.low, f.high, low_inclusive=f.low_inclusive))
        if f.kind in ("date", "timestamp") and f.name in typed:
            out.append(_plausible(f.name, f.kind, cc))
    return out


def _plausible(column: str, kind: str, cc: CheckContext) -> Rule:
    """Dates and times lie between ``refine.earliest_date`` and now plus ``refine.future_tolerance_days``
    (refine quarantines each row outside it against its own ingest time; the gate re-checks the table)."""
    refine = cc.settings.refine
    days = refine.future_tolerance_days
    latest = f"date_add(current_date(), {days})" if kind == "date" else f"current_timestamp() + make_dt_interval({days})"
    return Rule(f"`{column}` IS NULL OR (`{column}` >= DATE '{refine.earliest_date.isoformat()}' AND `{column}` <= {latest})")


def _reject_share(cc: CheckContext) -> list[Check]:
    """At least (1 - refine.max_reject_share) of the batch's mapped rows were accepted."""
    if not cc.batch_rows:
        return []
    share = cc.settings.refine.max_reject_share
    floor = math.ceil(cc.batch_rows * (1 - share))
    return [RowCount(low=floor, why=f"at most {share:.0%} of the {cc.batch_rows:,} mapped rows rejected")]


def _silver(name: str, ddl: str, fields: tuple[Field, ...], *, keys: tuple[str, ...], doc: str,
            refs: dict[str, str] | None = None, version_col: str | None = None,
            date_column: str | None = None, immutable: bool = False) -> Table:
    return Table(
        f"silver.{name}", ddl=f"{ddl}, {_LINEAGE}", keys=keys, write="merge", fields=fields, refs=refs or {},
        version_col=version_col, checks=_silver_checks, date_column=date_column, doc=doc, immutable=immutable,
    )


CUSTOMERS = _silver(
    "customers",
    "customer_id string, name_pseudo string, email_pseudo string, phone_pseudo string, "
    "birth_year int, age_band string, gender string, city string, country string, signup_date date, "
    "acquisition_channel string, updated_at timestamp",
    (
        Field("customer_id", required=True),
        Field("first_name"), Field("last_name"), Field("email"), Field("phone"),
        Field("birth_date", "date"),
        Field("gender", case="lower"),
        Field("city"),
        Field("country", case="upper"),
        Field("signup_date", "date", required=True),
        Field("acquisition_channel", case="lower"),
        Field("updated_at", "timestamp", required=True),
    ),
    keys=("customer_id",), version_col="updated_at",
    doc="one row per customer, latest updated_at wins; PII as pseudonyms, birth date as year and age band",
)
PRODUCTS = _silver(
    "products",
    "product_id string, product_name string, category string, subcategory string, brand string, "
    "list_price decimal(12,2)",
    (
        Field("product_id", required=True), Field("product_name"), Field("category"), Field("subcategory"),
        Field("brand"), Field("list_price", "decimal(12,2)", required=True, low=0, low_inclusive=False),
    ),
    keys=("product_id",), doc="the product catalogue",
)
ORDERS = _silver(
    "orders",
    "order_id string, customer_id string, order_ts timestamp, order_date date, channel string, "
    "status string, payment_type string",
    (
        Field("order_id", required=True), Field("customer_id", required=True),
        Field("order_ts", "timestamp", required=True), Field("channel", case="lower"),
        Field("status", required=True, allowed=ORDER_STATUSES, case="lower"), Field("payment_type", case="lower"),
        # When the order took this status (a return's date), where the source says; not kept in
        # silver.orders, it dates the status in silver.order_status_history.
        Field("status_ts", "timestamp"),
    ),
    keys=("order_id",), refs={"customer_id": "customers"}, date_column="order_date",
    doc="one row per order with its latest status",
)
ORDER_ITEMS = _silver(
    "order_items",
    # discount is the fraction taken off the line (0.15 = 15 %); line_amount = quantity * unit_price * (1 - discount).
    "order_id string, line_no int, product_id string, quantity int, unit_price decimal(12,2), "
    "discount decimal(5,4), line_amount decimal(14,2)",
    (
        Field("order_id", required=True), Field("line_no", "int", required=True, low=0),
        Field("product_id", required=True),
        Field("quantity", "int", required=True, low=0, low_inclusive=False),
        Field("unit_price", "decimal(12,2)", required=True, low=0, low_inclusive=False),
        Field("discount", "decimal(5,4)", low=0, high=1),
    ),
    keys=("order_id", "line_no"), refs={"order_id": "orders", "product_id": "products"},
    doc="one row per order line",
)
WEB_EVENTS = _silver(
    "web_events",
    "event_id string, customer_id string, session_id string, event_ts timestamp, event_type string, "
    "product_id string, page string, duration_sec int, device string",
    (
        Field("event_id", required=True), Field("customer_id"), Field("session_id", required=True),
        Field("event_ts", "timestamp", required=True),
        Field("event_type", required=True, allowed=WEB_EVENT_TYPES, case="lower"),
        Field("product_id"), Field("page"), Field("duration_sec", "int", low=0), Field("device", case="lower"),
    ),
    keys=("event_id",), refs={"customer_id": "customers", "product_id": "products"}, immutable=True,
    doc="one row per web event (customer_id null: anonymous); events never change: a re-delivered one is ignored",
)
SOCIAL_INTERACTIONS = _silver(
    "social_interactions",
    "interaction_id string, customer_id string, platform string, interaction_type string, "
    "sentiment double, ts timestamp",
    (
        Field("interaction_id", required=True), Field("customer_id", required=True),
        Field("platform", case="lower"),
        Field("interaction_type", required=True, allowed=INTERACTION_TYPES, case="lower"),
        Field("sentiment", "double", low=-1, high=1), Field("ts", "timestamp", required=True),
    ),
    keys=("interaction_id",), refs={"customer_id": "customers"}, immutable=True,
    doc="one row per social interaction; interactions never change: a re-delivered one is ignored",
)
FEEDBACK = _silver(
    "feedback",
    # text has e-mail addresses and phone numbers masked.
    "feedback_id string, customer_id string, ts timestamp, channel string, rating int, nps int, "
    "category string, text string, resolved boolean",
    (
        Field("feedback_id", required=True), Field("customer_id", required=True),
        Field("ts", "timestamp", required=True), Field("channel", case="lower"),
        Field("rating", "int", low=1, high=5), Field("nps", "int", low=0, high=10),
        Field("category", allowed=FEEDBACK_CATEGORIES, case="lower"), Field("text"), Field("resolved", "bool"),
    ),
    keys=("feedback_id",), refs={"customer_id": "customers"}, doc="one row per feedback, contacts masked in text",
)
CHURN_LABELS = _silver(
    "churn_labels",
    "customer_id string, churned boolean, label_date date",
    (Field("customer_id", required=True), Field("churned", "bool", required=True), Field("label_date", "date")),
    keys=("customer_id",), refs={"customer_id": "customers"},
    doc="a user-provided churn label per customer (bring-your-own data, e.g. a subscription table)",
)

# Where each kind of attribute keeps its value in silver.customer_attributes.
ATTRIBUTE_VALUE_COLUMNS = {"numeric": "value_number", "categorical": "value_text", "boolean": "value_boolean",
                           "date": "value_date"}
CUSTOMER_ATTRIBUTES = _silver(
    "customer_attributes",
    # One row per customer, snapshot date and attribute (config ``attributes``: name -> kind); the
    # value sits in the column of its kind: numeric -> value_number, categorical -> value_text
    # (contacts masked), boolean -> value_boolean, date -> value_date. A source row of N attributes
    # maps to N rows; an empty value is kept (null), an unparseable one is quarantined (bad_value).
    "customer_id string, snapshot_date date, attribute string, kind string, value_number double, "
    "value_text string, value_boolean boolean, value_date date",
    (
        Field("customer_id", required=True), Field("snapshot_date", "date", required=True),
        Field("attribute", required=True), Field("value"),
    ),
    keys=("customer_id", "snapshot_date", "attribute"), refs={"customer_id": "customers"},
    date_column="snapshot_date",
    doc="user attribute columns (contract, plan, charges, ...) per customer and snapshot date, typed by config",
)

# Every status an order has had and since when: features as of a past date see the status of
# that date, not a return or cancellation recorded later. Refine adds a row when an order first
# arrives (since its order time) and whenever a later delivery changes its status (since that
# delivery was ingested, or the source's status time when it has one).
ORDER_STATUS_HISTORY = Table(
    "silver.order_status_history", ddl="order_id string, status string, status_from timestamp",
    keys=("order_id", "status_from"), write="merge", immutable=True,
    checks=lambda t, cc: [Columns(t.columns), *keys(t.keys), in_set("status", ORDER_STATUSES)],
    doc="one row per order and status it took, with the time it took it (silver.orders holds the latest)",
)

SILVER = (CUSTOMERS, PRODUCTS, ORDERS, ORDER_ITEMS, WEB_EVENTS, SOCIAL_INTERACTIONS, FEEDBACK, CHURN_LABELS,
          CUSTOMER_ATTRIBUTES)
# Refine order: the tables a reference points at come first.
TARGET_ORDER = tuple(t.name.split(".", 1)[1] for t in SILVER)

# Files ingest could not read as rows (a truncated archive, a header naming none of the mapped
# columns): one row per file and ingest batch, the rest of the batch and every other source go on.
REJECTED_FILES = "quarantine.rejected_files"
REJECTED_DDL = "source string, file string, reason string, _ingest_batch_id long, _ingested_at timestamp"

register(
    Table("bronze.*", write="append", doc="raw rows as read, all strings, plus ingest lineage; append-only"),
    Table(REJECTED_FILES, REJECTED_DDL, write="append", doc="raw files ingest rejected whole, with the reason"),
    Table("quarantine.*", write="append", doc="rejected rows as they arrived, with _dq_reasons and lineage"),
    *SILVER,
    ORDER_STATUS_HISTORY,
)


def silver(target: str) -> Table:
    """The contract of ``silver.<target>``."""
    from crm_spark.contracts import TABLES

    return TABLES[f"silver.{target}"]
