"""Spark MLlib FPGrowth (through crm_spark.ml.basket) against mlxtend on the same baskets.

At each size the same seeded baskets (Zipf-popular items plus planted pairs) go to both:

- Spark: ``fit_fpgrowth`` -> ``frequent_itemsets`` + ``association_rules``, collected, with the
  mined itemsets cached as the stage does; the baskets are cached and counted before the clock
  starts (in the stage they come from a table).
- mlxtend: ``TransactionEncoder`` (its one-hot input) -> ``fpgrowth`` -> ``association_rules``.

The run fails unless both find exactly the same itemsets with the same supports, and the same
single-consequent rules with the same confidence and lift. It prints the check and the time
ratio (Spark / mlxtend) per size, and writes the figures, the machine and the command to
``bench/results/basket.json``.

    .venv/bin/python bench/bench_basket.py                    # sizes 20000 and 200000 baskets
    .venv/bin/python bench/bench_basket.py --sizes 5000 50000 --min-support 0.003
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crm_spark.config import load_settings  # noqa: E402
from crm_spark.ml.basket import association_rules, fit_fpgrowth, frequent_itemsets  # noqa: E402
from crm_spark.session import build_session  # noqa: E402

TOLERANCE = 1e-12


def make_baskets(n: int, *, items: int, pairs: int, seed: int) -> list[list[str]]:
    """``n`` baskets of 1 + Poisson(2.5) Zipf-popular items; each planted pair's second item
    joins its first with probability 0.6."""
    rng = np.random.default_rng([seed, n])
    weights = 1.0 / np.arange(1, items + 1) ** 0.9
    weights /= weights.sum()
    sizes = 1 + rng.poisson(2.5, size=n)
    draws = rng.choice(items, size=int(sizes.sum()), p=weights)
    planted = {int(a): int(b) for a, b in zip(rng.choice(items // 10, pairs, replace=False),
                                                   items // 2 + rng.choice(items // 2, pairs, replace=False))}
    joins = rng.random(size=int(sizes.sum())) < 0.6
    baskets = []
    for chunk, join in zip(np.split(draws, np.cumsum(sizes)[:-1]), np.split(joins, np.cumsum(sizes)[:-1])):
        basket = {int(i) for i in chunk}
        basket |= {planted[int(i)] for i, j in zip(chunk, join) if j and int(i) in planted}
        baskets.append(sorted(f"I{i:04d}" for i in basket))
    return baskets


def run_spark(spark, baskets: list[list[str]], *, min_support: float, min_confidence: float):
    frame = spark.createDataFrame(
        pd.DataFrame({"basket_id": [str(i) for i in range(len(baskets))], "items": baskets}),
        "basket_id string, items array<string>",
    ).cache()
    frame.count()
    started = time.perf_counter()
    model = fit_fpgrowth(frame, min_support=min_support, min_confidence=min_confidence)
    mined = model.freqItemsets.cache()  # as the stage does: mine once for itemsets and rules
    itemsets = frequent_itemsets(model, baskets=len(baskets), max_size=len(max(baskets, key=len))).collect()
    rules = association_rules(model, min_lift=0.0, max_size=10**6).collect()
    seconds = time.perf_counter() - started
    mined.unpersist()
    frame.unpersist()
    return (
        {frozenset(r["items"]): r["support"] for r in itemsets},
        {(frozenset(r["antecedent"]), r["consequent"]): (r["confidence"], r["lift"]) for r in rules},
        seconds,
    )


def run_mlxtend(baskets: list[list[str]], *, min_support: float, min_confidence: float):
    from mlxtend.frequent_patterns import association_rules as mx_rules
    from mlxtend.frequent_patterns import fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    started = time.perf_counter()
    encoder = TransactionEncoder()
    onehot = pd.DataFrame(encoder.fit(baskets).transform(baskets), columns=encoder.columns_)
    found = fpgrowth(onehot, min_support=min_support, use_colnames=True)
    rules = mx_rules(found, num_itemsets=len(baskets), metric="confidence", min_threshold=min_confidence)
    seconds = time.perf_counter() - started
    single = rules[rules["consequents"].map(len) == 1]
    return (
        dict(zip(found["itemsets"].map(frozenset), found["support"].astype(float))),
        {
            (frozenset(a), next(iter(c))): (float(conf), float(lift))
            for a, c, conf, lift in zip(
                single["antecedents"], single["consequents"], single["confidence"], single["lift"]
            )
        },
        seconds,
    )


def compare(spark_sets, mx_sets, spark_rules, mx_rules) -> dict:
    same_sets = spark_sets.keys() == mx_sets.keys()
    same_rules = spark_rules.keys() == mx_rules.keys()
    support_diff = max((abs(spark_sets[k] - mx_sets[k]) for k in spark_sets.keys() & mx_sets.keys()), default=0.0)
    rule_diff = max(
        (max(abs(a - b) for a, b in zip(spark_rules[k], mx_rules[k])) for k in spark_rules.keys() & mx_rules.keys()),
        default=0.0,
    )
    return {
        "itemsets_spark": len(spark_sets),
        "itemsets_mlxtend": len(mx_sets),
        "itemsets_only_spark": len(spark_sets.keys() - mx_sets.keys()),
        "itemsets_only_mlxtend": len(mx_sets.keys() - spark_sets.keys()),
        "rules_spark": len(spark_rules),
        "rules_mlxtend": len(mx_rules),
        "max_support_diff": support_diff,
        "max_rule_metric_diff": rule_diff,
        "identical": bool(same_sets and same_rules and support_diff <= TOLERANCE and rule_diff <= 1e-9),
    }


def machine(spark) -> dict:
    import mlxtend
    import pyspark

    mem = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gib": mem,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "spark": pyspark.__version__,
        "spark_master": spark.sparkContext.master,
        "mlxtend": mlxtend.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000], help="basket counts")
    parser.add_argument("--items", type=int, default=400, help="distinct items")
    parser.add_argument("--pairs", type=int, default=12, help="planted pairs")
    parser.add_argument("--min-support", type=float, default=0.002)
    parser.add_argument("--min-confidence", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "basket.json")
    args = parser.parse_args(argv)

    settings = load_settings(env="local")
    spark = build_session(settings)
    # Warm-up: the first Spark job of a session pays for JIT and class loading.
    run_spark(spark, make_baskets(500, items=args.items, pairs=args.pairs, seed=args.seed),
              min_support=0.05, min_confidence=args.min_confidence)

    results = []
    for n in args.sizes:
        baskets = make_baskets(n, items=args.items, pairs=args.pairs, seed=args.seed)
        s_sets, s_rules, s_sec = run_spark(spark, baskets, min_support=args.min_support,
                                           min_confidence=args.min_confidence)
        m_sets, m_rules, m_sec = run_mlxtend(baskets, min_support=args.min_support,
                                             min_confidence=args.min_confidence)
        check = compare(s_sets, m_sets, s_rules, m_rules)
        row = {
            "baskets": n,
            "mean_basket_items": round(sum(map(len, baskets)) / n, 3),
            "min_count": math.ceil(args.min_support * n),
            "spark_seconds": round(s_sec, 3),
            "mlxtend_seconds": round(m_sec, 3),
            "ratio_spark_over_mlxtend": round(s_sec / m_sec, 3),
            **check,
        }
        results.append(row)
        print(
            f"{n:>9,} baskets: itemsets spark={check['itemsets_spark']:,} mlxtend={check['itemsets_mlxtend']:,}, "
            f"rules spark={check['rules_spark']:,} mlxtend={check['rules_mlxtend']:,}, "
            f"max |support diff|={check['max_support_diff']:.1e} -> identical={check['identical']}; "
            f"spark {s_sec:.2f}s, mlxtend {m_sec:.2f}s, ratio spark/mlxtend = {s_sec / m_sec:.2f}"
        )

    report = {
        "benchmark": "basket: Spark MLlib FPGrowth vs mlxtend fpgrowth + association_rules",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": {"items": args.items, "pairs": args.pairs, "min_support": args.min_support,
                   "min_confidence": args.min_confidence, "seed": args.seed},
        "machine": machine(spark),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    identical = all(r["identical"] for r in results)
    print(f"equality check: {'PASS' if identical else 'FAIL'} (identical itemsets, supports and rules at every size)")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
