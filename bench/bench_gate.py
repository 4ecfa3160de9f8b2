"""The data-quality gate's cost against the Spark jobs it needs, on a real feature table.

Builds silver for N customers (the synthetic tables of ``bench_features``), computes
``gold.customer_features`` as of a date (cached), then times the gate of that table (the first
check pays Great Expectations' warm-up; the median of the later ones is the steady cost) and,
on the same cached frame, the three Spark jobs a hand-written check would run: every row rule
in one query, the key's uniqueness, the row count. Prints the ratio and saves JSON.

    .venv/bin/python bench/bench_gate.py --customers 2000
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import _save, machine, synthetic_silver  # noqa: E402
from crm_spark.config import PathsSettings, load_settings  # noqa: E402
from crm_spark.contracts import CheckContext, table  # noqa: E402
from crm_spark.contracts.checks import Rule  # noqa: E402
from crm_spark.quality import Gate, rule_query  # noqa: E402
from crm_spark.session import build_session  # noqa: E402
from crm_spark.transforms.features import customer_features  # noqa: E402

TABLE = "gold.customer_features"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2025, 6, 30))
    parser.add_argument("--checks", type=int, default=4, help="gate runs (the first is the warm-up)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gate.json")
    args = parser.parse_args(argv)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    settings = load_settings(env="local")
    settings = settings.model_copy(update={"paths": PathsSettings(raw=str(work / "raw"), lake=str(work / "lake"))})
    spark = build_session(settings)
    try:
        frames = synthetic_silver(spark, args.customers, as_of=args.as_of, seed=args.seed)
        f = settings.features
        features = customer_features(
            **frames, as_of=[args.as_of], segments=f.segments, no_orders_segment=f.no_orders_segment,
            high_tier_percentile=f.high_tier_percentile, mid_tier_percentile=f.mid_tier_percentile,
            missing_rating=f.missing_rating, missing_nps=f.missing_nps,
        ).cache()
        rows = features.count()

        started = time.perf_counter()
        gate = Gate(spark, settings)
        init_s = time.perf_counter() - started
        check_s = []
        for _ in range(args.checks):
            started = time.perf_counter()
            gate.check(TABLE, features, previous_rows=rows)
            check_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        gate.build_docs()
        docs_s = time.perf_counter() - started

        contract = table(TABLE)
        checks = contract.check_list(CheckContext(settings, previous_rows=rows))
        rules = [c.sql for c in checks if isinstance(c, Rule)]
        features.createOrReplaceTempView("bench_gate_batch")
        raw = {}
        for name, job in {
            "rule_query": lambda: spark.sql(rule_query(rules, show=contract.keys).replace("{batch}", "bench_gate_batch")).count(),
            "unique_keys": lambda: features.groupBy(*contract.keys).count().where("count > 1").count(),
            "row_count": lambda: features.count(),
        }.items():
            job()  # warm
            started = time.perf_counter()
            job()
            raw[name] = time.perf_counter() - started
        steady = statistics.median(check_s[1:]) if len(check_s) > 1 else check_s[0]
        entry: dict[str, Any] = {
            "customers": args.customers,
            "feature_rows": rows,
            "row_rules_in_one_query": len(rules),
            "gate_init_seconds": round(init_s, 2),
            "check_seconds": [round(s, 2) for s in check_s],
            "steady_check_seconds": round(steady, 2),
            "data_docs_seconds": round(docs_s, 2),
            "hand_written_jobs_seconds": {k: round(v, 2) for k, v in raw.items()},
            "overhead_ratio": round(steady / sum(raw.values()), 2),
        }
        print(f"{rows:,} feature rows, {len(rules)} row rules in one query; gate: first {check_s[0]:.2f}s, "
              f"steady {steady:.2f}s; the same jobs by hand {sum(raw.values()):.2f}s "
              f"(ratio {entry['overhead_ratio']}); Data Docs once {docs_s:.2f}s")
        entry["machine"] = machine(spark)
        entry["command"] = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
        entry["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _save(args.out, entry)
        print(f"saved to {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
