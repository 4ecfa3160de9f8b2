"""The subscription example end to end: a generated Telco-shaped customer table with a churn flag
(planted effects, known Bayes-optimal ROC-AUC) through ingest -> refine -> features -> churn
with ``conf/examples/subscription_churn.yaml``: attributes as features, one labelled snapshot, a
stratified holdout, and a champion within 0.01 ROC-AUC of scikit-learn on the same rows.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from crm_spark.config import load_settings
from crm_spark.errors import SourceError
from crm_spark.generate.subscription import generate_subscriptions
from crm_spark.lake import open_lake
from crm_spark.stages import StageContext, StageResult, run_stage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "conf" / "examples" / "subscription_churn.yaml"
SNAPSHOT = date(2024, 6, 30)
CUSTOMERS = 4000


@pytest.fixture(scope="module")
def subscription(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("subscription")
    summary = generate_subscriptions(root / "raw", customers=CUSTOMERS, seed=11, snapshot=SNAPSHOT)
    settings = load_settings(config_file=CONFIG, overrides={"paths.raw": str(root / "raw"), "paths.lake": str(root / "lake")})
    ctx = StageContext(settings=settings, spark=spark, lake=open_lake(spark, settings))
    results: dict[str, StageResult] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.refine.pii_key_env, "subscription-test-key")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name in ("ingest", "refine", "features", "churn"):
            results[name] = run_stage(ctx, name)
            assert results[name].skipped is None, results[name].skipped
        results["segment"] = run_stage(ctx, "segment")  # everyone, on the example's attributes
    return {"ctx": ctx, "results": results, "summary": summary, "raw": summary.path}


def test_features_run_without_orders_as_of_the_snapshot(subscription: dict) -> None:
    features = subscription["results"]["features"]
    assert features.as_of == SNAPSHOT  # the latest silver.customer_attributes snapshot
    assert any("silver.orders not found" in n for n in features.notes)
    lake = subscription["ctx"].lake
    assert lake.read("gold.customer_features").where(F.col("as_of_date") == SNAPSHOT).count() == CUSTOMERS


def test_holdout_is_stratified_and_disjoint_from_training(subscription: dict) -> None:
    rows = subscription["ctx"].lake.read("gold.churn_training").toPandas()
    train, held = rows[rows["split"] == "train"], rows[rows["split"] == "eval"]
    assert set(train["customer_id"]).isdisjoint(held["customer_id"])
    assert len(train) + len(held) == CUSTOMERS
    for label in (0, 1):  # each class held out at about the configured share
        n = int((rows["churned"] == label).sum())
        assert abs(int((held["churned"] == label).sum()) / n - 0.2) < 0.03
    outcome = subscription["results"]["churn"].outcome
    assert outcome.dates.train == outcome.dates.evaluate == outcome.dates.score == SNAPSHOT


def test_behaviour_features_are_left_out_and_attributes_explain_scores(subscription: dict) -> None:
    churn = subscription["results"]["churn"]
    left_out = next(n for n in churn.notes if n.startswith("left out of the model"))
    for constant in ("frequency", "monetary", "avg_order_value", "has_orders", "rfm_segment"):
        assert f"{constant} has the same value for every customer" in left_out
    for copy in ("recency_days", "days_since_last_visit"):  # no orders, no visits: the tenure again
        assert f"{copy} equals tenure_days for every customer" in left_out
    assert "attr_" not in left_out
    scores = subscription["ctx"].lake.read("gold.churn_scores").toPandas()
    assert len(scores) == CUSTOMERS
    named = pd.concat([scores[f"top_feature_{k}"] for k in (1, 2, 3)]).dropna()
    assert set(named[~named.str.startswith("attr_")]) <= {"tenure_days"}
    assert any(n.startswith("attr_contract=") for n in named)


def test_segments_cluster_on_the_configured_attributes(subscription: dict) -> None:
    result = subscription["results"]["segment"]
    assert result.skipped is None and 3 <= result.metrics["k"] <= 6
    left_out = " ".join(result.notes)
    # no orders: behaviour columns are constant; tenure and last visit repeat recency (= tenure here)
    for column in ("frequency", "monetary", "tenure_days", "days_since_last_visit"):
        assert f"segment.features: {column} " in left_out
    assert "attr_" not in left_out
    lake = subscription["ctx"].lake
    segments = lake.read("gold.customer_segments")
    assert segments.count() == CUSTOMERS and segments.where(F.col("segment_name").isNull()).count() == 0
    # the clusters differ in an attribute no behaviour column carries: monthly charges
    charges = lake.read("silver.customer_attributes").where(F.col("attribute") == "monthly_charges")
    grouped = segments.join(charges, "customer_id").groupBy("cluster_id").agg(F.avg("value_number").alias("mean"))
    means = [r["mean"] for r in grouped.collect()]
    assert max(means) - min(means) > 15


def test_champion_is_within_001_roc_auc_of_scikit_learn_on_the_same_split(subscription: dict) -> None:
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_churn_subscription import bayes_roc_auc, design, peers

    rows = subscription["ctx"].lake.read("gold.churn_training").select("customer_id", "split", "churned").toPandas()
    train, held = rows[rows["split"] == "train"], rows[rows["split"] == "eval"]
    peer = {k: v["roc_auc"] for k, v in peers(design(subscription["raw"]), train, held).items()}
    outcome = subscription["results"]["churn"].outcome
    champion = next(d for d in outcome.decisions if d["version"] == outcome.champion_version)
    bayes = bayes_roc_auc(subscription["summary"].truth_path.parent, held)
    print(json.dumps({"ours": {k: m["roc_auc"] for k, m in outcome.metrics.items()}, "peers": peer, "bayes": bayes}))
    assert champion["score"] >= max(peer.values()) - 0.01
    assert champion["score"] <= bayes + 0.02  # no leak: nothing scores far above what a perfect model could


def test_time_evaluation_of_one_snapshot_says_what_to_do(subscription: dict, spark: SparkSession) -> None:
    """The same lake in ``time`` mode, as of the snapshot: the labels of one snapshot cannot label
    training and evaluation dates before it, and the stage says so in one line instead of a
    traceback. (An as-of date months after the data ends fails the features' freshness gate first.)"""
    ctx: StageContext = subscription["ctx"]
    timed = ctx.settings.model_copy(update={"churn": ctx.settings.churn.model_copy(update={"evaluation": "time"})})
    other = StageContext(settings=timed, spark=spark, lake=ctx.lake, as_of=SNAPSHOT)
    with pytest.raises(SourceError) as err:
        run_stage(other, "churn")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the train set as of 2024-01-02 has 0 customers")
    assert message.endswith("labels of one snapshot cannot label two dates, set churn.evaluation: snapshot")
