"""What a gate's report vouches for (no Spark: reports are plain values)."""

from __future__ import annotations

from crm_spark.quality import ExpectationOutcome, QualityReport

UNIQUE = "expect_column_values_to_be_unique"
COMPOUND = "expect_compound_columns_to_be_unique"


def _report(*outcomes: ExpectationOutcome) -> QualityReport:
    return QualityReport(table="silver.orders", success=all(o.success for o in outcomes), outcomes=outcomes)


def test_a_passed_uniqueness_check_of_exactly_the_keys_verifies_them() -> None:
    report = _report(ExpectationOutcome(UNIQUE, "order_id", True), ExpectationOutcome("expect_rows_to_satisfy_rules", None, True))

    assert report.verified_unique(("order_id",))
    assert not report.verified_unique(("customer_id",))
    assert not report.verified_unique(("order_id", "line_no"))


def test_a_compound_key_is_verified_by_its_compound_check_only() -> None:
    report = _report(ExpectationOutcome(COMPOUND, "order_id,line_no", True))

    assert report.verified_unique(("order_id", "line_no"))
    assert not report.verified_unique(("line_no", "order_id"))  # another column order is another check


def test_a_failed_report_verifies_nothing() -> None:
    report = _report(ExpectationOutcome(UNIQUE, "order_id", True), ExpectationOutcome("expect_rows_to_satisfy_rules", None, False))

    assert not report.verified_unique(("order_id",))
