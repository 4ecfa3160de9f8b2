"""The delta-spark engine against the same lake contract as the embedded one.

It needs the delta-spark jars, which `make install` fetches from Maven Central into jars/delta
(the session factory puts them on the classpath); where Maven Central could not be reached every
test here is skipped with the reason, and tests/test_lake.py covers the embedded engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from crm_spark.config import Settings, load_settings
from crm_spark.lake import Lake, open_lake
from crm_spark.session import delta_jars_configured, delta_spark_available, session_conf
from lake_contract import D1, D2, D3, ORDERS, LakeContract, assert_rows, orders

TEST_CONF = Path(__file__).parent / "conf" / "test.yaml"
NO_JARS = (
    "delta-spark jars are not on the classpath (make install could not fetch them into jars/delta); "
    "the embedded engine is tested instead"
)
# Decided before any session starts, the way build_session decides to load the Delta extension;
# the `lake` fixture still asks the running session.
_JARS = delta_jars_configured(session_conf(load_settings(config_file=TEST_CONF)))
needs_delta_jars = pytest.mark.skipif(not _JARS, reason=NO_JARS)
# Delta's own engine is a JVM integration (about 150 s for the contract here): `make test` runs it,
# the inner loop (`make test-fast`) keeps the embedded engine's contract in tests/test_lake.py.
pytestmark = pytest.mark.slow


@pytest.fixture
def lake(spark: SparkSession, tmp_path: Path) -> Lake:
    if not delta_spark_available(spark):
        pytest.skip(NO_JARS)
    from crm_spark.lake.delta_spark import DeltaSparkLake

    return DeltaSparkLake(spark, str(tmp_path / "lake"))


@needs_delta_jars
class TestDeltaSparkLake(LakeContract):
    """Every behaviour of tests/lake_contract.py, on delta-spark."""


@needs_delta_jars
def test_auto_picks_delta_spark_when_its_jars_load(spark: SparkSession, settings: Settings, tmp_path: Path) -> None:
    if not delta_spark_available(spark):
        pytest.skip(NO_JARS)

    auto = settings.model_copy(update={"lake": settings.lake.model_copy(update={"engine": "auto"})})

    assert open_lake(spark, auto, root=str(tmp_path / "lake")).engine == "delta-spark"


@needs_delta_jars
def test_a_delta_spark_table_reads_through_the_embedded_engine(lake: Lake, spark: SparkSession, tmp_path: Path) -> None:
    from crm_spark.lake.embedded import EmbeddedLake

    lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1)]), partition_by=["order_date"])

    assert_rows(EmbeddedLake(spark, lake.root).read(ORDERS), orders(spark, [(1, "c1", 10.0, D1)]))


def _write_history(lake: Lake, spark: SparkSession) -> None:
    """Create, append, merge (update + insert), overwrite one partition: four versions."""
    lake.append(ORDERS, orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2)]), partition_by=["order_date"])
    lake.append(ORDERS, orders(spark, [(3, "c3", 30.0, D3)]), partition_by=["order_date"])
    lake.merge(ORDERS, orders(spark, [(1, "c1", 15.0, D1), (4, "c4", 40.0, D3)]), keys=["order_id"],
               partition_by=["order_date"])
    lake.overwrite(ORDERS, orders(spark, [(2, "c2", 22.0, D2)]), partition={"order_date": [D2]},
                   partition_by=["order_date"])


@needs_delta_jars
@pytest.mark.parametrize("writer", ["embedded", "delta-spark"])
def test_either_engines_table_reads_alike_in_the_other_and_in_deltalake(
    lake: Lake, spark: SparkSession, writer: str
) -> None:
    from deltalake import DeltaTable

    from crm_spark.lake.embedded import EmbeddedLake

    engines = {"delta-spark": lake, "embedded": EmbeddedLake(spark, lake.root)}
    _write_history(engines[writer], spark)
    reader = engines["embedded" if writer == "delta-spark" else "delta-spark"]
    dt = DeltaTable(lake.uri(ORDERS))

    assert reader.version(ORDERS) == engines[writer].version(ORDERS) == dt.version() == 3
    assert [c.version for c in reader.history(ORDERS)] == [c.version for c in engines[writer].history(ORDERS)] \
        == sorted((h["version"] for h in dt.history()), reverse=True)
    latest = orders(spark, [(1, "c1", 15.0, D1), (2, "c2", 22.0, D2), (3, "c3", 30.0, D3), (4, "c4", 40.0, D3)])
    assert_rows(reader.read(ORDERS), latest)
    assert_rows(spark.createDataFrame(dt.to_pandas(), reader.schema(ORDERS)).select(*latest.columns), latest)
    assert_rows(reader.read(ORDERS, version=1),
                orders(spark, [(1, "c1", 10.0, D1), (2, "c2", 20.0, D2), (3, "c3", 30.0, D3)]))
