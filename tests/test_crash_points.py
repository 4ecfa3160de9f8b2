"""SIGKILL inside a stage's writes: the previous version of every table stays intact, and running
the stage again gives exactly the tables of a run that was never interrupted. Two runs of a stage
at once lose nothing either.

One small landing zone (orders and their lines, one of each bad) is run once without interruption
(the reference lake), copying the lake before each stage. Each of refine, features and basket (a
model stage) is then stopped at each point of a write (``tests/killed_stage.py``): while Spark
writes its files, after its files and before its commit, inside the commit (a half-written
temporary commit file), and for refine also between two of its commits. Three of these ten are
real SIGKILLs of a child process (one per stage, one per point: refine inside its commit,
features while Spark writes, basket before its commit); the other seven stop the stage in-process at
the same point by an exception no handler catches (a child JVM costs about 14 s; the files left
on disk are the same). Each case runs in a copy of the lake as it was before its stage; after it
the test checks the lake, re-runs the stage in-process and compares every table the stage writes
with the reference. Two refines of one lake at once (two threads) lose nothing either.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from crm_spark.config import load_settings
from crm_spark.errors import LakeError
from crm_spark.lake import Lake, open_lake
from crm_spark.stages import StageContext, run_stage
from killed_stage import Aborted, abort, arm

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
POINTS = ("writing", "committing", "during")
CASES = [(stage, point) for stage in WRITES for point in POINTS] + [("refine", "between")]
SIGKILLED = (("refine", "during"), ("features", "writing"), ("basket", "committing"))  # one per stage and point
RACE = "race"  # two refines at once on one lake


@dataclass
class Crash:
    returncode: int | None  # None: stopped in-process
    versions_before: dict[str, int | None]
    versions_after_kill: dict[str, int | None]
    readable_after_kill: dict[str, int]
    lake: Lake


@dataclass
class Race:
    outcomes: list[str]  # "ok" or the error each writer got
    lake: Lake


def _config(root: Path, name: str) -> Path:
    """The test overlay plus this scenario's paths and sources, as a file the child process loads."""
    config = yaml.safe_load((TESTS / "conf" / "test.yaml").read_text())
    config["paths"] = {"raw": str(root / "raw"), "lake": str(root / name)}
    config["sources"] = SOURCES
    config.setdefault("basket", {})["min_support"] = 0.2
    # The killed children start three JVMs at once beside the test session's own, for a few rows
    # each: 1g of heap each, not the overlay's 4g (this process's JVM is running: it ignores this).
    config["spark"]["conf"]["spark.driver.memory"] = "1g"
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _versions(lake: Lake, tables: tuple[str, ...]) -> dict[str, int | None]:
    return {t: lake.version(t) if lake.exists(t) else None for t in tables}


