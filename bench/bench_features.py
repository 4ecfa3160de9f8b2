"""Time the features stage on N synthetic customers (default 1,000,000).

Builds silver-shaped tables (the exact contracts of ``crm_spark.contracts.silver``) for N
customers in Spark, seeded, writes them as silver Delta tables to a temporary lake, then times
``crm_spark.stages.features.run`` as of one date: read silver, compute every feature in one
pass per source, gate, overwrite the partition. Optionally also times a backfill of several
dates with the stage's declared backfill entry. Prints the figures and writes them, with the machine, its load and
the command, to ``bench/results/features.json`` (one entry per customer count, replaced on
re-run).

Per customer on average: 70 % have orders (about 2.5 each, 1-3 lines), about 15 web events in
sessions of 5, 0.9 social interactions, 0.45 feedback rows; 8 % of web events are anonymous and
some orders fall after the as-of date (the point-in-time filter must drop them).

    .venv/bin/python bench/bench_features.py                      # 1,000,000 customers
    .venv/bin/python bench/bench_features.py --customers 200000 --backfill 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyspark.sql import Column, DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from crm_spark.config import PathsSettings, load_settings  # noqa: E402
from crm_spark.lake import open_lake  # noqa: E402
from crm_spark.contracts import table  # noqa: E402
from crm_spark.session import build_session  # noqa: E402
from crm_spark.stages import StageContext  # noqa: E402
from crm_spark.stages import run_backfill, run_stage  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "features.json"
HISTORY_DAYS = 730
PRODUCTS = 5000
CATEGORIES = 24


def _rand(seed: int, salt: int) -> Column:
    return F.rand(seed * 1000 + salt)


def _upto(seed: int, salt: int, high: int) -> Column:
    """A uniform random count in 1..high."""
    return (F.lit(1) + _rand(seed, salt) * high).cast("int")


def _numbered(count: Column) -> Column:
    """One row per number 1..count (count >= 1), as column ``k``."""
    return F.explode(F.sequence(F.lit(1), count)).alias("k")


def _conform(df: DataFrame, source: str) -> DataFrame:
    """Exactly the silver contract: missing columns (lineage, unused attributes) are typed nulls."""
    schema = table(f"silver.{source}").schema
    return df.select(
        *(
            (F.col(f.name) if f.name in df.columns else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in schema.fields
        )
    )


def synthetic_silver(spark: SparkSession, customers: int, *, as_of: date, seed: int) -> dict[str, DataFrame]:
    """Seeded silver-shaped frames for ``customers`` customers (deterministic for fixed partitions)."""
    parts = max(4, customers // 125_000)
    start = as_of - timedelta(days=HISTORY_DAYS)
    people = spark.range(customers, numPartitions=parts).select(
        F.format_string("C%08d", "id").alias("customer_id"),
        F.date_add(F.lit(start), (_rand(seed, 1) * HISTORY_DAYS).cast("int")).alias("signup_date"),
        _rand(seed, 2).alias("u"),
    )
    # Days from signup to 30 days past the as-of date: some activity lands after it on purpose.
    active_days = F.datediff(F.lit(as_of + timedelta(days=30)), F.col("signup_date")) + 1

    def after_signup(salt: int) -> Column:
        return F.date_add(F.col("signup_date"), (_rand(seed, salt) * active_days).cast("int"))

    orders = (
        people.where(F.col("u") < 0.7)
        .withColumn("n", (F.lit(1) + F.floor(-F.log(F.lit(1.0) - _rand(seed, 3)) * 1.5)).cast("int"))
        .select("customer_id", "signup_date", _numbered(F.least("n", F.lit(40))))
        .withColumn("s", _rand(seed, 4))
        .select(
            F.concat_ws("-", "customer_id", "k").alias("order_id"),
            "customer_id",
            after_signup(5).alias("order_date"),
            F.when(F.col("s") < 0.88, "completed")
            .when(F.col("s") < 0.95, "returned")
            .otherwise("cancelled")
            .alias("status"),
            F.lit("web").alias("channel"),
        )
        .withColumn("order_ts", F.col("order_date").cast("timestamp"))
    )
    items = (
        orders.select("order_id", _numbered(_upto(seed, 6, 3)))
        .withColumnRenamed("k", "line_no")
        .withColumn("product_id", F.format_string("P%05d", (_rand(seed, 7) * PRODUCTS).cast("int")))
        .withColumn("quantity", F.when(_rand(seed, 8) < 0.02, F.lit(-1)).otherwise(_upto(seed, 9, 3)))
        .withColumn("unit_price", (F.lit(2.0) + _rand(seed, 10) * 120).cast("decimal(12,2)"))
        .withColumn("discount", F.lit(0).cast("decimal(5,4)"))
        .withColumn("line_amount", (F.col("quantity") * F.col("unit_price")).cast("decimal(14,2)"))
    )
    products = spark.range(PRODUCTS).select(
        F.format_string("P%05d", "id").alias("product_id"),
        F.format_string("category-%02d", F.col("id") % CATEGORIES).alias("category"),
        F.lit(9.99).cast("decimal(12,2)").alias("list_price"),
    )
    kinds = ("page_view", "page_view", "product_view", "search", "add_to_cart", "checkout")
    event_types = F.array(*(F.lit(t) for t in kinds))
    web = (
        # 0..29 events: numbered 0..n, event 0 dropped (sequence(1, 0) would count down).
        people.select("customer_id", "signup_date", F.explode(F.sequence(F.lit(0), _upto(seed, 11, 30) - 1)).alias("k"))
        .where(F.col("k") > 0)
        .select(
            F.concat_ws("-", "customer_id", F.lit("e"), "k").alias("event_id"),
            F.when(_rand(seed, 12) < 0.08, F.lit(None)).otherwise(F.col("customer_id")).alias("customer_id"),
            F.concat_ws("-", "customer_id", F.lit("s"), F.floor(F.col("k") / 5)).alias("session_id"),
            (after_signup(13).cast("timestamp") + F.make_interval(secs=_upto(seed, 14, 86399))).alias("event_ts"),
            F.element_at(event_types, _upto(seed, 15, len(kinds))).alias("event_type"),
            (_rand(seed, 16) * 300).cast("int").alias("duration_sec"),
        )
    )
    social = (
        people.where(_rand(seed, 25) < 0.4)
        .select("customer_id", "signup_date", _numbered(_upto(seed, 17, 3)))
        .select(
            F.concat_ws("-", "customer_id", F.lit("i"), "k").alias("interaction_id"),
            "customer_id",
            (_rand(seed, 18) * 2 - 1).alias("sentiment"),
            after_signup(19).cast("timestamp").alias("ts"),
            F.lit("like").alias("interaction_type"),
        )
    )
    feedback = (
        people.where(_rand(seed, 26) < 0.3)
        .select("customer_id", "signup_date", _numbered(_upto(seed, 20, 2)))
        .select(
            F.concat_ws("-", "customer_id", F.lit("f"), "k").alias("feedback_id"),
            "customer_id",
            after_signup(21).cast("timestamp").alias("ts"),
            _upto(seed, 22, 5).alias("rating"),
            (_rand(seed, 23) * 11).cast("int").alias("nps"),
            F.when(_rand(seed, 24) < 0.3, "complaint").otherwise("praise").alias("category"),
        )
    )
    frames = {"customers": people, "orders": orders, "order_items": items, "products": products, "web_events": web,
              "social_interactions": social, "feedback": feedback}
    return {name: _conform(df, name) for name, df in frames.items()}


def machine(spark: SparkSession) -> dict[str, Any]:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "spark": spark.version,
        "spark_master": spark.sparkContext.master,
        "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
        "driver_memory": spark.conf.get("spark.driver.memory", "default"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2025, 12, 31))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backfill", type=int, default=0, help="also time a backfill of this many month-end dates")
    parser.add_argument("--env", default="local", help="config env whose Spark settings to use")
    parser.add_argument("--work", help="folder for the temporary lake (default: a new temp dir, removed after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-features-"))
    settings = load_settings(env=args.env)
    settings = settings.model_copy(update={"paths": PathsSettings(raw=str(work / "raw"), lake=str(work / "lake"))})
    spark = build_session(settings)
    info = machine(spark)
    lake = open_lake(spark, settings)
    try:
        started = time.perf_counter()
        silver_rows = {}
        for name, df in synthetic_silver(spark, args.customers, as_of=args.as_of, seed=args.seed).items():
            silver_rows[f"silver.{name}"] = lake.overwrite(f"silver.{name}", df).rows
        generate_s = time.perf_counter() - started
        print(f"silver for {args.customers:,} customers in {generate_s:.1f}s: "
              + ", ".join(f"{t} {n:,}" for t, n in silver_rows.items()), flush=True)

        started = time.perf_counter()
        result = run_stage(StageContext(settings=settings, spark=spark, lake=lake, as_of=args.as_of), "features")
        stage_s = time.perf_counter() - started
        rows = result.rows
        gate_s = sum(q.seconds for q in result.quality)
        parts = {"gate": round(gate_s, 2), "compute_and_write": round(stage_s - gate_s, 2)}
        entry: dict[str, Any] = {
            "customers": args.customers,
            "as_of": args.as_of.isoformat(),
            "silver_rows": silver_rows,
            "silver_generate_seconds": round(generate_s, 1),
            "feature_rows": rows,
            "stage_seconds": round(stage_s, 1),
            "gate_seconds": parts["gate"],
            "compute_and_write_seconds": parts["compute_and_write"],
            "gate_share": round(parts["gate"] / stage_s, 3),
            "rows_per_second": round(rows / stage_s),
        }
        print(f"features as of {args.as_of}: {rows:,} rows in {stage_s:.1f}s ({rows / stage_s:,.0f} rows/s); "
              f"gate {parts['gate']:.1f}s ({parts['gate'] / stage_s:.0%}), compute + write {parts['compute_and_write']:.1f}s", flush=True)

        if args.backfill:
            dates = _month_ends(args.as_of, args.backfill)
            started = time.perf_counter()
            backfill = run_backfill(StageContext(settings=settings, spark=spark, lake=lake), "features", dates)
            backfill_s = time.perf_counter() - started
            entry["backfill"] = {
                "dates": [d.isoformat() for d in dates],
                "rows": backfill.rows,
                "seconds": round(backfill_s, 1),
                "gate_seconds": round(sum(q.seconds for q in backfill.quality), 2),
                "rows_per_second": round(backfill.rows / backfill_s),
            }
            print(f"backfill of {len(dates)} dates: {backfill.rows:,} rows in {backfill_s:.1f}s", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    entry["machine"] = info
    entry["command"] = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    entry["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _save(args.out, entry)
    print(f"saved to {args.out}")
    return 0


def _month_ends(last: date, count: int) -> list[date]:
    """``last`` and the ``count - 1`` month ends before it, oldest first."""
    out = []
    month_end = last
    for _ in range(count):
        out.append(month_end)
        month_end = month_end.replace(day=1) - timedelta(days=1)
    return sorted(out)


def _save(path: Path, entry: dict[str, Any]) -> None:
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    runs = [r for r in runs if r.get("customers") != entry["customers"]] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": sorted(runs, key=lambda r: r["customers"])}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
