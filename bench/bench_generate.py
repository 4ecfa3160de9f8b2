"""Benchmark ``crm-spark generate``: rows per source, total rows, seconds and rows per second.

Run from the repository root (it builds the session from ``conf/``)::

    .venv/bin/python bench/bench_generate.py                 # 100,000 customers
    .venv/bin/python bench/bench_generate.py --customers 10000 --keep /tmp/gen

Writes the figures, the machine (cores, memory) and the command to
``bench/results/generate.json`` (``--result`` to change).
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
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crm_spark.config import load_settings  # noqa: E402
from crm_spark.generate import generate_dataset  # noqa: E402
from crm_spark.session import build_session  # noqa: E402


def _memory_gib() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return float("nan")


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2025, 12, 31))
    parser.add_argument("--dirty-rate", type=float, default=0.01)
    parser.add_argument("--keep", help="generate into this folder and keep it (default: a temp dir, removed)")
    parser.add_argument("--result", default=str(ROOT / "bench" / "results" / "generate.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    load_before = _load_average()
    spark = build_session(load_settings())
    out_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="crm-gen-bench-"))
    try:
        began = time.perf_counter()
        summary = generate_dataset(
            spark, str(out_dir / "raw"), customers=args.customers, seed=args.seed, start=args.start,
            end=args.end, dirty_rate=args.dirty_rate,
        )
        seconds = time.perf_counter() - began
    finally:
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)

    total = summary.total_rows
    result = {
        "benchmark": "crm-spark generate",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "parameters": {
            "customers": args.customers, "seed": args.seed, "start": args.start.isoformat(),
            "end": args.end.isoformat(), "dirty_rate": args.dirty_rate,
        },
        "machine": {
            "nproc": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "spark_master": spark.sparkContext.master,
            "load_average_before": load_before,
            "load_average_after": _load_average(),
        },
        "rows": summary.rows,
        "files": summary.files,
        "defects": summary.dirt,
        "total_rows": total,
        "seconds": round(seconds, 1),
        "rows_per_second": round(total / seconds),
    }
    for source, n in summary.rows.items():
        print(f"{source:>20}: {n:>12,} rows")
    print(f"{'total':>20}: {total:>12,} rows in {seconds:.1f}s ({total / seconds:,.0f} rows/s)")
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
