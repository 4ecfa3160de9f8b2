"""``generate_dataset``: write every raw source, the planted truth and the dirt manifest."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import date
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from crm_spark.errors import ConfigError, SourceError
from crm_spark.generate import sources as src
from crm_spark.generate.activity import World
from crm_spark.generate.dirt import DIRT_COLUMNS, LINE_SCHEMA, SourceSpec, header_rows, render
from crm_spark.generate.formats import csv_line
from crm_spark.generate.model import CHURNER, Plan
from crm_spark.generate.writer import OutputFs, write_lines
from crm_spark.session import temporary_conf

log = logging.getLogger("crm_spark.generate")

TRUTH_DIR = "_truth"
MIN_CUSTOMERS = 100
MIN_DAYS = 28
TMP_DIR = "_generate_tmp"  # work in progress; gone once a dataset is complete
_LINES_PER_TASK = 1_500_000


@dataclass(frozen=True)
class GenerateSummary:
    """What one ``generate_dataset`` call wrote."""

    out: str  # qualified URI of the output root
    rows: dict[str, int]  # data rows per source as written (dirt included, headers excluded)
    truth_dir: str
    seconds: float
    files: dict[str, int] = field(default_factory=dict)  # files per source
    dirt: dict[str, int] = field(default_factory=dict)  # injected defects per kind, all sources

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def generate_dataset(
    spark: SparkSession,
    out: str,
    customers: int = 2000,
    seed: int = 7,
    start: date = date(2024, 1, 1),
    end: date = date(2025, 12, 31),
    dirty_rate: float = 0.01,
    *,
    overwrite: bool = False,
) -> GenerateSummary:
    """Generate the synthetic CRM dataset under ``out`` (a path or any URI Spark can write).

    The same arguments always give byte-identical files. ``out/<source>/`` and ``out/_truth/``
    must not exist or be empty unless ``overwrite`` (which replaces exactly those folders).
    """
    began = time.perf_counter()
    _validate(customers, start, end, dirty_rate)
    plan = Plan.create(customers=customers, seed=seed, start=start, end=end, dirty_rate=dirty_rate)
    fs = OutputFs(spark, out)
    _prepare(fs, overwrite)
    specs = src.source_specs(plan)
    rows: dict[str, int] = {}
    files: dict[str, int] = {}
    dirt: dict[str, dict[str, int]] = {}
    log.info("generating %d customers, %s..%s, seed %d, dirty rate %.3f into %s",
             customers, start, end, seed, dirty_rate, fs.root)

    with temporary_conf(spark, {"spark.sql.session.timeZone": "UTC"}):  # timestamps formatted in UTC
        world = World(spark, plan)
        cust = world.customers().persist(StorageLevel.MEMORY_AND_DISK)
        orders = world.orders(cust).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            frames: dict[str, DataFrame] = {
                "customers": src.customer_rows(world.customer_records(cust)),
                "products": src.product_rows(spark, plan),
                "orders": src.order_rows(orders),
                "order_items": src.order_item_rows(world.order_items(orders)),
                "web_events": src.web_event_rows(reduce(DataFrame.unionByName, [
                    world.purchase_events(orders), world.browse_events(cust), world.anonymous_events()])),
                "social_interactions": src.social_rows(world.social(cust)),
                "feedback": src.feedback_rows(world.feedback(cust)),
            }
            for name in src.SOURCES:
                extra = _truth_lines(spark, plan, cust) if name == "customers" else None
                n_rows, n_files, kinds = _write_source(spark, fs, plan, specs[name], frames[name], extra)
                rows[name], files[name], dirt[name] = n_rows, n_files, kinds
        finally:
            orders.unpersist()
            cust.unpersist()

    _write_truth(fs, plan, specs, rows, files, dirt)
    fs.delete(TMP_DIR)
    totals: dict[str, int] = {}
    for kinds in dirt.values():
        for kind, n in kinds.items():
            totals[kind] = totals.get(kind, 0) + n
    seconds = time.perf_counter() - began
    log.info("generated %d rows in %.1fs", sum(rows.values()), seconds)
    return GenerateSummary(out=fs.root, rows=rows, truth_dir=fs.uri(TRUTH_DIR), seconds=seconds, files=files,
                           dirt=dict(sorted(totals.items())))


def _validate(customers: int, start: date, end: date, dirty_rate: float) -> None:
    if customers < MIN_CUSTOMERS:
        raise ConfigError(f"--customers must be at least {MIN_CUSTOMERS} (got {customers})")
    if (end - start).days + 1 < MIN_DAYS:
        raise ConfigError(f"the date range {start}..{end} must span at least {MIN_DAYS} days")
    if not 0.0 <= dirty_rate <= 0.5:
        raise ConfigError(f"--dirty-rate must be between 0 and 0.5 (got {dirty_rate})")


def _prepare(fs: OutputFs, overwrite: bool) -> None:
    for rel in (*src.SOURCES, TRUTH_DIR):
        if fs.is_empty_or_missing(rel):
            continue
        if not overwrite:
            raise SourceError(
                f"{fs.uri(rel)} already exists and is not empty: generate into an empty location "
                "(or remove it first)"
            )
        fs.delete(rel)
    fs.delete(TMP_DIR)


def _truth_lines(spark: SparkSession, plan: Plan, cust: DataFrame) -> DataFrame:
    """``_truth/archetypes.csv`` and ``_truth/churners.csv`` as line rows (written with customers)."""

    def rows(frame: DataFrame, file: str, values: list[str]) -> DataFrame:
        return frame.selectExpr(
            f"'{file}' AS file", "1 AS hdr", "CAST(0 AS BIGINT) AS t", "customer_id AS k", "0 AS v",
            f"{csv_line(values, [False] * len(values))} AS line", "3 AS role", "CAST(NULL AS STRING) AS kind",
        )

    start = f"DATE'{plan.start.isoformat()}'"
    archetypes = rows(cust, f"{TRUTH_DIR}/archetypes.csv", ["customer_id", "archetype"])
    churners = rows(cust.filter(f"arch = {CHURNER}"), f"{TRUTH_DIR}/churners.csv", [
        "customer_id",
        f"CAST(date_add({start}, churn_day) AS STRING)",
        f"CAST(date_add({start}, decay_start) AS STRING)",
    ])
    headers = spark.createDataFrame(
        [(f"{TRUTH_DIR}/archetypes.csv", 0, 0, "", 0, "customer_id,archetype", 3, None),
         (f"{TRUTH_DIR}/churners.csv", 0, 0, "", 0, "customer_id,churn_date,decay_start_date", 3, None)],
        LINE_SCHEMA,
    )
    return archetypes.unionByName(churners).unionByName(headers)


def _write_source(
    spark: SparkSession, fs: OutputFs, plan: Plan, spec: SourceSpec, rows: DataFrame, extra: DataFrame | None
) -> tuple[int, int, dict[str, int]]:
    began = time.perf_counter()
    lines = render(spec, plan, rows)
    headers = header_rows(spec, plan)
    if headers:
        lines = lines.unionByName(spark.createDataFrame(headers, LINE_SCHEMA))
    if extra is not None:
        lines = lines.unionByName(extra)
    obs = Observation(f"generate_{spec.name}")
    metrics = [F.expr("sum(CASE WHEN role = 1 THEN 1 ELSE 0 END)").alias("rows")]
    metrics += [F.expr(f"sum(CASE WHEN role = 2 AND kind = '{k}' THEN 1 ELSE 0 END)").alias(k) for k in spec.kinds]
    lines = lines.observe(obs, *metrics)
    n_files = len(spec.file_names(plan)) + (1 if spec.fmt == "json" else 0)
    partitions = max(1, min(n_files, math.ceil(plan.customers * max(spec.rows_per_customer, 1.0) / _LINES_PER_TASK)))
    written = write_lines(fs, lines, tmp_rel=f"{TMP_DIR}/{spec.name}", partitions=partitions)
    values = obs.get
    n_rows = int(values.get("rows") or 0)
    kinds = {k: int(values.get(k) or 0) for k in spec.kinds}
    data_files = [w for w in written if w.startswith(f"{spec.name}/")]
    log.info("wrote %s: %d rows in %d files, %d defects (%.1fs)", spec.name, n_rows, len(data_files),
             sum(kinds.values()), time.perf_counter() - began)
    return n_rows, len(data_files), kinds


def _write_truth(fs: OutputFs, plan: Plan, specs: dict[str, SourceSpec], rows: dict[str, int],
                 files: dict[str, int], dirt: dict[str, dict[str, int]]) -> None:
    cat = plan.catalog
    assoc = [
        json.dumps({
            "kind": a.kind,
            "items": a.items(cat.products),
            "antecedent": cat.products[a.antecedent].product_id,
            "consequents": [cat.products[c].product_id for c in a.consequents],
            "probability": a.probability,
        })
        for a in cat.associations
    ]
    fs.write_text(f"{TRUTH_DIR}/associations.json", "\n".join(assoc) + "\n")
    fs.concat(f"{TRUTH_DIR}/dirt.csv", ",".join(DIRT_COLUMNS),
              [f"{TRUTH_DIR}/dirt/{name}.csv" for name in src.SOURCES])
    fs.delete(f"{TRUTH_DIR}/dirt")
    summary = ["source,kind,count"] + [
        f"{name},{kind},{n}" for name in src.SOURCES for kind, n in dirt[name].items()
    ]
    fs.write_text(f"{TRUTH_DIR}/dirt_summary.csv", "\n".join(summary) + "\n")
    manifest = {
        "generator": "crm-spark generate",
        "format_version": 1,
        "customers": plan.customers,
        "seed": plan.seed,
        "start": plan.start.isoformat(),
        "end": plan.end.isoformat(),
        "dirty_rate": plan.dirty_rate,
        "products": cat.size,
        "sources": {
            name: {
                "format": specs[name].fmt,
                "columns": list(specs[name].columns),
                "files": files[name],
                "rows": rows[name],
                "defects": dirt[name],
            }
            for name in src.SOURCES
        },
    }
    fs.write_text(f"{TRUTH_DIR}/manifest.json", json.dumps(manifest, indent=2) + "\n")
