"""``crm-spark`` as a user runs it: a subprocess in the project folder. None of these start Spark:
help, config errors and not-built stages all fail (or finish) before a session is built."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crm_spark.stages import STAGES

PROJECT = Path(__file__).resolve().parents[1]
SPEC_STAGES = ["ingest", "refine", "features", "segment", "basket", "churn", "recommend", "clv", "report"]
SCRIPT = Path(sys.executable).with_name("crm-spark")


def crm_spark(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "crm_spark.cli"]
    env = {k: v for k, v in os.environ.items() if k not in {"CRM_SPARK_ENV", "CRM_SPARK_CONF_DIR"}}
    return subprocess.run(
        [*command, *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def not_built_stage() -> str:
    pending = [s.name for s in STAGES if not s.built]
    if not pending:
        pytest.skip("every stage is built; no not-built stage to run")
    return pending[0]


def test_help_lists_every_stage_run_generate_and_demo() -> None:
    result = crm_spark("--help")

    assert result.returncode == 0
    listed = set(re.findall(r"^    (\w+)\s", result.stdout, flags=re.MULTILINE))
    assert listed == {*SPEC_STAGES, "run", "generate", "demo"}


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


def test_a_stage_not_built_yet_exits_2_with_one_line() -> None:
    name = not_built_stage()

    result = crm_spark(name)

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"crm-spark: not built: stage '{name}' is not built yet")
    assert "Traceback" not in result.stderr


def test_run_refuses_an_explicit_stage_that_is_not_built() -> None:
    name = not_built_stage()

    result = crm_spark("run", "--stages", name)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"crm-spark: not built: stages {name} are not built yet in this version"]


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
