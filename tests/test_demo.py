"""``crm-spark demo`` (what ``make run`` calls): generate the demo dataset unless the raw zone holds
one, then every built stage, in the one Spark application. The stages themselves are the shared
end-to-end run's business; here generation and the run are recorded, not executed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import logging

import pytest

from crm_spark import cli
from crm_spark.stages import STAGES


@pytest.fixture
def recorded(spark, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    calls: dict[str, Any] = {}
    sessions: list[Any] = []
    monkeypatch.setattr("crm_spark.session.build_session",
                        lambda settings, preload=(): calls.update(preload=preload) or sessions.append(spark) or spark)
    monkeypatch.setattr(cli, "_generate", lambda session, options: calls.update(generated=(session, options)))

    def run(args: Any, settings: Any, names: list[str], pending: Any = (), entry: str = "run", spark: Any = None) -> int:
        calls.update(ran=names, pending=list(pending), raw=settings.paths.raw, run_session=spark)
        return 0

    monkeypatch.setattr(cli, "_run", run)
    calls["sessions"] = sessions
    logger = logging.getLogger("crm_spark")  # cli.main configures it for a terminal: put it back after
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield calls
    logger.handlers[:], logger.level, logger.propagate = saved


def _demo(tmp_path: Path, *args: str) -> int:
    return cli.main(["demo", "--raw", str(tmp_path / "raw"), "--lake", str(tmp_path / "lake"), *args])


def test_demo_generates_into_an_empty_raw_zone_then_runs_every_built_stage(
    spark, recorded: dict[str, Any], tmp_path: Path
) -> None:
    assert _demo(tmp_path, "--customers", "300", "--seed", "11") == 0

    session, options = recorded["generated"]
    assert session is spark
    assert options["out"] == str(tmp_path / "raw")
    assert (options["customers"], options["seed"]) == (300, 11)
    assert recorded["ran"] == [s.name for s in STAGES if s.built]
    assert recorded["pending"] == [s.name for s in STAGES if not s.built]
    assert len(recorded["sessions"]) == 1 and recorded["run_session"] is spark  # one session for both
    # Imported while the JVM starts: the gates' Great Expectations, and MLflow and matplotlib for the models.
    assert recorded["preload"] == ("crm_spark.quality", "mlflow", "matplotlib.figure")


def test_demo_uses_a_dataset_already_generated_and_says_when_it_is_not_the_size_asked(
    spark, recorded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth, customers = tmp_path / "raw" / "_truth", tmp_path / "raw" / "customers"
    truth.mkdir(parents=True)
    customers.mkdir()
    (truth / "manifest.json").write_text('{"customers": 2000, "seed": 7}\n')
    (customers / "customers-2024-01.csv").write_text("customer_id\n")

    assert _demo(tmp_path, "--seed", "7") == 0
    assert "generated with" not in capsys.readouterr().err
    assert _demo(tmp_path, "--customers", "20000", "--seed", "7") == 0
    assert "was generated with customers 2000, not customers 20000: running on it as it is" in capsys.readouterr().err

    assert "generated" not in recorded
    assert recorded["ran"] == [s.name for s in STAGES if s.built]


def test_demo_refuses_a_size_below_the_generator_minimum(spark, recorded: dict[str, Any], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert _demo(tmp_path, "--customers", "50") == 3

    assert "--customers must be at least 100, got 50" in capsys.readouterr().err
    assert "ran" not in recorded


def test_demo_runs_on_files_a_user_put_in_the_raw_zone(spark, recorded: dict[str, Any], tmp_path: Path) -> None:
    orders = tmp_path / "raw" / "orders"
    orders.mkdir(parents=True)
    (orders / "orders-2025-01.csv").write_text("order_id,customer_id\n")

    assert _demo(tmp_path) == 0

    assert "generated" not in recorded
    assert recorded["ran"] == [s.name for s in STAGES if s.built]


def test_demo_refuses_a_dataset_an_interrupted_generate_left(spark, recorded: dict[str, Any], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "raw" / "customers").mkdir(parents=True)
    (tmp_path / "raw" / "customers" / "customers-2024-01.csv").write_text("customer_id\n")
    (tmp_path / "raw" / "_generate_tmp" / "orders").mkdir(parents=True)

    assert _demo(tmp_path) == 4

    assert "interrupted generate left half-written" in capsys.readouterr().err
    assert "generated" not in recorded and "ran" not in recorded
