"""Model-selection fixed costs, before and after, in one run on the same data.

On small inputs the model stages are chains of tiny Spark jobs (a k-means iteration, an L-BFGS
iteration, a tree level: one job each), so their cost is the number of jobs times a job's latency.
This script times, on seeded synthetic data of the demo's size, what the segment and churn stages
changed:

* segment: the k sweep (k 4..8, 3 restarts each, silhouette per k) with fits submitted one at a
  time (``segment.parallelism: 1``, before) and from 8 driver threads (after);
* churn: the tuned logistic regression (TrainValidationSplit) and the GBT challenger on the
  training rows as they come (the session's shuffle partitions) with the old defaults (regParam
  grid 0.0/0.01/0.1, tol 1e-4, LR then GBT) and the new ones (grid 0.001/0.01/0.1, tol 1e-3,
  one partition per 50,000 rows, GBT fitted alongside from a second thread), with the validation
  ROC-AUC of each so the quality is compared too.

The JVM's JIT compiler makes the first rounds slower whatever runs in them, so one warm-up round
of each variant runs first and then the variants alternate for ``--rounds`` rounds; min and
median are reported. Prints a table and saves JSON with the machine.

    .venv/bin/python bench/bench_model_selection.py            # 2,000 customers, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import machine  # noqa: E402
from crm_spark.config import load_settings  # noqa: E402
from crm_spark.session import build_session  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "model_selection.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    settings = load_settings(env="local")
    spark = build_session(settings)
    from pyspark.ml import Pipeline
    from pyspark.sql import functions as F

    from crm_spark.ml import churn as ml
    from crm_spark.ml import sized
    from crm_spark.ml.segment import preprocessing_stages, select_k

    rng = np.random.default_rng(args.seed)
    n = args.customers
    # Segment input: six heavy-tailed behaviour columns from four planted groups.
    group = rng.integers(0, 4, size=n)
    centres = rng.lognormal(0.0, 1.0, size=(4, 6)) * 50
    points = (centres[group] * rng.lognormal(0.0, 0.4, size=(n, 6))).tolist()
    names = ["recency_days", "frequency", "monetary", "avg_order_value", "tenure_days", "days_since_last_visit"]
    seg_frame = spark.createDataFrame(points, names)
    stages = preprocessing_stages(features=names, log_features=names)
    prepared = Pipeline(stages=stages).fit(seg_frame).transform(seg_frame).cache()
    prepared.count()

    # Churn input: gold.customer_features-shaped rows with a label from a planted logistic model.
    columns = ml.feature_columns()
    numeric = {c: rng.gamma(2.0, 20.0, size=n) for c in columns.numeric}
    signal = (numeric[columns.numeric[0]] - numeric[columns.numeric[1]]) / 40.0
    label = (rng.random(n) < 1 / (1 + np.exp(-signal))).astype(int)
    rows = [
        {**{c: float(v[i]) for c, v in numeric.items()}, **{c: bool(i % 2) for c in columns.boolean},
         **{c: ("a", "b", "c")[i % 3] for c in columns.categorical}, ml.LABEL: int(label[i])}
        for i in range(n)
    ]
    labeled = spark.createDataFrame(rows).repartition(int(spark.conf.get("spark.sql.shuffle.partitions")))
    counts = ml.label_counts(labeled)
    negative, positive = ml.balanced_weights(**counts)
    train_all = ml.with_class_weight(labeled, negative=negative, positive=positive)
    train, valid = train_all.randomSplit([0.8, 0.2], seed=args.seed)
    train, valid = train.cache(), valid.cache()
    train_rows = float(train.count())
    valid.count()

    def sweep(parallelism: int) -> dict[str, Any]:
        sel = select_k(prepared, algorithm="kmeans", k_values=range(4, 9), seed=42, max_iter=50, tol=0.01,
                       restarts=3, silhouette_tolerance=0.02, min_cluster_share=0.01, parallelism=parallelism)
        return {"k": sel.k, "silhouette": round(sel.metrics_by_k[sel.k]["silhouette"], 4)}

    def churn(*, grid: list[float], tol: float, compact: bool, together: bool) -> dict[str, Any]:
        data = sized(train, train_rows).cache() if compact else train

        def lr() -> float:
            tuner = ml.tuned_logistic_regression(
                max_iter=100, tol=tol, weighted=True, tuning="tvs", reg_params=grid, elastic_net_params=[0.0], folds=3,
                train_ratio=0.75, seed=42, parallelism=2,
            )
            return ml.roc_auc(ml.score(tuner.fit(data).bestModel, valid))

        def gbt() -> float:
            model = ml.churn_pipeline(ml.gbt_classifier(max_iter=20, max_depth=4, step_size=0.1, seed=42, weighted=True))
            return ml.roc_auc(ml.score(model.fit(data), valid))

        if together:
            with ThreadPoolExecutor(2) as pool:
                aucs = list(pool.map(lambda f: f(), [lr, gbt]))
        else:
            aucs = [lr(), gbt()]
        if compact:
            data.unpersist()
        return {"lr_roc_auc": round(aucs[0], 4), "gbt_roc_auc": round(aucs[1], 4)}

    variants: dict[str, Callable[[], dict[str, Any]]] = {
        "segment k sweep, 1 fit at a time (before)": lambda: sweep(1),
        "segment k sweep, 8 fits at once (after)": lambda: sweep(8),
        "churn LR grid 0/0.01/0.1, tol 1e-4, then GBT (before)": lambda: churn(
            grid=[0.0, 0.01, 0.1], tol=1e-4, compact=False, together=False),
        "churn LR grid 0.001/0.01/0.1, tol 1e-3, sized, GBT alongside (after)": lambda: churn(
            grid=[0.001, 0.01, 0.1], tol=1e-3, compact=True, together=True),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    outcome: dict[str, dict[str, Any]] = {}
    for r in range(args.rounds + 1):  # round 0 warms the JIT up and is not counted
        for name, run in variants.items():
            t = time.perf_counter()
            outcome[name] = run()
            if r:
                timings[name].append(time.perf_counter() - t)
            print(f"round {r} {name}: {time.perf_counter() - t:.1f} s {outcome[name]}", flush=True)

    results = [
        {"variant": name, "min_s": round(min(ts), 1), "median_s": round(statistics.median(ts), 1), "runs_s": [round(t, 1) for t in ts],
         **outcome[name]}
        for name, ts in timings.items()
    ]
    entry = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/bench_model_selection.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": machine(spark),
        "customers": n,
        "training_rows": int(train_rows),
        "results": results,
    }
    print(f"\n{'variant':72s} {'min_s':>6s} {'median_s':>8s}  quality")
    for x in results:
        quality = {k: v for k, v in x.items() if k not in ("variant", "min_s", "median_s", "runs_s")}
        print(f"{x['variant']:72s} {x['min_s']:6.1f} {x['median_s']:8.1f}  {quality}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(entry, indent=2) + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
