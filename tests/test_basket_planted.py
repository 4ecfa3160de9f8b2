"""Basket mining recovers the generator's planted associations (``_truth/associations.json``).

The generator plants pairs (antecedent -> consequent) and triples (antecedent -> two
consequents) between a popular antecedent and unpopular consequents, so every pair inside a
planted group should stand out by lift. Silver-shaped orders and order lines are built from the
generated raw CSVs with plain casts (dirty_rate 0, so nothing needs refining): this test is
about the model, and ingest + refine + their gates would not fit its time budget.
"""

from __future__ import annotations

import itertools
import json
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.generate import generate_dataset
from crm_spark.ml.basket import association_rules, baskets_from_items, cross_sell, fit_fpgrowth, purchase_lines

pytestmark = pytest.mark.slow

# One quarter keeps the generator quick (few daily files) with about 1,200 baskets.
START, END = date(2024, 10, 1), date(2024, 12, 31)


@pytest.fixture(scope="module")
def generated(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("basket_planted") / "raw"
    generate_dataset(spark, out=str(out), customers=1000, seed=11, start=START, end=END, dirty_rate=0.0)
    return out


@pytest.fixture(scope="module")
def lines(spark: SparkSession, generated: Path) -> DataFrame:
    orders = spark.read.csv(str(generated / "orders"), header=True).select(
        "order_id", "customer_id", F.to_date(F.to_timestamp("order_ts")).alias("order_date"), "status"
    )
    items = spark.read.csv(str(generated / "order_items"), header=True).select(
        "order_id", "product_id", F.col("quantity").cast("int").alias("quantity")
    )
    return purchase_lines(orders, items, as_of=END).cache()


@pytest.fixture(scope="module")
def pair_rules(lines: DataFrame) -> DataFrame:
    """Single-item-antecedent rules, strongest lift first (ties by items, for a stable order)."""
    model = fit_fpgrowth(baskets_from_items(lines), min_support=0.004, min_confidence=0.0)
    return association_rules(model, min_lift=0.0, max_size=2).cache()


def _planted_pairs(generated: Path) -> set[frozenset[str]]:
    """Every unordered pair inside a planted group: the pair itself, or a triple's three pairs."""
    truth = (generated / "_truth" / "associations.json").read_text().splitlines()
    groups = [json.loads(line)["items"] for line in truth if line.strip()]
    return {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}


def _ranked_pairs(rules: DataFrame, top: int) -> list[frozenset[str]]:
    rows = rules.orderBy(F.desc("lift"), F.asc("antecedent"), F.asc("consequent")).limit(top).collect()
    return [frozenset([*r.antecedent, r.consequent]) for r in rows]


def test_every_planted_pair_is_among_the_top_rules_by_lift(generated: Path, pair_rules: DataFrame) -> None:
    planted = _planted_pairs(generated)
    # Each pair gives two rules (a -> b and b -> a); allow as many again for noise in between.
    top = set(_ranked_pairs(pair_rules, 4 * len(planted)))
    assert planted - top == set()


def test_the_strongest_rules_are_planted_pairs(generated: Path, pair_rules: DataFrame) -> None:
    planted = _planted_pairs(generated)
    assert all(pair in planted for pair in _ranked_pairs(pair_rules, 10))


def test_cross_sell_on_generated_data_never_suggests_a_bought_product(lines: DataFrame, pair_rules: DataFrame) -> None:
    suggestions = cross_sell(lines, pair_rules.where("lift >= 1.0"), as_of=END, window_days=90, top_n=5).cache()
    bought = lines.select("customer_id", "item_id").distinct()
    assert suggestions.count() > 0
    assert suggestions.join(bought, ["customer_id", "item_id"]).count() == 0
