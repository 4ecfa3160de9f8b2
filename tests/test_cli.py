"""``crm-spark`` as a user runs it: a subprocess in the project folder. None of these start Spark:
help, config errors and not-built stages all fail (or finish) before a session is built."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SPEC_STAGES = ["ingest", "refine", "features", "segment", "basket", "churn", "recommend", "clv", "report"]
SCRIPT = Path(sys.executable).with_name("crm-spark")


def crm_spark(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "crm_spark.cli"]
    env = {k: v for k, v in os.environ.items() if k not in {"CRM_SPARK_ENV", "CRM_SPARK_CONF_DIR"}}
    return subprocess.run(
        [*command, *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def in_project(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """main() called in this process, in the project folder, its logging set-up undone after."""
    monkeypatch.chdir(PROJECT)
    logger = logging.getLogger("crm_spark")  # main() points the package logger at the captured stderr
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def not_built(monkeypatch: pytest.MonkeyPatch, in_project: None) -> str:
    """The report stage declared as not built (every stage is built now; the declarations still allow it)."""
    import crm_spark.cli as cli
    import crm_spark.stages as stages

    declared = tuple(dataclasses.replace(s, module=None) if s.name == "report" else s for s in stages.STAGES)
    monkeypatch.setattr(stages, "STAGES", declared)
    monkeypatch.setattr(cli, "STAGES", declared)
    return "report"


def test_help_lists_every_stage_run_generate_demo_and_vacuum() -> None:
    result = crm_spark("--help")

    assert result.returncode == 0
    listed = set(re.findall(r"^    (\w+)\s", result.stdout, flags=re.MULTILINE))
    assert listed == {*SPEC_STAGES, "run", "generate", "demo", "vacuum"}


def test_no_command_prints_usage_and_exits_2() -> None:
    result = crm_spark()

    assert result.returncode == 2
    assert "usage: crm-spark" in result.stderr


def test_a_broken_config_is_one_line_naming_the_key_and_exits_3() -> None:
    result = crm_spark("--config", "conf/broken.yaml", "ingest")

    assert result.returncode == 3
    assert result.stderr.splitlines() == ["crm-spark: config error: unknown key 'lake.engin' in conf/broken.yaml"]
    assert result.stdout == ""


def test_options_are_accepted_after_the_command_too() -> None:
    result = crm_spark("ingest", "--config", "conf/broken.yaml")

    assert result.returncode == 3
    assert result.stderr.splitlines() == ["crm-spark: config error: unknown key 'lake.engin' in conf/broken.yaml"]


def test_verbose_adds_the_traceback() -> None:
    result = crm_spark("--verbose", "--config", "conf/broken.yaml", "ingest")

    assert result.returncode == 3
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "ConfigError" in result.stderr
    assert result.stderr.splitlines()[-1] == "crm-spark: config error: unknown key 'lake.engin' in conf/broken.yaml"


def test_a_stage_not_built_yet_exits_2_with_one_line(not_built: str, capsys: pytest.CaptureFixture[str]) -> None:
    from crm_spark.cli import main

    code = main([not_built])

    err = capsys.readouterr().err
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"crm-spark: not built: stage '{not_built}' is not built yet")
    assert "Traceback" not in err


class _Jvm:
    """Stands for the gateway pyspark launched, with its JVM process exited with ``status``."""

    def __init__(self, status: int | None) -> None:
        self.proc = self
        self.returncode = status

    def poll(self) -> int | None:
        return self.returncode


class _NoText(Exception):
    """A py4j error whose text is fetched from the JVM: gone, so reading it fails too."""

    def __str__(self) -> str:
        raise ConnectionRefusedError(111, "Connection refused")


def _stage_failing_with(exc: Exception):  # noqa: ANN202
    def stage(args: object, settings: object) -> int:
        raise exc
    return stage


def test_a_spark_jvm_that_ran_out_of_memory_is_one_line_naming_the_setting_and_exits_7(
    in_project: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyspark

    import crm_spark.cli as cli

    monkeypatch.setattr(cli, "_cmd_stage", _stage_failing_with(_NoText()))
    monkeypatch.setattr(pyspark.SparkContext, "_gateway", _Jvm(cli.SPARK_EXIT_OOM))

    code = cli.main(["recommend"])

    assert code == 7
    assert capsys.readouterr().err.splitlines() == [
        "crm-spark: environment error: the Spark JVM ran out of memory (java.lang.OutOfMemoryError) and exited: "
        "raise spark.driver.memory (the config has 4g; in local mode the executors share the driver's JVM) or run "
        "on a cluster; the tables of the stages that finished stand"]


def test_an_error_whose_text_cannot_be_read_is_still_one_line(
    in_project: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyspark

    import crm_spark.cli as cli

    monkeypatch.setattr(cli, "_cmd_stage", _stage_failing_with(_NoText()))
    monkeypatch.setattr(pyspark.SparkContext, "_gateway", _Jvm(None))  # running: the failure is something else

    code = cli.main(["recommend"])

    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        "crm-spark: unexpected error: _NoText: (no message)", "crm-spark: rerun with --verbose for the traceback"]


def test_run_refuses_an_explicit_stage_that_is_not_built(not_built: str, capsys: pytest.CaptureFixture[str]) -> None:
    from crm_spark.cli import main

    code = main(["run", "--stages", not_built])

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"crm-spark: not built: stages {not_built} are not built yet in this version"]


def test_run_refuses_an_unknown_stage_name() -> None:
    result = crm_spark("run", "--stages", "ingest,teleport")

    assert result.returncode == 3
    assert result.stderr.splitlines()[-1].startswith("crm-spark: config error: unknown stages teleport;")


def test_an_unknown_env_exits_3() -> None:
    result = crm_spark("--env", "nope", "ingest")

    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("crm-spark: config error: unknown env 'nope': ")
    assert "known: " in lines[0] and "local" in lines[0]


def test_a_malformed_as_of_date_is_a_usage_error() -> None:
    result = crm_spark("ingest", "--as-of", "2024-13-01")

    assert result.returncode == 2
    assert "'2024-13-01' is not a date in YYYY-MM-DD form" in result.stderr


def test_the_summary_lists_an_unchanged_stage_with_its_tables() -> None:
    import io

    from crm_spark.cli import _summary
    from crm_spark.stages import StageResult

    out = io.StringIO()
    unchanged = StageResult("segment", unchanged={"gold.customer_segments": 3, "gold.segment_profiles": 3},
                            metrics={"k": 4.0, "silhouette": 0.449}, mlflow_run_id="abc",
                            notes=("unchanged: ... --force runs it again",))
    _summary(out, [unchanged], 1.0, pending=())
    text = out.getvalue()
    assert re.search(r"segment\s+\|?\s*unchanged\s+\|?\s*gold.customer_segments\s+\|?\s*3", text), text
    assert "gold.segment_profiles" in text and "(nothing written)" not in text
    assert "--force" in text


def test_force_is_a_global_option() -> None:
    result = crm_spark("segment", "--force", "--config", "conf/broken.yaml")

    assert result.returncode == 3  # parsed; the broken config stops it before Spark
