"""The shared end-to-end run (tests/conftest.py ``e2e``: 2,000 generated customers with 1 % dirt,
every built stage as of 2025-06-30, then ingest + refine again) checked against the generator's
answer key ``_truth/dirt.csv``: every injected defect is quarantined with a reason or repaired,
counts reconcile per batch, a re-run changes nothing, and no contact detail reaches silver.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from conftest import E2E_END, E2E_START, EndToEnd
from crm_spark.contracts import table
from crm_spark.stages import stage

pytestmark = pytest.mark.slow

# What refine must do with each kind of injected defect.
QUARANTINED = {"out_of_range", "negative_quantity", "zero_price", "missing_customer_id", "unknown_foreign_key"}
REPAIRED = {"decimal_comma", "timestamp_format", "late_arriving"}
EMPTY = {"na_value", "empty_numeric"}  # quarantined when the column is required, else null/default in silver
MALFORMED = {"malformed_field_count", "malformed_unclosed_quote", "malformed_json"}
VERSIONS = {"duplicate_row", "newer_version"}
MONTH_IN_NAME = re.compile(r"-(\d{4})-(\d{2})(?:-\d{2})?(?:-part\d+)?\.\w+$")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
PHONE = re.compile(r"\+\d[\d ]{7,}\d")


def _key(source: str) -> Any:
    return F.concat_ws("|", *[F.col(k).cast("string") for k in table(f"silver.{source}").keys])


def _file(column: str = "_source_file") -> Any:
    return F.element_at(F.split(column, "/"), -1)


@pytest.fixture(scope="module")
def dirt(e2e: EndToEnd) -> list[dict[str, str]]:
    with (e2e.truth / "dirt.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def landed(e2e: EndToEnd, dirt: list[dict[str, str]]) -> dict[str, Any]:
    """Per source: silver rows by key, and quarantine reasons by (key, file) and by file."""
    out: dict[str, Any] = {}
    for source in sorted({d["source"] for d in dirt}):
        silver = {r["_k"]: r.asDict() for r in e2e.lake.read(f"silver.{source}").withColumn("_k", _key(source)).collect()}
        by_key: dict[tuple[str, str], list[set[str]]] = defaultdict(list)
        by_file: Counter[str] = Counter()
        rows = e2e.lake.read(f"quarantine.{source}").select(_key(source).alias("k"), _file().alias("f"), "_dq_reasons")
        for r in rows.collect():
            by_key[(r["k"], r["f"])].append(set(r["_dq_reasons"]))
            if "malformed_line" in r["_dq_reasons"]:
                by_file[r["f"]] += 1
        out[source] = {"silver": silver, "quarantine": by_key, "malformed": by_file}
    return out


def test_the_answer_key_covers_every_kind(dirt: list[dict[str, str]]) -> None:
    kinds = {d["kind"] for d in dirt}
    assert kinds <= QUARANTINED | REPAIRED | EMPTY | MALFORMED | VERSIONS, kinds
    assert {"unknown_foreign_key", "decimal_comma", "timestamp_format", "malformed_json", "newer_version"} <= kinds


def test_rows_breaking_a_rule_are_quarantined_with_a_reason_naming_it(dirt, landed) -> None:
    missed = []
    for d in (d for d in dirt if d["kind"] in QUARANTINED):
        where = landed[d["source"]]
        reasons = set().union(*where["quarantine"].get((d["key"], d["file"]), [set()]))
        column = d["column"] or ""
        if not any(column in r for r in reasons) or d["key"] in where["silver"]:
            missed.append((d["source"], d["kind"], d["key"], sorted(reasons)))
    assert not missed, missed[:10]


def test_repairable_values_reach_silver_repaired(dirt, landed) -> None:
    wrong = []
    for d in (d for d in dirt if d["kind"] in REPAIRED):
        row = landed[d["source"]]["silver"].get(d["key"])
        if row is None:
            wrong.append((d["source"], d["kind"], d["key"], "not in silver"))
        elif d["kind"] == "decimal_comma":
            if float(row[d["column"]]) != float(d["detail"].replace(",", ".")):
                wrong.append((d["source"], d["kind"], d["key"], row[d["column"]], d["detail"]))
        elif d["kind"] == "timestamp_format":
            # the same instant in another shape: it must land in the month its file covers (a
            # snapshot file holds what happened before the data's start)
            value: datetime = row[d["column"]]
            month = MONTH_IN_NAME.search(d["file"])
            if "snapshot" in d["file"]:
                bad = value is None or value.date() > E2E_START
            else:
                bad = value is None or (month is not None and (value.year, value.month) != (int(month[1]), int(month[2])))
            if bad:
                wrong.append((d["source"], d["kind"], d["key"], value, d["detail"], d["file"]))
    assert not wrong, wrong[:10]


def test_empty_or_na_values_are_quarantined_when_required_else_left_empty(e2e: EndToEnd, dirt, landed) -> None:
    # refine.missing from config, and the documented policy of order_items: no discount = 0
    defaults = {"order_items.discount": "0", **e2e.settings.refine.missing}
    wrong = []
    for d in (d for d in dirt if d["kind"] in EMPTY):
        where = landed[d["source"]]
        reasons = set().union(*where["quarantine"].get((d["key"], d["file"]), [set()]))
        row = where["silver"].get(d["key"])
        if row is not None:
            default = defaults.get(f"{d['source']}.{d['column']}")
            ok = row[d["column"]] is None or (default is not None and float(row[d["column"]]) == float(default))
        else:
            ok = any(d["column"] in r for r in reasons)
        if not ok:
            wrong.append((d["source"], d["kind"], d["key"], d["column"], sorted(reasons), row and row[d["column"]]))
    assert not wrong, wrong[:10]


def test_malformed_lines_are_kept_in_quarantine_and_the_intact_copy_in_silver(dirt, landed) -> None:
    expected: Counter[tuple[str, str]] = Counter((d["source"], d["file"]) for d in dirt if d["kind"] in MALFORMED)
    for (source, file), n in expected.items():
        assert landed[source]["malformed"][file] >= n, (source, file)
    missing = [d["key"] for d in dirt if d["kind"] in MALFORMED and d["key"] not in landed[d["source"]]["silver"]]
    assert not missing, missing[:10]


def test_copies_and_old_versions_collapse_to_one_silver_row(e2e: EndToEnd, dirt, landed) -> None:
    for d in (d for d in dirt if d["kind"] in VERSIONS):
        assert d["key"] in landed[d["source"]]["silver"], d
    duplicates = [d for d in dirt if d["kind"] == "duplicate_row"]
    flagged = [d for d in duplicates if {"duplicate_row"} in landed[d["source"]]["quarantine"].get((d["key"], d["file"]), [])]
    assert len(flagged) == len(duplicates)
    for source in {d["source"] for d in dirt}:
        silver = e2e.lake.read(f"silver.{source}")
        assert silver.count() == silver.select(*table(f"silver.{source}").keys).distinct().count(), source
    # orders: the re-exported newer version (detail "old->new" status) is the one kept
    orders = landed["orders"]["silver"]
    newer = [(d["key"], d["detail"].split("->")[-1]) for d in dirt if d["source"] == "orders" and d["kind"] == "newer_version"]
    stale = [(key, orders[key]["status"], status) for key, status in newer if orders[key]["status"] != status]
    assert newer and not stale, stale[:5]


def test_every_batch_reconciles(e2e: EndToEnd) -> None:
    batches = e2e.results["refine"].outcome.batches
    assert batches
    for pair, per_batch in batches.items():
        for batch, c in per_batch.items():
            assert c.mapped == c.accepted + c.quarantined, (pair, batch, c)
    bronze = {w.table: w.rows for w in e2e.results["ingest"].writes}
    for source in ("customers", "orders", "order_items", "web_events", "feedback"):
        silver_in = sum(c.accepted for c in batches[f"{source}->{source}"].values())
        quarantined = sum(c.quarantined for c in batches[f"{source}->{source}"].values())
        assert silver_in + quarantined == bronze[f"bronze.{source}"], source


@pytest.mark.reliability
def test_a_second_run_changes_no_row(e2e: EndToEnd) -> None:
    """Every stage run twice: ingest and refine find nothing new, each later stage finds that it
    would read, with the same settings and date, exactly what its last run read, and is not run:
    no table has a new version, no model stage logged a second MLflow run."""
    assert all(not r.writes or all(w.noop for w in r.writes) for r in e2e.rerun.values()), e2e.rerun
    for table, version in e2e.versions_after_first_run.items():
        assert e2e.lake.version(table) == version, table
    for name, again in e2e.rerun.items():
        if name in ("ingest", "refine"):
            continue
        first = e2e.results[name]
        written = {w.table for w in first.writes if stage(name).writes(w.table)}
        assert again.unchanged == {t: e2e.versions_after_first_run[t] for t in written}, name
        assert again.mlflow_run_id == first.mlflow_run_id, name
        assert any(n.startswith("unchanged:") for n in again.notes)


def test_no_email_or_phone_number_reaches_silver(e2e: EndToEnd) -> None:
    for source in ("customers", "feedback", "social_interactions", "orders"):
        df = e2e.lake.read(f"silver.{source}")
        strings = [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]
        text = F.concat_ws(" ", *strings)
        hits = df.where(text.rlike(EMAIL.pattern) | text.rlike(PHONE.pattern)).count()
        assert hits == 0, source


def test_data_docs_and_gold_tables_exist(e2e: EndToEnd) -> None:
    assert list(Path(e2e.settings.paths.lake).glob("_quality/**/data_docs/local_site/index.html"))
    for table in ("gold.customer_features", "gold.customer_segments", "gold.segment_profiles", "gold.basket_rules",
                  "gold.cross_sell", "gold.churn_scores"):
        assert e2e.lake.read(table).count() > 0, table
    features = e2e.lake.read("gold.customer_features").select(F.max("as_of_date")).first()[0]
    assert features == E2E_END and E2E_START < features
