"""Stage ``features``: silver -> ``gold.customer_features``, point in time as of a date.

Reads the silver tables at pinned versions, computes one row per customer per as-of date with
:func:`crm_spark.transforms.features.customer_features` (only rows dated on or before the date),
gates the result, and overwrites exactly the ``as_of_date`` partitions it computed: re-running a
date replaces that date and nothing else. ``run_dates`` computes a backfill of several dates in
one pass over each source and one commit; its rows equal those of one run per date.

``silver.orders`` is required. Every other input is optional (bring-your-own data may have only
orders and items): a missing table counts as empty, so its features take their no-activity
values, and the result carries a note saying so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_spark.errors import ConfigError
from crm_spark.lake import Lake
from crm_spark.schemas import silver_schema
from crm_spark.stages import StageContext, StageResult
from crm_spark.transforms.features import customer_features

__all__ = ["run", "run_dates"]

log = logging.getLogger(__name__)

STAGE = "features"
TABLE = "gold.customer_features"
PARTITION = "as_of_date"
REQUIRED = ("orders",)
OPTIONAL = ("customers", "order_items", "products", "web_events", "social_interactions", "feedback")


@dataclass(frozen=True)
class _Inputs:
    frames: dict[str, DataFrame]
    versions: dict[str, int]
    notes: tuple[str, ...]


def run(ctx: StageContext) -> StageResult:
    """Features as of ``ctx.as_of``, or the latest order date in ``silver.orders``."""
    inputs = _read_inputs(ctx)
    if inputs is None:
        return _skip_missing_orders()
    as_of = ctx.as_of or _latest_order_date(inputs.frames["orders"])
    if as_of is None:
        return StageResult(STAGE, skipped="silver.orders holds no dated orders: nothing to compute features from")
    return _publish(ctx, inputs, [as_of])


def run_dates(ctx: StageContext, dates: Iterable[date]) -> StageResult:
    """A backfill: features for every date in ``dates``, computed together, written in one commit."""
    wanted = sorted(set(dates))
    if not wanted:
        raise ConfigError("features backfill: give at least one as-of date")
    inputs = _read_inputs(ctx)
    if inputs is None:
        return _skip_missing_orders()
    return _publish(ctx, inputs, wanted)


def _publish(ctx: StageContext, inputs: _Inputs, dates: list[date]) -> StageResult:
    cfg = ctx.settings.features
    log.info("[features] computing %d as-of date(s): %s", len(dates), _span(dates))
    features = customer_features(
        **inputs.frames,
        as_of=dates,
        segments=cfg.segments,
        no_orders_segment=cfg.no_orders_segment,
        high_tier_percentile=cfg.high_tier_percentile,
        mid_tier_percentile=cfg.mid_tier_percentile,
        missing_rating=cfg.missing_rating,
        missing_nps=cfg.missing_nps,
    ).cache()  # the gate aggregates over it and the write scans it: compute once
    try:
        started = time.perf_counter()
        rows = features.count()  # fills the cache: the sources are scanned here, once
        computed = time.perf_counter()
        log.info("[features] %s rows computed in %.1fs", f"{rows:,}", computed - started)
        report = ctx.gate.check(TABLE, features, previous_rows=_previous_rows(ctx.lake, dates), as_of=dates[-1])
        gated = time.perf_counter()
        write = ctx.lake.overwrite(TABLE, features, partition={PARTITION: dates}, partition_by=[PARTITION])
        written = time.perf_counter()
    finally:
        features.unpersist()
    return StageResult(
        STAGE,
        writes=(write,),
        notes=inputs.notes,
        details={
            "as_of_dates": [d.isoformat() for d in dates],
            "inputs": {f"silver.{name}": v for name, v in inputs.versions.items()},
            "quality": report.summary(),
            "seconds": {
                "compute": round(computed - started, 2),
                "gate": round(gated - computed, 2),
                "write": round(written - gated, 2),
            },
        },
    )


def _read_inputs(ctx: StageContext) -> _Inputs | None:
    """Silver frames at pinned versions (None when ``silver.orders`` is missing)."""
    lake = ctx.lake
    if not all(lake.exists(f"silver.{name}") for name in REQUIRED):
        return None
    frames: dict[str, DataFrame] = {}
    versions: dict[str, int] = {}
    missing = []
    for name in (*REQUIRED, *OPTIONAL):
        table = f"silver.{name}"
        if lake.exists(table):
            versions[name] = lake.version(table)
            frames[name] = lake.read(table, version=versions[name])
        else:
            missing.append(table)
            frames[name] = ctx.spark.createDataFrame([], silver_schema(name))
    notes = tuple(
        f"{table} not found: read as empty, so its features take their no-activity values" for table in missing
    )
    for note in notes:
        log.info("[features] %s", note)
    return _Inputs(frames, versions, notes)


def _skip_missing_orders() -> StageResult:
    return StageResult(
        STAGE, skipped="silver.orders not found: run ingest and refine first (or configure an orders source)"
    )


def _latest_order_date(orders: DataFrame) -> date | None:
    return orders.agg(F.max("order_date")).first()[0]


def _previous_rows(lake: Lake, dates: list[date]) -> int | None:
    """What the gate's row-count-change check compares with.

    The rows now in the partitions being replaced; for dates not written yet, the rows of the
    latest earlier partition once per date (the universe only grows with the date). None for
    the first write.
    """
    if not lake.exists(TABLE):
        return None
    replaced = lake.read(TABLE, partition={PARTITION: dates}).count()
    if replaced:
        return replaced
    earlier = lake.read(TABLE).where(F.col(PARTITION) < dates[0]).agg(F.max(PARTITION)).first()[0]
    if earlier is None:
        return None
    return lake.read(TABLE, partition={PARTITION: earlier}).count() * len(dates)


def _span(dates: list[date]) -> str:
    return dates[0].isoformat() if len(dates) == 1 else f"{dates[0].isoformat()} .. {dates[-1].isoformat()}"

