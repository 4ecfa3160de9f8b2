"""The session factory: settings from config reach the session, and a machine without a usable
Java gets one actionable line instead of a JVM stack."""

from __future__ import annotations

import stat
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from crm_spark.config import Settings
from crm_spark.errors import EnvironmentSetupError
from crm_spark.session import DELTA_EXTENSION, build_session, check_java, delta_jars_configured, session_conf


def test_the_session_clock_is_utc(spark: SparkSession) -> None:
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_shuffle_partitions_and_app_name_come_from_the_test_overlay(spark: SparkSession) -> None:
    # tests/conf/test.yaml: spark.sql.shuffle.partitions: 1, app_name: crm-spark-tests
    assert spark.conf.get("spark.sql.shuffle.partitions") == "1"
    assert spark.sparkContext.appName == "crm-spark-tests"
    assert spark.sparkContext.master == "local[2]"


def test_generated_code_stays_within_what_hotspot_compiles(spark: SparkSession) -> None:
    # conf/base.yaml: a plan whose generated method is over HotSpot's 8,000-byte limit runs as
    # per-operator code, which is compiled, not interpreted (refine of 5.4M invoice lines: 237 s -> 198 s).
    assert spark.conf.get("spark.sql.codegen.hugeMethodLimit") == "8000"
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert "-Duser.timezone=UTC" in args


def test_parquet_timestamps_are_written_as_utc_microseconds(spark: SparkSession, tmp_path: Path) -> None:
    moment = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    spark.createDataFrame([(moment,)], "event_ts TIMESTAMP").coalesce(1).write.parquet(str(tmp_path / "ts"))

    (part,) = (tmp_path / "ts").glob("*.parquet")
    table = pq.read_table(part)

    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "TIMESTAMP_MICROS"
    assert table.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
    assert table.column("event_ts").to_pylist() == [moment]


def test_spark_writes_no_success_markers(spark: SparkSession, tmp_path: Path) -> None:
    # The embedded lake lists exactly the files a job wrote; base.yaml turns the markers off.
    spark.range(3).write.parquet(str(tmp_path / "out"))

    assert not (tmp_path / "out" / "_SUCCESS").exists()


def _fake_java(home: Path, version_line: str) -> Path:
    java = home / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return java


def test_check_java_without_java_is_one_actionable_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(EnvironmentSetupError) as exc:
        check_java()

    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("Java not found: Spark needs Java 17+")
    assert "JAVA_HOME" in message


def test_build_session_checks_java_before_starting_spark(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(EnvironmentSetupError, match="^Java not found"):
        build_session(settings)


@pytest.mark.parametrize(
    ("version_line", "major"),
    [('openjdk version "11.0.21" 2023-10-17', 11), ('java version "1.8.0_392"', 8)],
)
def test_check_java_refuses_an_old_java(
    version_line: str, major: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = _fake_java(tmp_path / "jdk", version_line)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))

    with pytest.raises(EnvironmentSetupError) as exc:
        check_java()

    assert str(exc.value).startswith(f"Java {major} found at {java}, Spark 4 needs Java 17+")
    assert "\n" not in str(exc.value)


def test_check_java_accepts_java_17_from_java_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path / "jdk", 'openjdk version "17.0.15" 2025-04-15')
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    assert check_java() == 17


def test_delta_jars_are_recognised_in_the_spark_conf() -> None:
    assert delta_jars_configured({"spark.jars.packages": "io.delta:delta-spark_4.2_2.13:4.4.0"})
    assert delta_jars_configured({"spark.jars": "/opt/jars/delta-spark_2.13-4.4.1.jar,/opt/jars/other.jar"})


def _with_lake(settings: Settings, **lake: object) -> Settings:
    return settings.model_copy(update={"lake": settings.lake.model_copy(update=lake)})


def test_the_jars_make_install_fetched_go_on_the_classpath_with_deltas_extension(
    settings: Settings, tmp_path: Path
) -> None:
    for name in ("delta-spark_4.2_2.13-4.4.0.jar", "delta-storage-4.4.0.jar"):
        (tmp_path / name).write_bytes(b"")

    conf = session_conf(_with_lake(settings, engine="embedded", delta_jars=str(tmp_path)))

    assert conf["spark.jars"].split(",") == [str(tmp_path / "delta-spark_4.2_2.13-4.4.0.jar"),
                                             str(tmp_path / "delta-storage-4.4.0.jar")]
    assert conf["spark.sql.extensions"] == DELTA_EXTENSION
    # delta-spark's log replay and VACUUM listing sized to the session, not 50 and 10,000 tasks
    assert conf["spark.databricks.delta.snapshotPartitions"] == conf["spark.sql.shuffle.partitions"]


def test_without_delta_jars_the_session_has_no_delta_extension(settings: Settings, tmp_path: Path) -> None:
    for folder in (str(tmp_path / "missing"), ""):
        conf = session_conf(_with_lake(settings, engine="auto", delta_jars=folder))

        assert "spark.jars" not in conf
        assert "spark.sql.extensions" not in conf


def test_under_spark_submit_delta_counts_only_when_spark_submit_brought_its_jars(settings: Settings, tmp_path: Path) -> None:
    # spark-submit started the JVM: the project's jars/delta can no longer join its classpath, so a
    # session configured with Delta's catalog would fail on its first table (ClassNotFoundException).
    (tmp_path / "delta-spark_4.2_2.13-4.4.0.jar").write_bytes(b"")
    local = _with_lake(settings, engine="auto", delta_jars=str(tmp_path))

    plain = session_conf(local, submitted={"spark.master": "local[2]"})
    assert "spark.jars" not in plain and "spark.sql.extensions" not in plain

    with_jars = session_conf(local, submitted={"spark.jars": "/opt/jars/delta-spark_4.2_2.13-4.4.0.jar"})
    assert "spark.jars" not in with_jars  # spark-submit's own --jars stand
    assert with_jars["spark.sql.extensions"] == DELTA_EXTENSION


def test_preloading_imports_in_the_background_and_leaves_a_failing_import_to_the_caller() -> None:
    import sys

    from crm_spark.session import _import_in_background

    sys.modules.pop("colorsys", None)
    loader = _import_in_background(["crm_spark_no_such_module", "colorsys"])
    loader.join(timeout=30)

    assert not loader.is_alive()
    assert "colorsys" in sys.modules  # the module after the failing one was still imported
    assert "crm_spark_no_such_module" not in sys.modules
