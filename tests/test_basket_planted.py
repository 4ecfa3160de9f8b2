"""Basket mining recovers the generator's planted associations (``_truth/associations.json``).

The generator plants pairs (antecedent -> consequent) and triples (antecedent -> two
consequents) between a popular antecedent and unpopular consequents, so every pair inside a
planted group should stand out by lift. Orders and order lines are read from the shared
end-to-end run's silver tables (tests/conftest.py: 2,000 customers, 18 months, 1 % dirt
quarantined by refine), so this module generates nothing of its own.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from conftest import E2E_END, EndToEnd
from crm_spark.ml.basket import association_rules, baskets_from_items, cross_sell, fit_fpgrowth, purchase_lines

pytestmark = pytest.mark.slow

END = E2E_END


@pytest.fixture(scope="module")
def lines(e2e: EndToEnd) -> DataFrame:
    return purchase_lines(e2e.lake.read("silver.orders"), e2e.lake.read("silver.order_items"), as_of=END).cache()


@pytest.fixture(scope="module")
def pair_rules(lines: DataFrame) -> DataFrame:
    """Single-item-antecedent rules, strongest lift first (ties by items, for a stable order)."""
    model = fit_fpgrowth(baskets_from_items(lines), min_support=0.004, min_confidence=0.0)
    return association_rules(model, min_lift=0.0, max_size=2).cache()


def _planted_pairs(raw: Path) -> set[frozenset[str]]:
    """Every unordered pair inside a planted group: the pair itself, or a triple's three pairs."""
    truth = (raw / "_truth" / "associations.json").read_text().splitlines()
    groups = [json.loads(line)["items"] for line in truth if line.strip()]
    return {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}


def _ranked_pairs(rules: DataFrame, top: int) -> list[frozenset[str]]:
    rows = rules.orderBy(F.desc("lift"), F.asc("antecedent"), F.asc("consequent")).limit(top).collect()
    return [frozenset([*r.antecedent, r.consequent]) for r in rows]


def test_every_planted_pair_is_among_the_top_rules_by_lift(e2e: EndToEnd, pair_rules: DataFrame) -> None:
    planted = _planted_pairs(e2e.raw)
    # Each pair gives two rules (a -> b and b -> a); allow as many again for noise in between.
    top = set(_ranked_pairs(pair_rules, 4 * len(planted)))
    assert planted - top == set()


def test_the_strongest_rules_are_planted_pairs(e2e: EndToEnd, pair_rules: DataFrame) -> None:
    planted = _planted_pairs(e2e.raw)
    assert all(pair in planted for pair in _ranked_pairs(pair_rules, 10))


def test_cross_sell_on_generated_data_never_suggests_a_bought_product(lines: DataFrame, pair_rules: DataFrame) -> None:
    suggestions = cross_sell(lines, pair_rules.where("lift >= 1.0"), as_of=END, window_days=90, top_n=5).cache()
    bought = lines.select("customer_id", "item_id").distinct()
    assert suggestions.count() > 0
    assert suggestions.join(bought, ["customer_id", "item_id"]).count() == 0
