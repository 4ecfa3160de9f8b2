"""Stage ``features``: silver -> ``gold.customer_features``, point in time as of a date.

Reads the silver tables at pinned versions, computes one row per customer per as-of date with
:func:`crm_spark.transforms.features.customer_features` (only rows dated on or before the date),
and publishes exactly the ``as_of_date`` partitions it computed: re-running a date replaces that
date and nothing else. :func:`run_dates` is the declared backfill entry: several dates in one
pass over each source and one commit, rows equal to one run per date (the runner calls it for
partitions another stage needs, e.g. churn's training and evaluation dates).

``silver.orders`` is required when a source feeds it (the runner skips the stage without it);
a configuration without orders (a subscription customer table) needs ``silver.customers``
instead, and, while the lake holds no ``silver.orders``, its as-of date defaults to the latest
``silver.customer_attributes`` snapshot. Every other input is optional (bring-your-own data may
have only orders and items): a missing table counts as empty, so its features take their
no-activity values (behaviour features of a customer table without orders are constant or
repeat its tenure; the churn model and segment leave such columns out), and the result carries
a note saying so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import date

from pyspark.sql import DataFrame

from crm_spark.contracts import table
from crm_spark.errors import ConfigError, SourceError
from crm_spark.stages import StageContext, StageResult
from crm_spark.transforms.features import customer_features

__all__ = ["run", "run_dates"]

log = logging.getLogger(__name__)

STAGE = "features"
TABLE = "gold.customer_features"
PARTITION = "as_of_date"
STATUS_HISTORY = "silver.order_status_history"
SOURCES = ("orders", "customers", "order_items", "products", "web_events", "social_interactions", "feedback")


def run(ctx: StageContext, as_of: date) -> StageResult:
    """Features as of ``as_of``."""
    return run_dates(ctx, [as_of])


def run_dates(ctx: StageContext, dates: Iterable[date]) -> StageResult:
    """A backfill: features for every date in ``dates``, computed together, published in one commit."""
    wanted = sorted(set(dates))
    if not wanted:
        raise ConfigError("features backfill: give at least one as-of date")
    frames, notes, missing = _read_inputs(ctx)
    cfg = ctx.settings.features
    log.info("[features] computing %d as-of date(s): %s", len(wanted), _span(wanted))
    features = customer_features(
        **frames,
        as_of=wanted,
        segments=cfg.segments,
        no_orders_segment=cfg.no_orders_segment,
        high_tier_percentile=cfg.high_tier_percentile,
        mid_tier_percentile=cfg.mid_tier_percentile,
        missing_rating=cfg.missing_rating,
        missing_nps=cfg.missing_nps,
        count_zero_value_orders=cfg.count_zero_value_orders,
        order_lines_known="silver.order_items" not in missing,
        order_status_history=ctx.read(STATUS_HISTORY) if ctx.exists(STATUS_HISTORY) else None,
    ).cache()  # the gate aggregates over it and the write scans it: compute once
    try:
        started = time.perf_counter()
        # Fills the cache the gate and the write read (no extra scan), and times the computation
        # apart from the gate.
        per_date = {r[PARTITION]: r["count"] for r in features.groupBy(PARTITION).count().collect()}
        rows = sum(per_date.values())
        log.info("[features] %s rows computed in %.1fs", f"{rows:,}", time.perf_counter() - started)
        empty = [d for d in wanted if not per_date.get(d)]
        if empty:
            latest = ctx.lake.max_value("silver.orders", "order_date") if ctx.exists("silver.orders") else None
            raise SourceError(
                f"{TABLE} as of {_span(empty)}: no customer has data on or before that date"
                + (f" (the latest order is of {latest})" if latest else "")
                + "; choose an --as-of date inside the data"
            )
        write = ctx.publish(TABLE, features, partition={PARTITION: wanted})
    finally:
        features.unpersist()
    return StageResult(STAGE, notes=notes, metrics={"customers": float(write.rows) / len(wanted)})


def _read_inputs(ctx: StageContext) -> tuple[dict[str, DataFrame], tuple[str, ...], list[str]]:
    """Silver frames at pinned versions; a missing optional table reads as empty, with a note
    (and is named in the list returned last)."""
    frames: dict[str, DataFrame] = {}
    missing = []
    for name in SOURCES:
        name_ = f"silver.{name}"
        if ctx.exists(name_):
            frames[name] = ctx.read(name_)
        else:
            missing.append(name_)
            frames[name] = ctx.spark.createDataFrame([], table(name_).schema)
    notes = tuple(f"{t} not found: read as empty, so its features take their no-activity values" for t in missing)
    for note in notes:
        log.info("[features] %s", note)
    return frames, notes, missing


def _span(dates: list[date]) -> str:
    return dates[0].isoformat() if len(dates) == 1 else f"{dates[0].isoformat()} .. {dates[-1].isoformat()}"
