"""Market basket builders (crm_spark.ml.basket) on hand-made baskets with hand-computed values.

The ten baskets below give these counts (worked out by hand, min_support 0.2 -> min count 2):
A 7, B 7, C 4, D 2, AB 6, AC 3, BC 2, ABC 2, CD 1 (not frequent), AD 0, BD 0.
So support = count / 10; confidence(X -> y) = count(X + y) / count(X); lift = confidence / support(y).
"""

from __future__ import annotations

import logging
import math
from datetime import date

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.ml.fpm import FPGrowthModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_spark.config import BasketSettings
from crm_spark.errors import ConfigError
from crm_spark.ml.basket import (
    ItemsetBound,
    association_rules,
    baskets_from_items,
    clique_counts,
    cross_sell,
    fit_fpgrowth,
    frequent_itemsets,
    itemset_count_bound,
    name_item,
    name_items,
    purchase_lines,
)
from crm_spark.stages.basket import guard_itemset_explosion

BASKETS_DDL = "basket_id string, items array<string>"
HAND_BASKETS = [
    ("b1", ["A", "B"]), ("b2", ["A", "B"]), ("b3", ["A", "B"]), ("b4", ["A", "B"]),
    ("b5", ["A", "B", "C"]), ("b6", ["A", "B", "C"]),
    ("b7", ["A", "C"]), ("b8", ["C", "D"]), ("b9", ["D"]), ("b10", ["B"]),
]
ITEMSETS_DDL = "items array<string>, itemset_size int, freq bigint, support double"
RULES_DDL = (
    "antecedent array<string>, consequent string, antecedent_size int, support double, confidence double, lift double"
)
LINES_DDL = "basket_id string, customer_id string, order_date date, item_id string"
AS_OF = date(2024, 6, 30)


