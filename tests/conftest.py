"""Shared fixtures: one SparkSession for the whole test session, built by the session factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_spark.config import Settings, load_settings
from crm_spark.session import build_session

TEST_CONF = Path(__file__).parent / "conf" / "test.yaml"


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("crm")
    return load_settings(
        config_file=TEST_CONF,
        overrides={"paths.raw": str(root / "raw"), "paths.lake": str(root / "lake")},
    )


@pytest.fixture(scope="session")
def spark(settings: Settings):
    """local[2], 2 shuffle partitions, UI off, UTC. Tests never stop it."""
    return build_session(settings)
