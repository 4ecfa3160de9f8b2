"""HDFS for real: a MiniDFSCluster on loopback holds the landing zone and the lake.

The cluster is Hadoop's own test cluster (``org.apache.hadoop.test.MiniDFSClusterManager`` from
hadoop-client-minicluster, which `make install` fetches into jars/test at the Hadoop version
pyspark ships), started in its own JVM and stopped by its process id. The shared end-to-end
run's raw files of two sources (customers, orders) are landed on
``hdfs://``, then ingest -> refine -> features run with the lake on ``hdfs://`` on the default
engine; the tables are read back by the session, by delta-spark and by ``deltalake`` in Python
(its native HDFS client), and one is read at an earlier version.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import SparkSession

from crm_spark.config import PathsSettings, Settings
from crm_spark.lake import Lake, open_lake
from crm_spark.session import delta_spark_available, java_executable
from crm_spark.stages import StageContext, StageResult, run_stage
from conftest import E2E_END, EndToEnd

pytestmark = pytest.mark.slow

MINICLUSTER_JARS = Path(__file__).resolve().parent.parent / "jars" / "test"
SOURCES = ("customers", "orders")
STAGES = ("ingest", "refine", "features")
END = E2E_END


@pytest.fixture(scope="module")
def hdfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``hdfs://127.0.0.1:<port>`` of a one-datanode MiniDFSCluster, stopped after the module."""
    jars = sorted(MINICLUSTER_JARS.glob("hadoop-client-minicluster-*.jar"))
    if not jars:
        pytest.skip("hadoop-client-minicluster is not in jars/test (make install could not fetch it from Maven Central)")
    work = tmp_path_factory.mktemp("hdfs")
    details = work / "cluster.json"
    classpath = os.pathsep.join([str(MINICLUSTER_JARS / "*"), str(Path(pyspark.__file__).parent / "jars" / "*")])
    log = (work / "minicluster.log").open("w")
    proc = subprocess.Popen(
        [str(java_executable()), "-Xmx512m", f"-Dtest.build.data={work / 'data'}", "-cp", classpath,
         "org.apache.hadoop.test.MiniDFSClusterManager", "-format", "-datanodes", "1", "-nnport", "0",
         "-writeDetails", str(details),
         "-D", "dfs.namenode.rpc-bind-host=127.0.0.1", "-D", "dfs.namenode.http-address=127.0.0.1:0",
         "-D", "dfs.datanode.address=127.0.0.1:0", "-D", "dfs.datanode.http.address=127.0.0.1:0",
         "-D", "dfs.datanode.ipc.address=127.0.0.1:0"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (details.exists() and details.stat().st_size):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"MiniDFSCluster did not start (exit {proc.poll()}); see {work / 'minicluster.log'}")
            time.sleep(0.5)
        port = json.loads(details.read_text())["namenode_port"]
        yield f"hdfs://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


@dataclass
class OnHdfs:
    settings: Settings
    lake: Lake
    results: dict[str, StageResult]


@pytest.fixture(scope="module")
def on_hdfs(
    spark: SparkSession, settings: Settings, hdfs: str, e2e: EndToEnd, tmp_path_factory: pytest.TempPathFactory
) -> OnHdfs:
    raw, lake_root = f"{hdfs}/landing/crm", f"{hdfs}/lake/crm"
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    fs = jvm.org.apache.hadoop.fs.Path(raw).getFileSystem(spark._jsparkSession.sessionState().newHadoopConf())  # noqa: SLF001
    fs.mkdirs(jvm.org.apache.hadoop.fs.Path(raw))
    for source in SOURCES:  # into raw/<source>/
        fs.copyFromLocalFile(jvm.org.apache.hadoop.fs.Path(str(e2e.raw / source)), jvm.org.apache.hadoop.fs.Path(raw))
    # Great Expectations keeps its results on local disk when the lake is remote (quality.local_dir)
    quality = settings.quality.model_copy(update={"local_dir": str(tmp_path_factory.mktemp("hdfs_quality"))})
    sources = {name: s for name, s in settings.sources.items() if name in SOURCES}
    own = settings.model_copy(
        update={"paths": PathsSettings(raw=raw, lake=lake_root), "quality": quality, "sources": sources}
    )
    lake = open_lake(spark, own)
    mp = pytest.MonkeyPatch()
    mp.setenv("CRM_SPARK_PII_KEY", "hdfs-test-key")
    try:
        ctx = StageContext(settings=own, spark=spark, lake=lake, as_of=END)
        results = {name: run_stage(ctx, name) for name in STAGES}
    finally:
        mp.undo()
    return OnHdfs(own, lake, results)


def test_raw_files_and_every_table_live_on_hdfs(spark: SparkSession, on_hdfs: OnHdfs) -> None:
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    conf = spark._jsparkSession.sessionState().newHadoopConf()  # noqa: SLF001
    root = jvm.org.apache.hadoop.fs.Path(on_hdfs.settings.paths.lake)
    fs = root.getFileSystem(conf)
    assert fs.getScheme() == "hdfs"
    written = {w.table for r in on_hdfs.results.values() for w in r.writes}
    assert {"bronze.orders", "silver.orders", "silver.customers", "gold.customer_features"} <= written
    for table in written:
        log_dir = jvm.org.apache.hadoop.fs.Path(f"{on_hdfs.lake.uri(table)}/_delta_log")
        assert fs.exists(log_dir), table
    assert fs.exists(jvm.org.apache.hadoop.fs.Path(f"{on_hdfs.settings.paths.raw}/orders"))


def test_tables_read_back_with_the_rows_the_stages_wrote(on_hdfs: OnHdfs) -> None:
    for result in on_hdfs.results.values():
        for w in result.writes:
            if not w.noop:
                assert on_hdfs.lake.read(w.table).count() == on_hdfs.lake.rows(w.table), w.table
    features = on_hdfs.lake.read("gold.customer_features")
    assert features.count() == on_hdfs.lake.read("silver.customers").count() > 0
    assert {r[0] for r in features.select("as_of_date").distinct().collect()} == {END}


def test_time_travel_on_hdfs_reads_the_earlier_version(spark: SparkSession, on_hdfs: OnHdfs) -> None:
    lake, table = on_hdfs.lake, "gold.customer_features"
    before = lake.version(table)
    rows_before = lake.read(table).count()
    # a second, smaller write of the same partition makes a new version; the old one stays readable
    three = spark.createDataFrame(lake.read(table).limit(3).collect(), lake.schema(table))
    lake.overwrite(table, three, partition={"as_of_date": [END]}, partition_by=["as_of_date"])

    assert lake.version(table) == before + 1
    assert lake.read(table).count() == 3
    assert lake.read(table, version=before).count() == rows_before


def test_deltalake_and_delta_spark_read_the_hdfs_tables_alike(spark: SparkSession, on_hdfs: OnHdfs) -> None:
    from deltalake import DeltaTable

    table = "silver.orders"
    uri = on_hdfs.lake.uri(table)
    dt = DeltaTable(uri)
    assert dt.version() == on_hdfs.lake.version(table)
    assert dt.to_pyarrow_dataset().count_rows() == on_hdfs.lake.read(table).count()
    if delta_spark_available(spark):
        from crm_spark.lake.delta_spark import DeltaSparkLake

        other = DeltaSparkLake(spark, on_hdfs.settings.paths.lake)
        assert other.version(table) == dt.version()
        assert [c.version for c in other.history(table)] == [c.version for c in on_hdfs.lake.history(table)]
        assert other.read(table).exceptAll(on_hdfs.lake.read(table)).isEmpty()
