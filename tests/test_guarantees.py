"""README "Guarantees", checked on the shared end-to-end run: no raw PII past bronze and no secret
anywhere the run writes.

The raw PII is what the generated customers file holds (bronze.customers): every e-mail address,
phone number and full name. They are looked for in every silver, gold and quarantine table, in
the HTML report, the MLflow store (database and artifacts), the Great Expectations results and
Data Docs; the PII key (an environment variable) is looked for in every file under the lake.
"""

from __future__ import annotations

import re
from functools import reduce
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from conftest import EndToEnd
from crm_spark.transforms.refine import EMAIL_RE

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

PII_KEY = "end-to-end-test-key"  # what the shared run set CRM_SPARK_PII_KEY to (conftest)
WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")


def _raw_pii(e2e: EndToEnd) -> dict[str, set[str]]:
    rows = e2e.lake.read("bronze.customers").select("email", "phone", "first_name", "last_name").collect()
    emails = {r["email"].strip().lower() for r in rows if r["email"] and "@" in r["email"]}
    phones = {re.sub(r"\D", "", r["phone"]) for r in rows if r["phone"]}
    names = {f"{r['first_name'].strip()} {r['last_name'].strip()}".lower()
             for r in rows if r["first_name"] and r["last_name"]}
    names = {n for n in names if " ".join(WORD.findall(n)) == n}  # not a malformed line's whole text
    return {"email": emails, "phone": {p for p in phones if len(p) >= 8}, "name": names}


def _found_in_text(text: str, pii: dict[str, set[str]]) -> set[str]:
    emails = {m.lower() for m in re.findall(EMAIL_RE, text)} & pii["email"]
    digits = {re.sub(r"\D", "", m) for m in re.findall(r"\+?\d[\d\s().-]{6,}\d", text)} & pii["phone"]
    words = [w.lower() for w in WORD.findall(text)]
    longest = max((len(n.split()) for n in pii["name"]), default=0)  # "isla van dijk" is three words
    runs = {" ".join(words[i:i + n]) for n in range(2, longest + 1) for i in range(len(words) - n + 1)}
    return emails | digits | (runs & pii["name"])


@pytest.fixture(scope="module")
def pii(e2e: EndToEnd) -> dict[str, set[str]]:
    found = _raw_pii(e2e)
    assert all(len(v) > 1000 for v in found.values()), {k: len(v) for k, v in found.items()}
    return found


def test_no_raw_pii_in_any_silver_gold_or_quarantine_table(spark: SparkSession, e2e: EndToEnd, pii) -> None:
    tokens = spark.createDataFrame([(v,) for kind in ("email", "name") for v in pii[kind]], "v string")
    phones = spark.createDataFrame([(v,) for v in pii["phone"]], "v string")
    tables = [t for t in e2e.lake.tables() if t.split(".")[0] in ("silver", "gold", "quarantine")]
    assert {"silver.customers", "quarantine.customers", "gold.customer_features", "gold.churn_scores"} <= set(tables)
    # Every table's string values in one query (three scans of the union), not one query per table.
    frames = []
    for table in tables:
        df = e2e.lake.read(table)
        strings = [f.name for f in df.schema.fields if f.dataType.simpleString() == "string"]
        if strings:
            frames.append(_values(df, strings).withColumn("table", F.lit(table)))
    values = reduce(DataFrame.unionByName, frames)
    hits = (
        values.join(F.broadcast(tokens), values["v"] == tokens["v"], "left_semi")
        .unionByName(values.join(F.broadcast(phones), F.regexp_replace(values["v"], r"\D", "") == phones["v"], "left_semi"))
        .unionByName(values.where(values["v"].rlike(EMAIL_RE)))
    )
    leaks = {r["table"]: [v[:80] for v in r["v"]]
             for r in hits.groupBy("table").agg(F.slice(F.collect_list("v"), 1, 3).alias("v")).collect()}
    assert leaks == {}


def _values(df: DataFrame, columns: list[str]) -> DataFrame:
    """Every non-null string value of ``columns``, lower-cased, one per row."""
    return df.select(F.explode(F.array(*(F.lower(F.col(f"`{c}`")) for c in columns))).alias("v")).where("v IS NOT NULL")


def _files(root: Path, *parts: str) -> list[Path]:
    return [p for part in parts for p in (root / part).rglob("*") if p.is_file()]


def test_no_raw_pii_in_the_report_mlflow_or_data_docs(e2e: EndToEnd, pii) -> None:
    lake = Path(e2e.settings.paths.lake)
    files = _files(lake, "_reports", "_mlflow", "_quality")
    assert any(f.suffix == ".html" for f in files) and any(f.name.endswith(".db") for f in files)
    leaks = {}
    for path in files:
        found = _found_in_text(path.read_bytes().decode("utf-8", errors="replace"), pii)
        if found:
            leaks[str(path.relative_to(lake))] = sorted(found)[:3]
    assert leaks == {}


def test_the_pii_key_is_in_no_file_the_run_wrote(e2e: EndToEnd) -> None:
    lake = Path(e2e.settings.paths.lake)
    key = PII_KEY.encode()
    files = [p for p in lake.rglob("*") if p.is_file()]
    assert len(files) > 100
    assert [str(p.relative_to(lake)) for p in files if key in p.read_bytes()] == []


def test_the_scan_finds_pii_where_it_is_allowed(e2e: EndToEnd, pii) -> None:
    """The scan is not blind: bronze keeps the raw customers file's values, and the text search
    recognises them."""
    sample = next(iter(pii["email"]))
    assert sample in _found_in_text(f"contact: {sample.upper()}.", pii)
    for name in (min(pii["name"], key=lambda n: len(n.split())), max(pii["name"], key=lambda n: len(n.split()))):
        assert _found_in_text(f"Dear {name.title()},", pii) == {name}
