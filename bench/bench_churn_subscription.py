"""Churn on a subscription customer table: the stage's champion against scikit-learn, same rows.

Generates the Telco-shaped table (``crm_spark.generate.subscription``: planted effects, known
Bayes-optimal ROC-AUC), runs ingest -> refine -> features -> churn with
``conf/examples/subscription_churn.yaml`` (attributes as features, one labelled snapshot, a
stratified 20 % holdout) in one Spark session, then fits scikit-learn's LogisticRegression and
HistGradientBoostingClassifier on exactly the training rows the stage wrote to
``gold.churn_training`` (the same 14 attributes: one-hot categoricals, 0/1 flags, numerics
median-imputed and scaled; the stage also sees ``tenure_days``, the same tenure in days from the
signup date) and scores the same holdout rows. Prints ROC-AUC and seconds of each,
with the Bayes ROC-AUC of the holdout, and saves JSON with the machine.

    .venv/bin/python bench/bench_churn_subscription.py                   # 5,000 customers
    .venv/bin/python bench/bench_churn_subscription.py --customers 50000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results" / "churn_subscription.json"
CONFIG = ROOT / "conf" / "examples" / "subscription_churn.yaml"
CATEGORICAL = ("InternetService", "OnlineSecurity", "TechSupport", "StreamingTV", "StreamingMovies", "Contract",
               "PaymentMethod")
FLAGS = ("Partner", "Dependents", "PaperlessBilling")
NUMERIC = ("SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges")


def design(csv_path: Path) -> pd.DataFrame:
    """The example's 14 attributes of a Telco-shaped CSV as model inputs, indexed by customer id."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False).set_index("customerID")
    out = pd.DataFrame(index=table.index)
    for col in NUMERIC:
        out[col] = pd.to_numeric(table[col].str.strip(), errors="coerce")
    for col in FLAGS:
        out[col] = (table[col] == "Yes").astype(float)
    return out.join(pd.get_dummies(table[list(CATEGORICAL)], dtype=float))


def peers(x: pd.DataFrame, train: pd.DataFrame, held: pd.DataFrame) -> dict[str, dict[str, float]]:
    """ROC-AUC and fit + score seconds of the two scikit-learn baselines; ``train`` / ``held``
    hold ``customer_id`` and ``churned``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = {
        "sklearn_logistic_regression": make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                                                     LogisticRegression(max_iter=2000)),
        "sklearn_hist_gradient_boosting": HistGradientBoostingClassifier(random_state=0),
    }
    out = {}
    for name, model in models.items():
        started = time.perf_counter()
        model.fit(x.loc[train["customer_id"]].to_numpy(), train["churned"].to_numpy())
        p = model.predict_proba(x.loc[held["customer_id"]].to_numpy())[:, 1]
        out[name] = {"roc_auc": float(roc_auc_score(held["churned"].to_numpy(), p)),
                     "seconds": time.perf_counter() - started}
    return out


def bayes_roc_auc(truth_dir: Path, held: pd.DataFrame) -> float:
    """ROC-AUC of the true churn probabilities on the holdout rows: what a perfect model scores."""
    from sklearn.metrics import roc_auc_score

    truth = pd.read_csv(truth_dir / "subscription_probabilities.csv").set_index("customerID")
    return float(roc_auc_score(held["churned"].to_numpy(), truth.loc[held["customer_id"], "churn_probability"].to_numpy()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from bench_features import machine
    from crm_spark.config import load_settings
    from crm_spark.generate.subscription import generate_subscriptions
    from crm_spark.lake import open_lake
    from crm_spark.session import build_session
    from crm_spark.stages import StageContext, run_stage

    work = Path(tempfile.mkdtemp(prefix="bench_churn_subscription_"))
    summary = generate_subscriptions(work / "raw", customers=args.customers, seed=args.seed, snapshot=date(2024, 6, 30))
    settings = load_settings(config_file=CONFIG, overrides={"paths.raw": str(work / "raw"), "paths.lake": str(work / "lake")})
    os.environ.setdefault(settings.refine.pii_key_env, "bench-only-key")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    spark = build_session(settings)
    ctx = StageContext(settings=settings, spark=spark, lake=open_lake(spark, settings))
    seconds: dict[str, float] = {}
    results = {}
    for name in ("ingest", "refine", "features", "churn"):
        started = time.perf_counter()
        results[name] = run_stage(ctx, name)
        seconds[name] = time.perf_counter() - started
    rows = ctx.lake.read("gold.churn_training").select("customer_id", "split", "churned").toPandas()
    train, held = rows[rows["split"] == "train"], rows[rows["split"] == "eval"]
    outcome = results["churn"].outcome
    ours = {kind: {"roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"]} for kind, m in outcome.metrics.items()}
    baselines = peers(design(summary.path), train, held)
    best_peer = max(v["roc_auc"] for v in baselines.values())
    best_ours = max(v["roc_auc"] for v in ours.values())
    entry: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": machine(spark),
        "customers": args.customers,
        "train_rows": len(train),
        "holdout_rows": len(held),
        "stage_seconds": seconds,
        "ours": ours,
        "champion_version": outcome.champion_version,
        "peers": baselines,
        "bayes_roc_auc_holdout": bayes_roc_auc(summary.truth_path.parent, held),
        "best_ours_minus_best_peer": best_ours - best_peer,
    }
    print(f"{args.customers:,} customers ({len(train):,} train / {len(held):,} holdout), stage seconds "
          + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(f"{'model':34s} {'ROC-AUC':>8s}")
    for name, value in {**{f"crm-spark {k}": v for k, v in ours.items()}, **baselines}.items():
        print(f"{name:34s} {value['roc_auc']:8.4f}")
    print(f"{'true probabilities (Bayes)':34s} {entry['bayes_roc_auc_holdout']:8.4f}")
    print(f"best crm-spark - best scikit-learn: {entry['best_ours_minus_best_peer']:+.4f} (target >= -0.01)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(entry, indent=2, default=float) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
