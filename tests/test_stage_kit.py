"""The stage kit: declarations drive run order, skips, the DAG, the jobs and the README; the
declared inputs and outputs are what the stages really read and write; the as-of date comes from
table metadata; one publish path; MLflow only in tracking.py."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from crm_spark.config import PathsSettings, Settings
from crm_spark.contracts import TABLES, CheckContext, contract_for
from crm_spark.contracts.checks import Rule, Unique
from crm_spark.lake import open_lake
from crm_spark.stages import (
    MODEL_STAGES, STAGES, StageContext, dependencies, imports, ordered, plan, producer, run_stage, stage, stage_table,
)
from conftest import EndToEnd

ROOT = Path(__file__).resolve().parents[1]


def _matches(table: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(table, p) for p in patterns)


# -- the declarations ------------------------------------------------------------------------------
def test_run_order_puts_every_producer_before_its_readers() -> None:
    order = [s.name for s in ordered(list(reversed(STAGES)))]
    for spec in STAGES:
        for table in spec.inputs:
            maker = producer(table)
            if maker is not None and maker is not spec:
                assert order.index(maker.name) < order.index(spec.name), (maker.name, spec.name, table)
    assert [s.name for s in plan(None)] == ["ingest", "refine", "features", "segment", "basket", "churn", "recommend",
                                            "clv", "report"]
    assert [s.name for s in plan(["churn", "ingest", "features"])] == ["ingest", "features", "churn"]


def test_dag_edges_are_the_data_dependencies() -> None:
    # Worked out from the declarations by hand: who writes what the other reads.
    assert sorted(dependencies(plan(None))) == sorted([
        ("ingest", "refine"), ("refine", "features"), ("refine", "basket"), ("refine", "churn"),
        ("refine", "segment"),  # segment.attributes reads silver.customer_attributes
        ("features", "segment"), ("features", "churn"), ("refine", "recommend"),
        ("refine", "clv"), ("features", "clv"),
        # the report reads every layer, so it runs last
        *[(up, "report") for up in ("ingest", "refine", "features", "segment", "basket", "churn", "recommend", "clv")],
    ])
    dag = (ROOT / "dags" / "crm_spark_daily.py").read_text()
    assert "dependencies(specs)" in dag and "plan(None)" in dag
    assert not re.search(r"STAGES\s*=\s*\[", dag), "the DAG must not repeat the stage list"


def test_every_stage_has_its_job_entry_point() -> None:
    for spec in STAGES:
        job = ROOT / "jobs" / f"{spec.name}.py"
        assert job.is_file(), job
        assert f'main(["{spec.name}", *sys.argv[1:]])' in job.read_text(), job


def test_readme_stage_table_is_generated_from_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- stages:begin -->\n(.*?)\n<!-- stages:end -->", readme, re.S)
    assert block is not None, "README lacks the generated stage table markers"
    assert block.group(1).strip() == stage_table().strip()


def test_every_declared_table_has_a_contract() -> None:
    for spec in STAGES:
        for table in (*spec.inputs, *spec.outputs):
            if "*" in table:
                assert any(fnmatch.fnmatchcase(name, table) or name == table for name in TABLES), table
            elif spec.built:
                assert contract_for(table) is not None, table


def test_every_merged_table_is_gated_on_its_keys_being_present_and_unique(settings: Settings) -> None:
    """A merge skips the lake's own key check when the gate checked the keys (GX's uniqueness
    leaves nulls out, so the keys must also be checked not null)."""
    merged = [t for t in TABLES.values() if t.write == "merge"]
    assert merged
    for t in merged:
        checks = t.check_list(CheckContext(settings))
        assert Unique(tuple(t.keys)) in checks, t.name
        assert all(Rule(f"`{k}` IS NOT NULL") in checks for k in t.keys), t.name


def test_a_merge_after_a_passed_key_check_skips_the_lakes_own(
    spark: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = settings.model_copy(update={"paths": PathsSettings(raw=str(tmp_path / "raw"), lake=str(tmp_path / "lake"))})
    lake = open_lake(spark, own)
    vouched: list[bool] = []
    merge = lake.merge
    monkeypatch.setattr(lake, "merge", lambda *a, **kw: vouched.append(kw["keys_verified"]) or merge(*a, **kw))
    products = spark.createDataFrame(
        [("P1", "Tea", "food", None, None, 3.5, "0", "p.csv"), ("P2", "Mug", "home", None, None, 8.0, "0", "p.csv")],
        "product_id string, product_name string, category string, subcategory string, brand string, "
        "list_price double, _ingest_batch_id string, _source_file string",
    )
    ctx = StageContext(settings=own, spark=spark, lake=lake, as_of=date(2025, 1, 1))

    ctx.publish("silver.products", products)

    assert vouched == [True]
    assert lake.rows("silver.products") == 2


def test_no_stage_module_talks_to_mlflow() -> None:
    for module in (ROOT / "crm_spark" / "stages").glob("*.py"):
        text = module.read_text()
        assert not re.search(r"^\s*(import mlflow|from mlflow)", text, re.M), module.name
        assert "mlflow." not in text.replace("``", ""), module.name


def test_each_stage_preloads_what_it_imports_and_no_more() -> None:
    """A stage writing a gated table preloads the gates (Great Expectations), a tracked one MLflow and
    matplotlib; the rest wait for nothing they will not use (ingest's tables have no gates)."""
    for s in (s for s in STAGES if s.built):
        gated = any((c := contract_for(t)) is not None and c.checks is not None
                    for t in TABLES if "*" not in t and s.writes(t))
        assert ("crm_spark.quality" in s.imports) == (gated or s.name == "report"), s.name  # the report links Data Docs
        assert ("mlflow" in s.imports) == (s.tracked or s.name == "report"), s.name  # the report reads the runs
    assert imports(["ingest"]) == ()
    assert imports(["ingest", "refine", "segment"]) == ("crm_spark.quality", "mlflow", "matplotlib.figure")
    assert MODEL_STAGES == ("segment", "basket", "churn", "recommend", "clv")


def test_ingest_runs_without_importing_the_gates_or_mlflow(tmp_path: Path) -> None:
    script = tmp_path / "imports.py"  # a file: `python -c` stops early importing Great Expectations
    script.write_text("import sys\nimport crm_spark.cli, crm_spark.stages.ingest, crm_spark.lake\n"
                      "print(sorted(m for m in ('great_expectations', 'mlflow', 'matplotlib') if m in sys.modules))\n")
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip().splitlines()[-1] == "[]"


def test_churn_score_is_a_declared_option() -> None:
    (option,) = stage("churn").options
    assert (option.flag, option.entry) == ("--score", "score")


# -- behaviour of the runner --------------------------------------------------------------------
def test_missing_inputs_skip_with_the_table_and_the_stage_that_makes_it(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    own = settings.model_copy(update={"paths": PathsSettings(raw=str(tmp_path / "raw"), lake=str(tmp_path / "lake"))})
    ctx = StageContext(settings=own, spark=spark, lake=open_lake(spark, own))
    segment = run_stage(ctx, "segment")
    assert segment.skipped == "gold.customer_features not found: run `crm-spark features` first"
    basket = run_stage(ctx, "basket")
    assert basket.skipped is not None and basket.skipped.startswith("silver.orders, silver.order_items not found")
    assert "`crm-spark refine`" in basket.skipped
    assert segment.writes == () and basket.writes == ()


@pytest.mark.slow
def test_the_default_as_of_comes_from_log_statistics(e2e: EndToEnd) -> None:
    lake = e2e.lake
    from deltalake import DeltaTable
    import pyarrow as pa

    actions = pa.table(DeltaTable(lake.uri("silver.orders")).get_add_actions(flatten=True)).to_pylist()
    assert actions and all(a["max.order_date"] is not None for a in actions)  # every file has its statistics
    expected = lake.read("silver.orders").agg({"order_date": "max"}).first()[0]
    assert lake.max_value("silver.orders", "order_date") == expected
    partitions = lake.read("gold.customer_features").select("as_of_date").distinct().collect()
    assert lake.max_value("gold.customer_features", "as_of_date") == max(r[0] for r in partitions)
    assert lake.rows("gold.customer_features", partition={"as_of_date": date(2025, 6, 30)}) == (
        lake.read("gold.customer_features", partition={"as_of_date": date(2025, 6, 30)}).count()
    )


# -- declarations against what the end-to-end run did ---------------------------------------------
@pytest.mark.slow
def test_declared_inputs_and_outputs_match_what_each_stage_read_and_wrote(e2e: EndToEnd) -> None:
    for name, result in e2e.results.items():
        spec = stage(name)
        # A stage that needs partitions may run their producer's backfill, which reads that stage's inputs.
        backfills = [producer(t) for t in spec.inputs] if spec.needs else []
        allowed = (*spec.inputs, *(t for p in backfills if p is not None and p.backfill for t in p.inputs))
        for table in result.inputs:
            assert _matches(table, allowed), f"{name} read {table}, not declared"
        written = {w.table for w in result.writes}
        for table in written:
            assert _matches(table, spec.outputs) or (spec.needs and producer(table) is not spec), (
                f"{name} wrote {table}, not declared"
            )
        for table in spec.outputs:
            if "*" not in table:
                assert table in written, f"{name} declares {table} but did not write it"
        for table in spec.required_inputs(e2e.settings):
            assert table in result.inputs, f"{name} requires {table} but did not read it"


@pytest.mark.slow
def test_every_gold_write_was_gated(e2e: EndToEnd) -> None:
    for name, result in e2e.results.items():
        gated = {q.table for q in result.quality}
        for w in result.writes:
            contract = contract_for(w.table)
            if contract is not None and contract.checks is not None:
                assert w.table in gated, f"{name} published {w.table} without its gate"
    assert all(q.success for r in e2e.results.values() for q in r.quality)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["features", "segment", "basket", "churn"])
def test_model_stages_record_their_input_versions(e2e: EndToEnd, name: str) -> None:
    result = e2e.results[name]
    assert result.inputs and all(isinstance(v, int) and v >= 0 for v in result.inputs.values())
    assert result.as_of == date(2025, 6, 30)


@pytest.mark.parametrize(("limit", "small"), [(10**9, True), (0, False), (None, False)])
def test_a_stage_with_small_inputs_runs_with_the_small_input_settings(
    spark: SparkSession, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None,
    small: bool,
) -> None:
    """spark.small_inputs: below max_bytes (inputs measured from the Delta log) the stage runs
    with its conf; the session's own values are back once the stage ends."""
    from crm_spark.config import SmallInputs, SparkSettings
    from crm_spark.stages import StageResult, basket

    keys = ("spark.sql.codegen.wholeStage", "spark.sql.shuffle.partitions")
    small_conf = {"spark.sql.codegen.wholeStage": False, "spark.sql.shuffle.partitions": 3}
    own = settings.model_copy(update={
        "paths": PathsSettings(raw=str(tmp_path / "raw"), lake=str(tmp_path / "lake")),
        "spark": SparkSettings(**{**settings.spark.model_dump(), "small_inputs": SmallInputs(max_bytes=limit, conf=small_conf)}),
    })
    lake = open_lake(spark, own)
    ctx = StageContext(settings=own, spark=spark, lake=lake, as_of=date(2025, 1, 1))
    for table in ("silver.orders", "silver.order_items"):
        lake.create(table, contract_for(table).schema)
    seen: dict[str, str] = {}

    def fake(ctx: StageContext, as_of: date) -> StageResult:
        seen.update({k: spark.conf.get(k) for k in keys})
        return StageResult("basket")

    monkeypatch.setattr(basket, "run", fake)
    before = {k: spark.conf.get(k) for k in keys}
    spark.conf.set("spark.sql.codegen.wholeStage", "true")
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    try:
        run_stage(ctx, "basket")
        assert seen == ({"spark.sql.codegen.wholeStage": "false", "spark.sql.shuffle.partitions": "3"} if small
                        else {"spark.sql.codegen.wholeStage": "true", "spark.sql.shuffle.partitions": "5"})
        assert {k: spark.conf.get(k) for k in keys} == {"spark.sql.codegen.wholeStage": "true",
                                                        "spark.sql.shuffle.partitions": "5"}
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)