def _child(root: Path, name: str, stage: str, point: str) -> subprocess.Popen:
    """A child process running ``stage`` on lake ``name``, to die at ``point``; its output in ``<name>.log``."""
    env = {**os.environ, "CRM_SPARK_PII_KEY": KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    with (root / f"{name}.log").open("w") as out:
        return subprocess.Popen(
            [sys.executable, str(TESTS / "killed_stage.py"), str(root / f"{name}.yaml"), stage, AS_OF.isoformat(), point],
            stdout=out, stderr=subprocess.STDOUT, cwd=TESTS.parent, env=env, start_new_session=True,
        )


def _wait(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the killed driver's JVM


@pytest.fixture(scope="module")
def lakes(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict, Race]:
    root = tmp_path_factory.mktemp("crash_points")
    for relative, text in FILES.items():
        (root / "raw" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / "raw" / relative).write_text(text, encoding="utf-8")
    names = {case: f"{case[0]}-{case[1]}" for case in CASES}
    settings = {name: load_settings(config_file=_config(root, name)) for name in ("reference", *names.values(), RACE)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_SPARK_PII_KEY", KEY)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        reference = open_lake(spark, settings["reference"])
        ref = StageContext(settings=settings["reference"], spark=spark, lake=reference, as_of=AS_OF)
        run_stage(ref, "ingest")
        for stage in WRITES:  # each kill starts from a copy of the lake as it was before its stage
            for (killed, _), name in names.items():
                if killed == stage:
                    shutil.copytree(root / "reference", root / name)
            if stage == "refine":
                shutil.copytree(root / "reference", root / RACE)
            run_stage(ref, stage)

        def context(name: str) -> StageContext:
            return StageContext(settings=settings[name], spark=spark, lake=open_lake(spark, settings[name]), as_of=AS_OF)

        crashes: dict[tuple[str, str], Crash] = {}
        before = {case: _versions(context(names[case]).lake, WRITES[case[0]]) for case in CASES}
        # The child processes start their JVMs while this process stops the other cases in-process.
        children = {case: _child(root, names[case], *case) for case in SIGKILLED}
        codes: dict[tuple[str, str], int | None] = {}
        for case in CASES:
            if case not in SIGKILLED:
                with pytest.MonkeyPatch.context() as armed:
                    arm(case[1], abort, armed.setattr)
                    with pytest.raises(Aborted):
                        run_stage(context(names[case]), case[0])
                codes[case] = None  # stopped in-process
        codes.update({case: _wait(child) for case, child in children.items()})
        for case, name in names.items():
            ctx = context(name)
            after = _versions(ctx.lake, WRITES[case[0]])
            readable = {t: ctx.lake.read(t).count() for t, v in after.items() if v is not None}
            crashes[case] = Crash(codes[case], before[case], after, readable, ctx.lake)
            run_stage(ctx, case[0])  # again, in-process

        # Two writers at once: two refines of one lake, from two threads of this process.
        racers = [context(RACE), context(RACE)]
        outcomes: list[str] = ["", ""]

        def refine(i: int) -> None:
            try:
                run_stage(racers[i], "refine")
                outcomes[i] = "ok"
            except LakeError as exc:
                outcomes[i] = f"lake error: {exc}"
            except Exception as exc:  # noqa: BLE001 - reported by the test
                outcomes[i] = f"unexpected {type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=refine, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        race = Race(outcomes, racers[0].lake)
        run_stage(racers[0], "refine")  # whatever the loser left undone
    return reference, crashes, race


@pytest.mark.parametrize("case", SIGKILLED, ids="-".join)
def test_the_stage_died_by_sigkill(lakes, case: tuple[str, str]) -> None:
    assert lakes[1][case].returncode == -signal.SIGKILL


def test_refine_killed_between_commits_committed_one_table_and_left_the_rest_as_they_were(lakes) -> None:
    crash = lakes[1][("refine", "between")]
    moved = [t for t in WRITES["refine"] if crash.versions_after_kill[t] != crash.versions_before[t]]
    assert len(moved) == 1  # the first commit (the orders' quarantine); nothing after it
    assert all(v is None for t, v in crash.versions_before.items())


@pytest.mark.parametrize("case", [c for c in CASES if c[1] != "between"], ids="-".join)
def test_a_write_killed_before_its_commit_is_done_changes_no_table(lakes, case: tuple[str, str]) -> None:
    crash = lakes[1][case]
    assert crash.versions_after_kill == crash.versions_before
    assert all(rows >= 0 for rows in crash.readable_after_kill.values())  # every earlier version still reads


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_running_the_killed_stage_again_gives_the_tables_of_an_uninterrupted_run(lakes, case: tuple[str, str]) -> None:
    reference, crashes, _ = lakes
    for table in WRITES[case[0]]:
        _assert_same_table(reference, crashes[case].lake, table)


def test_the_half_written_files_stay_out_of_the_table(lakes) -> None:
    killed = lakes[1][("features", "writing")].lake
    table_dir = Path(killed.uri("gold.customer_features").removeprefix("file://").removeprefix("file:"))
    half = [p for p in table_dir.rglob("part-*.parquet") if "_temporary" in p.parts]
    assert half  # the kill came while Spark was writing
    assert not any("_temporary" in f for f in killed.read("gold.customer_features").inputFiles())
    during = lakes[1][("features", "during")].lake
    log = Path(during.uri("gold.customer_features").removeprefix("file://").removeprefix("file:")) / "_delta_log"
    assert list(log.glob("_commit_*.json.tmp"))  # the cut-short commit is on disk, and ignored


def test_two_refines_at_once_lose_nothing_and_the_loser_is_told_to_retry(lakes) -> None:
    reference, _, race = lakes
    for outcome in race.outcomes:
        assert outcome == "ok" or (outcome.startswith("lake error:") and "re-running the stage is safe" in outcome), outcome
    for table in WRITES["refine"]:
        _assert_same_table(reference, race.lake, table)


def _assert_same_table(reference: Lake, other: Lake, table: str) -> None:
    expected, actual = reference.read(table), other.read(table)
    drop = [c for c in ("_ingest_batch_id", "_source_file") if c in expected.columns]
    expected, actual = expected.drop(*drop), actual.drop(*drop)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True)