@pytest.fixture(scope="module")
def hand_baskets(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(HAND_BASKETS, BASKETS_DDL)


@pytest.fixture(scope="module")
def hand_model(hand_baskets: DataFrame) -> FPGrowthModel:
    return fit_fpgrowth(hand_baskets, min_support=0.2, min_confidence=0.5)


def _sorted(df: DataFrame, *cols: str) -> DataFrame:
    return df.orderBy(*cols)


# -- baskets ----------------------------------------------------------------------------------
def test_baskets_from_items_keeps_each_item_once_sorted(spark: SparkSession) -> None:
    lines = spark.createDataFrame(
        [("o1", "P2"), ("o1", "P1"), ("o1", "P2"), ("o2", "P3"), ("o2", None)], "basket_id string, item_id string"
    )
    expected = spark.createDataFrame([("o1", ["P1", "P2"]), ("o2", ["P3"])], BASKETS_DDL)
    assert_df_equality(baskets_from_items(lines), expected, ignore_row_order=True, ignore_nullable=True)


def test_baskets_from_items_accepts_other_column_names(spark: SparkSession) -> None:
    lines = spark.createDataFrame([("t1", "x"), ("t1", "y")], "invoice string, stock_code string")
    expected = spark.createDataFrame([("t1", ["x", "y"])], BASKETS_DDL)
    got = baskets_from_items(lines, basket_col="invoice", item_col="stock_code")
    assert_df_equality(got, expected, ignore_nullable=True)


@pytest.fixture(scope="module")
def silver(spark: SparkSession) -> tuple[DataFrame, DataFrame, DataFrame]:
    orders = spark.createDataFrame(
        [
            ("o1", "c1", date(2024, 6, 1), "completed"),
            ("o2", "c1", date(2024, 6, 30), "completed"),  # on the as-of date: kept
            ("o3", "c2", date(2024, 7, 1), "completed"),  # after as-of: dropped
            ("o4", "c2", date(2024, 5, 1), "cancelled"),  # not completed: dropped
            ("o5", "c3", date(2024, 5, 1), "returned"),  # not completed: dropped
            ("o6", "c3", date(2024, 5, 2), "completed"),  # its lines add up to 0: not a purchase
        ],
        "order_id string, customer_id string, order_date date, status string",
    )
    items = spark.createDataFrame(
        [
            ("o1", 1, "P1", 1, "1.00"), ("o1", 2, "P2", 2, "4.00"), ("o1", 3, "P1", 1, "1.00"),  # P1 twice: one line
            ("o2", 1, "P3", 1, "3.00"), ("o2", 2, "P2", -1, "-2.00"),  # a negative quantity is a return line
            ("o3", 1, "P1", 1, "1.00"), ("o4", 1, "P1", 1, "1.00"), ("o5", 1, "P1", 1, "1.00"),
            ("o6", 1, "P1", 1, "0.00"), ("o6", 2, "P3", 2, "0.00"),
        ],
        "order_id string, line_no int, product_id string, quantity int, line_amount string",
    ).withColumn("line_amount", F.col("line_amount").cast("decimal(14,2)"))
    products = spark.createDataFrame(
        [("P1", "Milk", "dairy"), ("P2", "Cheese", "dairy"), ("P3", "Bread", "bakery")],
        "product_id string, product_name string, category string",
    )
    return orders, items, products


def test_purchase_lines_are_completed_orders_up_to_as_of(spark: SparkSession, silver) -> None:
    orders, items, _ = silver
    expected = spark.createDataFrame(
        [("o1", "c1", date(2024, 6, 1), "P1"), ("o1", "c1", date(2024, 6, 1), "P2"), ("o2", "c1", AS_OF, "P3")],
        LINES_DDL,
    )
    got = purchase_lines(orders, items, as_of=AS_OF)
    assert_df_equality(_sorted(got, "basket_id", "item_id"), expected, ignore_nullable=True)


def test_purchase_lines_at_category_level_use_the_category(spark: SparkSession, silver) -> None:
    orders, items, products = silver
    expected = spark.createDataFrame(
        [("o1", "c1", date(2024, 6, 1), "dairy"), ("o2", "c1", AS_OF, "bakery")], LINES_DDL
    )
    got = purchase_lines(orders, items, as_of=AS_OF, item_level="category", products=products)
    assert_df_equality(_sorted(got, "basket_id", "item_id"), expected, ignore_nullable=True)


def test_purchase_lines_count_a_zero_value_order_only_when_told(spark: SparkSession, silver) -> None:
    orders, items, _ = silver
    counted = purchase_lines(orders, items, as_of=AS_OF, count_zero_value_orders=True)
    expected = spark.createDataFrame([("o6", "c3", date(2024, 5, 2), "P1"), ("o6", "c3", date(2024, 5, 2), "P3")], LINES_DDL)

    assert_df_equality(_sorted(counted.where("basket_id = 'o6'"), "basket_id", "item_id"), expected, ignore_nullable=True)
    assert purchase_lines(orders, items, as_of=AS_OF).where("basket_id = 'o6'").isEmpty()


# -- itemsets and rules -------------------------------------------------------------------------
def test_itemsets_equal_hand_computed_support(spark: SparkSession, hand_model: FPGrowthModel) -> None:
    expected = spark.createDataFrame(
        [
            (["A"], 1, 7, 0.7), (["B"], 1, 7, 0.7), (["C"], 1, 4, 0.4), (["D"], 1, 2, 0.2),
            (["A", "B"], 2, 6, 0.6), (["A", "C"], 2, 3, 0.3), (["B", "C"], 2, 2, 0.2),
            (["A", "B", "C"], 3, 2, 0.2),
        ],
        ITEMSETS_DDL,
    )
    got = frequent_itemsets(hand_model, baskets=10, max_size=3)
    assert_approx_df_equality(
        _sorted(got, "itemset_size", "items"), expected, 1e-12, ignore_nullable=True
    )


def test_rules_equal_hand_computed_confidence_and_lift(spark: SparkSession, hand_model: FPGrowthModel) -> None:
    # min_confidence 0.5 drops A->C (3/7), B->C (2/7), C->B (2/4 passes but lift 0.5/0.7 < 1),
    # AB->C (2/6) and AC->B (2/3 passes, lift (2/3)/0.7 = 20/21 < 1).
    expected = spark.createDataFrame(
        [
            (["A"], "B", 1, 0.6, 6 / 7, (6 / 7) / 0.7),
            (["B"], "A", 1, 0.6, 6 / 7, (6 / 7) / 0.7),
            (["B", "C"], "A", 2, 0.2, 2 / 2, 1.0 / 0.7),
            (["C"], "A", 1, 0.3, 3 / 4, 0.75 / 0.7),
        ],
        RULES_DDL,
    )
    got = association_rules(hand_model, min_lift=1.0, max_size=3)
    assert_approx_df_equality(_sorted(got, "antecedent", "consequent"), expected, 1e-12, ignore_nullable=True)


def test_max_itemset_size_drops_larger_itemsets_and_rules(hand_model: FPGrowthModel) -> None:
    itemsets = frequent_itemsets(hand_model, baskets=10, max_size=2)
    rules = association_rules(hand_model, min_lift=0.0, max_size=2)
    assert [r.items for r in itemsets.where("itemset_size = 2").orderBy("items").collect()] == [
        ["A", "B"], ["A", "C"], ["B", "C"]
    ]
    assert itemsets.where("itemset_size > 2").count() == 0
    # Pair rules with confidence >= 0.5: A->B, B->A, C->A (3/4), C->B (2/4).
    assert sorted((tuple(r.antecedent), r.consequent) for r in rules.collect()) == [
        (("A",), "B"), (("B",), "A"), (("C",), "A"), (("C",), "B")
    ]


def test_names_follow_item_order_and_stay_null_when_unknown(spark: SparkSession) -> None:
    names = spark.createDataFrame([("A", "Apples"), ("C", "Cheese")], "item_id string, item_name string")
    rules = spark.createDataFrame([(["A", "B"], "C"), (["C"], "A")], "antecedent array<string>, consequent string")
    expected = spark.createDataFrame(
        [(["A", "B"], "C", ["Apples", None], "Cheese"), (["C"], "A", ["Cheese"], "Apples")],
        "antecedent array<string>, consequent string, antecedent_names array<string>, consequent_name string",
    )
    got = name_item(
        name_items(rules, names, items_col="antecedent", names_col="antecedent_names"),
        names, item_col="consequent", name_col="consequent_name",
    )
    assert_df_equality(_sorted(got, "antecedent"), expected, ignore_nullable=True)


# -- explosion guard ----------------------------------------------------------------------------
def test_bound_equals_the_itemsets_fpgrowth_finds_on_hand_baskets(hand_baskets: DataFrame) -> None:
    # Frequent items per basket: 2 (b1-b4, b7, b8), 3 (b5, b6), 1 (b9, b10); min count 2.
    # Size 2: min(C(4,2)=6, (6*1 + 2*3) // 2 = 6) = 6; size 3: min(C(4,3)=4, 2*1 // 2 = 1) = 1.
    # 4 + 6 + 1 = 11 > limit 5, so pairs are counted: AB, AC, BC frequent (CD is not) -> 3;
    # C(x,2) = 3 gives x = 3 and at most C(3,3) = 1 triple: 4 + 3 + 1 = 8, the true count.
    bound = itemset_count_bound(hand_baskets, min_support=0.2, limit=5)
    assert (bound.baskets, bound.min_count, bound.frequent_items, bound.frequent_pairs) == (10, 2, 4, 3)
    assert bound.upper_bound == 8


def test_bound_skips_pair_counting_under_the_limit(hand_baskets: DataFrame) -> None:
    bound = itemset_count_bound(hand_baskets, min_support=0.2, limit=100)
    assert bound.frequent_pairs is None
    assert bound.upper_bound == 11


def test_pair_counts_tighten_the_bound_when_no_pair_is_frequent(spark: SparkSession) -> None:
    # The Fano plane: 7 baskets of 3 items, every item in 3 baskets, every pair in exactly 1.
    # Min count ceil(0.25 * 7) = 2. Item-level bound: 7 + min(21, 21 // 2) + min(35, 7 // 2) = 20;
    # no pair reaches 2 baskets, so nothing above size 1 is frequent: the bound drops to 7.
    fano = [[1, 2, 4], [2, 3, 5], [3, 4, 6], [4, 5, 7], [5, 6, 1], [6, 7, 2], [7, 1, 3]]
    baskets = spark.createDataFrame([(f"t{i}", [str(x) for x in b]) for i, b in enumerate(fano)], BASKETS_DDL)
    bound = itemset_count_bound(baskets, min_support=0.25, limit=10)
    assert bound.frequent_pairs == 0
    assert bound.upper_bound == 7
    assert not bound.exceeds(10)


def test_bound_refuses_long_identical_baskets_before_mining(spark: SparkSession) -> None:
    # Four copies of one 20-item basket: every one of its 2^20 - 1 subsets is frequent.
    items = [f"P{i:02d}" for i in range(20)]
    baskets = spark.createDataFrame([(f"b{i}", items) for i in range(4)], BASKETS_DDL)
    bound = itemset_count_bound(baskets, min_support=0.5, limit=200_000)
    assert bound.upper_bound == 2**20 - 1
    assert bound.exceeds(200_000)



# The basket sizes of the public "Groceries" list (9,835 baskets, as arules summarises it).
GROCERY_SIZES = {1: 2159, 2: 1643, 3: 1299, 4: 1005, 5: 855, 6: 645, 7: 545, 8: 438, 9: 350, 10: 246, 11: 182,
                 12: 117, 13: 78, 14: 77, 15: 55, 16: 46, 17: 29, 18: 14, 19: 14, 20: 9, 21: 11, 22: 4, 23: 6,
                 24: 1, 26: 1, 27: 1, 28: 1, 29: 3, 32: 1}


@pytest.mark.slow
def test_grocery_shaped_baskets_mine_at_an_ordinary_support_by_default(spark: SparkSession) -> None:
    # Baskets of the Groceries list's sizes over 169 items of Zipf popularity: at support 0.006
    # there are a few hundred frequent itemsets (the real list: 747), but a few long baskets of
    # frequent items put the item-level bound in the millions. The cliques of the frequent-pair
    # graph bring it under the default limit, and it still never undercounts (mlxtend mines them).
    import numpy as np
    import pandas as pd
    from mlxtend.frequent_patterns import fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    rng = np.random.default_rng(3)
    weights = 1 / np.arange(1, 170) ** 0.9
    weights /= weights.sum()
    rows = [sorted({f"I{i:03d}" for i in rng.choice(169, size=size, replace=False, p=weights)})
            for size, count in GROCERY_SIZES.items() for _ in range(count)]
    encoder = TransactionEncoder()
    truth = len(fpgrowth(pd.DataFrame(encoder.fit(rows).transform(rows), columns=encoder.columns_), min_support=0.006))
    baskets = spark.createDataFrame([(f"b{i}", items) for i, items in enumerate(rows)], BASKETS_DDL)
    limit = BasketSettings().max_itemsets
    bound = itemset_count_bound(baskets, min_support=0.006, limit=limit)
    assert bound.frequent_pairs is not None  # the item-level bound alone was over the limit
    assert truth <= bound.upper_bound <= limit, (truth, bound)


def test_clique_counts_find_each_clique_once() -> None:
    k4_and_a_tail = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d"), ("d", "e")]
    assert clique_counts(k4_and_a_tail, max_size=10, budget=100) == {3: 4, 4: 1}
    assert clique_counts(k4_and_a_tail, max_size=3, budget=100) == {3: 4}
    assert clique_counts(k4_and_a_tail, max_size=10, budget=4) is None  # five cliques: past the budget
    assert clique_counts([("a", "b")], max_size=10, budget=100) == {}

# -- cross-sell ---------------------------------------------------------------------------------
CROSS_SELL_OUT_DDL = (
    "customer_id string, rank int, item_id string, score double, confidence double, lift double, "
    "antecedent array<string>"
)


@pytest.fixture(scope="module")
def hand_rules(spark: SparkSession) -> DataFrame:
    # score = confidence * lift: A->B 0.9*1.5 = 1.35, C->A 0.75*1.2 = 0.9, BC->A 1.0*1.6 = 1.6,
    # C->D 0.5*2.0 = 1.0, C->E 0.4*2.5 = 1.0 (ties C->D: broken by item id).
    return spark.createDataFrame(
        [
            (["A"], "B", 1, 0.3, 0.9, 1.5),
            (["C"], "A", 1, 0.2, 0.75, 1.2),
            (["B", "C"], "A", 2, 0.1, 1.0, 1.6),
            (["C"], "D", 1, 0.1, 0.5, 2.0),
            (["C"], "E", 1, 0.1, 0.4, 2.5),
        ],
        RULES_DDL,
    )


def _lines(spark: SparkSession, rows: list[tuple[str, date, str]]) -> DataFrame:
    return spark.createDataFrame([(f"o{i}", c, d, item) for i, (c, d, item) in enumerate(rows)], LINES_DDL)


RECENT, LONG_AGO = date(2024, 6, 20), date(2023, 1, 5)


def test_cross_sell_ranks_consequents_by_confidence_times_lift(spark: SparkSession, hand_rules: DataFrame) -> None:
    # c1 bought B and C recently: BC->A (1.6) beats C->A (0.9) for A; then D and E tie at 1.0.
    lines = _lines(spark, [("c1", RECENT, "B"), ("c1", RECENT, "C")])
    expected = spark.createDataFrame(
        [
            ("c1", 1, "A", 1.6, 1.0, 1.6, ["B", "C"]),
            ("c1", 2, "D", 1.0, 0.5, 2.0, ["C"]),
            ("c1", 3, "E", 1.0, 0.4, 2.5, ["C"]),
        ],
        CROSS_SELL_OUT_DDL,
    )
    got = cross_sell(lines, hand_rules, as_of=AS_OF, window_days=90, top_n=5)
    assert_approx_df_equality(_sorted(got, "customer_id", "rank"), expected, 1e-12, ignore_nullable=True)


def test_cross_sell_keeps_top_n(spark: SparkSession, hand_rules: DataFrame) -> None:
    lines = _lines(spark, [("c1", RECENT, "B"), ("c1", RECENT, "C")])
    got = cross_sell(lines, hand_rules, as_of=AS_OF, window_days=90, top_n=2)
    assert [(r.rank, r.item_id) for r in got.orderBy("rank").collect()] == [(1, "A"), (2, "D")]


def test_cross_sell_never_suggests_an_item_bought_before(spark: SparkSession, hand_rules: DataFrame) -> None:
    # c2 bought A long ago (outside the window) and C recently: C->A fires but A is excluded.
    # c3 bought A recently and B long ago: A->B fires but B is excluded.
    lines = _lines(
        spark,
        [("c2", LONG_AGO, "A"), ("c2", RECENT, "C"), ("c2", RECENT, "D"),
         ("c3", RECENT, "A"), ("c3", LONG_AGO, "B")],
    )
    expected = spark.createDataFrame([("c2", 1, "E", 1.0, 0.4, 2.5, ["C"])], CROSS_SELL_OUT_DDL)
    got = cross_sell(lines, hand_rules, as_of=AS_OF, window_days=90, top_n=5)
    assert_approx_df_equality(got, expected, 1e-12, ignore_nullable=True)


def test_cross_sell_uses_only_purchases_inside_the_window(spark: SparkSession, hand_rules: DataFrame) -> None:
    # Window of 10 days ending 2024-06-30: 2024-06-21 .. 2024-06-30. c4's C on 06-20 is outside
    # (it fires nothing); c5's C on 06-21 is inside; c6's C after the as-of date is ignored.
    lines = _lines(
        spark,
        [("c4", date(2024, 6, 20), "C"), ("c5", date(2024, 6, 21), "C"), ("c6", date(2024, 7, 1), "C")],
    )
    got = cross_sell(lines, hand_rules, as_of=AS_OF, window_days=10, top_n=1)
    assert [(r.customer_id, r.item_id) for r in got.collect()] == [("c5", "D")]


def test_cross_sell_needs_every_antecedent_item(spark: SparkSession, hand_rules: DataFrame) -> None:
    # c7 bought B only: A->B needs A, BC->A needs C; nothing fires.
    lines = _lines(spark, [("c7", RECENT, "B")])
    assert cross_sell(lines, hand_rules, as_of=AS_OF, window_days=90, top_n=5).count() == 0


# -- the stage's guard decision (no Spark) -------------------------------------------------------
def _bound(upper: float) -> ItemsetBound:
    return ItemsetBound(baskets=1000, min_count=1, frequent_items=300, frequent_pairs=None, longest_basket=40,
                        upper_bound=upper)


def test_guard_refuses_with_the_settings_to_change() -> None:
    with pytest.raises(ConfigError, match=r"basket\.min_support=0\.001 could mine up to more than 1e12 .*"
                                          r"basket\.max_itemsets=1,000.*raise basket\.min_support"):
        guard_itemset_explosion(_bound(math.inf), BasketSettings(min_support=0.001, max_itemsets=1000))


def test_guard_in_warn_mode_returns_a_note_and_lets_mining_go_on(caplog: pytest.LogCaptureFixture) -> None:
    cfg = BasketSettings(min_support=0.001, max_itemsets=1000, on_explosion="warn")
    # The CLI may have stopped crm_spark logs propagating to the root logger: listen directly.
    stage_log = logging.getLogger("crm_spark.stages.basket")
    stage_log.addHandler(caplog.handler)
    try:
        notes = guard_itemset_explosion(_bound(5000.0), cfg)
    finally:
        stage_log.removeHandler(caplog.handler)
    assert notes == [
        "basket.min_support=0.001 could mine up to 5,000 frequent itemsets (limit basket.max_itemsets=1,000; "
        "300 frequent products in 1,000 baskets, up to 40 in one basket); mined anyway"
    ]
    assert {(r.levelname, "mining anyway" in r.getMessage()) for r in caplog.records} == {("WARNING", True)}


def test_guard_passes_a_bound_within_the_limit() -> None:
    assert guard_itemset_explosion(_bound(1000.0), BasketSettings(max_itemsets=1000)) == []
