"""Churn on generated data, through the whole pipeline: generate -> ingest -> refine -> features
-> churn. The model must find the churn the generator planted, beat recency alone, and stay
below what the planted truth allows (above it, features would be seeing the future).

The thresholds come from the planted signal; see test_model_finds_the_planted_churn_signal.
"""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from conftest import EndToEnd
from crm_spark.ml import churn as ml
from crm_spark.stages.churn import CHAMPION, MODEL_NAME, SCORES, TRAINING

pytestmark = pytest.mark.slow

# ROC-AUC on the evaluation date, for this seed and range (numbers in the test's docstring).
BAYES_CEILING = 0.876
AUC_FLOOR = 0.76
BASELINE_MARGIN = 0.03
RECENT_CHURNER_AUC = 0.83


@pytest.fixture(scope="module")
def pipeline(e2e: EndToEnd):
    """The shared end-to-end run (tests/conftest.py): 2,000 customers, seed 7, scored as of
    2025-06-30, churn settings E2E_CHURN (train/validation split, GBT challenger)."""
    return e2e.results, e2e.lake, e2e.raw, e2e.settings


def _churn_dates(raw: Path) -> dict[str, date]:
    with (raw / "_truth" / "churners.csv").open() as handle:
        return {row["customer_id"]: date.fromisoformat(row["churn_date"]) for row in csv.DictReader(handle)}


def test_model_finds_the_planted_churn_signal(pipeline) -> None:
    """ROC-AUC on the evaluation date T' = D - 90 days (D = 2025-06-30), trained at T = D - 180.

    The label is "no completed order in the next 90 days"; half the buyers at T' have one.
    The generator's answer key fixes how predictable that is. Each customer's orders are a
    thinned Poisson process: n candidate days, uniform over the active window, each kept with
    probability season x weekday x promotion x churn decay and completed with probability
    1 - 3 % cancelled - the (churn-raised) return rate. From the latent traits (archetype,
    activity, churn and decay dates, n) P(no completed order in (T', D]) = (1 - q)^n, q the
    summed keep x complete probability of the window's days over the window's span. That
    Bayes-optimal score reproduces the observed churn rate of every archetype (loyal 8 %,
    bargain 24 %, occasional 52 %, churners 95 %) and has ROC-AUC 0.876 on the T' rows: no
    model on any features can beat it (hiding churn dates whose decay starts after T' leaves
    it at 0.875: most churned churners have already gone at T'). What keeps it below 1 is the
    occasional buyers (38 % of the rows, 3.2 orders a year): their label is a coin flip.

    Recency alone reaches 0.728: it finds the churners already gone but cannot tell a loyal
    customer between orders from an occasional one. A model also using the order rates
    (orders_30d/90d/365d, frequency, tenure) and the decay signals measured 0.790 (GBT 0.758).
    The floor 0.76 asks for at least a fifth of the way from recency to the Bayes ceiling and
    BASELINE_MARGIN (0.03) for a clear win over recency; the ceiling bounds it from above, since
    a model beyond it must see orders after T'.
    """
    results, *_ = pipeline
    details = results["churn"].outcome
    lr = details.metrics["logistic_regression"]
    baseline = details.baseline_recency_roc_auc
    seen = (
        f"churn rate {details.churn_rate}, LR ROC-AUC {lr['roc_auc']:.3f}, GBT ROC-AUC "
        f"{details.metrics['gbt']['roc_auc']:.3f}, recency baseline {baseline:.3f}"
    )
    assert AUC_FLOOR <= lr["roc_auc"] <= BAYES_CEILING, seen
    assert lr["roc_auc"] >= baseline + BASELINE_MARGIN, seen


def test_recent_planted_churners_score_above_active_customers(pipeline, spark: SparkSession) -> None:
    """Planted churners who left in the 60 days before D (their 8-12 week decay ends there) must
    outrank the archetypes that keep buying (loyal spenders, bargain hunters) in D's scores:
    about 60 against 620 customers; measured 0.89 (0.86 for those gone in the last 30 days,
    whose decay is only partly behind them)."""
    results, lake, raw, _ = pipeline
    d = results["churn"].outcome.dates.score
    churn_dates = _churn_dates(raw)
    with (raw / "_truth" / "archetypes.csv").open() as handle:
        archetype = {row["customer_id"]: row["archetype"] for row in csv.DictReader(handle)}
    leaving = {c for c, when in churn_dates.items() if d - timedelta(days=60) < when <= d}
    staying = {c for c, a in archetype.items() if a in ("loyal_high_spender", "bargain_hunter")}
    truth = spark.createDataFrame(
        [(c, 1) for c in leaving] + [(c, 0) for c in staying], "customer_id string, churned int"
    )
    scored = lake.read(SCORES, partition={"as_of_date": d}).join(truth, "customer_id")
    assert scored.where("churned = 1").count() >= 30
    assert ml.roc_auc(scored) >= RECENT_CHURNER_AUC


def test_churn_run_is_registered_promoted_and_scored(pipeline, spark: SparkSession) -> None:
    results, lake, _, run_settings = pipeline
    details = results["churn"].outcome
    first = details.decisions[0]
    assert first["promoted"] and first["champion_version"] is None
    from crm_spark.tracking import Tracker

    alias = Tracker(run_settings).client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert int(alias.version) == details.champion_version
    d = details.dates.score
    buyers = lake.read("gold.customer_features", partition={"as_of_date": d}).where("has_orders").count()
    scores = lake.read(SCORES, partition={"as_of_date": d})
    assert scores.count() == buyers == scores.select("customer_id").distinct().count()
    training = lake.read(TRAINING, partition={"run_as_of_date": d})
    dates = {r["split"]: r["as_of_date"] for r in training.select("split", "as_of_date").distinct().collect()}
    assert dates == {"train": d - timedelta(days=180), "eval": d - timedelta(days=90)}
