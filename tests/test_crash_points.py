"""SIGKILL inside a stage's writes: the previous version of every table stays intact, and running
the stage again gives exactly the tables of a run that was never interrupted.

One small landing zone (orders and their lines, one of each bad) is run twice: once without
interruption (the reference lake) and once with a kill in each of three stages, at a different
point of a write each (``tests/killed_stage.py``): refine between two of its commits (quarantine
committed, silver not), features while Spark writes its files, basket after its files and
before its commit. After each kill the test checks the lake, re-runs the stage in-process and
compares every table the stage writes with the reference.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from crm_spark.config import load_settings
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, run_stage

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

TESTS = Path(__file__).parent
AS_OF = date(2024, 3, 31)
KEY = "crash-points-test-key"
FILES = {
    "orders/o.csv": "order_id,customer_id,order_ts,channel,status,payment_type\n" + "".join(
        f"O{i},C{i % 4 + 1},2024-03-{i + 10} 10:00:00,web,completed,card\n" for i in range(1, 9))
        + "O10,C1,not a date,web,completed,card\n",
    "order_items/i.csv": "order_id,line_no,product_id,quantity,unit_price,discount\n" + "".join(
        f"O{i},1,P1,1,1.50,0\nO{i},2,P{2 + i % 2},1,2.50,0\n" for i in range(1, 9)) + "O9,1,P1,1,1.50,0\n",
}
SOURCES = {name: {"path": name, "options": {"header": True}, "targets": {name: {}}} for name in ("orders", "order_items")}
WRITES = {"refine": ("silver.orders", "silver.order_items", "silver.order_status_history", "quarantine.orders",
                     "quarantine.order_items"),
          "features": ("gold.customer_features",),
          "basket": ("gold.basket_itemsets", "gold.basket_rules", "gold.cross_sell")}


@dataclass
class Crash:
    returncode: int
    versions_before: dict[str, int | None]
    versions_after_kill: dict[str, int | None]
    readable_after_kill: dict[str, int]


def _config(root: Path, name: str) -> Path:
    """The test overlay plus this scenario's paths and sources, as a file the child process loads."""
    config = yaml.safe_load((TESTS / "conf" / "test.yaml").read_text())
    config["paths"] = {"raw": str(root / "raw"), "lake": str(root / name)}
    config["sources"] = SOURCES
    config.setdefault("basket", {})["min_support"] = 0.2
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _versions(lake: Lake, tables: tuple[str, ...]) -> dict[str, int | None]:
    return {t: lake.version(t) if lake.exists(t) else None for t in tables}


def _kill(config: Path, stage: str, point: str, log: Path) -> int:
    env = {**os.environ, "CRM_SPARK_PII_KEY": KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "killed_stage.py"), str(config), stage, AS_OF.isoformat(), point],
            stdout=out, stderr=subprocess.STDOUT, cwd=TESTS.parent, env=env, start_new_session=True,
        )
        try:
            return proc.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the killed driver's JVM


@pytest.fixture(scope="module")
def lakes(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, Lake, dict[str, Crash]]:
    root = tmp_path_factory.mktemp("crash_points")
    for relative, text in FILES.items():
        (root / "raw" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / "raw" / relative).write_text(text, encoding="utf-8")
    settings = {name: load_settings(config_file=_config(root, name)) for name in ("reference", "killed")}
    lakes = {name: open_lake(spark, s) for name, s in settings.items()}
    crashes: dict[str, Crash] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_SPARK_PII_KEY", KEY)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        ref = StageContext(settings=settings["reference"], spark=spark, lake=lakes["reference"], as_of=AS_OF)
        for stage in ("ingest", *WRITES):
            run_stage(ref, stage)
        ctx = StageContext(settings=settings["killed"], spark=spark, lake=lakes["killed"], as_of=AS_OF)
        run_stage(ctx, "ingest")
        for stage, point in (("refine", "between"), ("features", "writing"), ("basket", "committing")):
            before = _versions(lakes["killed"], WRITES[stage])
            code = _kill(root / "killed.yaml", stage, point, root / f"{stage}.log")
            after = _versions(lakes["killed"], WRITES[stage])
            readable = {t: lakes["killed"].read(t).count() for t, v in after.items() if v is not None}
            crashes[stage] = Crash(code, before, after, readable)
            run_stage(ctx, stage)  # again, in-process
    return lakes["reference"], lakes["killed"], crashes


@pytest.mark.parametrize("stage", list(WRITES))
def test_the_stage_died_by_sigkill(lakes, stage: str) -> None:
    assert lakes[2][stage].returncode == -signal.SIGKILL


def test_refine_killed_between_commits_committed_one_table_and_left_the_rest_as_they_were(lakes) -> None:
    crash = lakes[2]["refine"]
    moved = [t for t in WRITES["refine"] if crash.versions_after_kill[t] != crash.versions_before[t]]
    assert len(moved) == 1  # the first commit (the orders' quarantine); nothing after it
    assert all(v is None for t, v in crash.versions_before.items())


@pytest.mark.parametrize("stage", ["features", "basket"])
def test_a_write_killed_before_its_commit_changes_no_table(lakes, stage: str) -> None:
    crash = lakes[2][stage]
    assert crash.versions_after_kill == crash.versions_before


@pytest.mark.parametrize("table", [t for tables in WRITES.values() for t in tables])
def test_running_the_killed_stage_again_gives_the_tables_of_an_uninterrupted_run(lakes, table: str) -> None:
    reference, killed, _ = lakes
    expected, actual = reference.read(table), killed.read(table)
    drop = [c for c in ("_ingest_batch_id", "_source_file") if c in expected.columns]
    expected, actual = expected.drop(*drop), actual.drop(*drop)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True)


def test_the_half_written_file_of_the_killed_features_stays_out_of_the_table(lakes) -> None:
    killed = lakes[1]
    table_dir = Path(killed.uri("gold.customer_features").removeprefix("file://").removeprefix("file:"))
    half = [p for p in table_dir.rglob("part-*.parquet") if "_temporary" in p.parts]
    assert half  # the kill came while Spark was writing
    assert not any("_temporary" in f for f in killed.read("gold.customer_features").inputFiles())
