"""Helper for tests/test_crash_points.py: one stage that dies by SIGKILL at a chosen point of a write.

Usage: ``python tests/killed_stage.py <config-file> <stage> <as-of> <point>``, points:

* ``writing``: Spark is writing the stage's first data files (a part file half written under
  the output's ``_temporary`` folder, as a killed task leaves it);
* ``committing``: the first write's files are complete, its commit has not begun;
* ``between``: the stage's first table is committed, the next commit has not begun.

Exits 3 if the stage finished without reaching the point (the parent test then fails).
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql.readwriter import DataFrameWriter

from crm_spark.config import load_settings
from crm_spark.lake import open_lake
from crm_spark.lake.embedded import EmbeddedLake
from crm_spark.session import build_session
from crm_spark.stages import StageContext, run_stage


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _while_writing() -> None:
    def half_written(self: DataFrameWriter, path: str, *args: Any, **kwargs: Any) -> None:
        task = Path(path.removeprefix("file://").removeprefix("file:")) / "_temporary" / "0" / "_temporary" / "attempt_0"
        task.mkdir(parents=True)
        (task / "part-00000.snappy.parquet").write_bytes(b"PAR1" + os.urandom(2048))  # no footer yet
        _die()

    DataFrameWriter.parquet = half_written  # type: ignore[method-assign]


def _before_commit() -> None:
    EmbeddedLake._commit = lambda *_a, **_k: _die()  # type: ignore[method-assign]
    EmbeddedLake._create = lambda *_a, **_k: _die()  # type: ignore[method-assign]


def _between_commits() -> None:
    calls = {"n": 0}
    commit, create = EmbeddedLake._commit, EmbeddedLake._create

    def once(real: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] > 1:
                _die()
            return real(*args, **kwargs)

        return step

    EmbeddedLake._commit, EmbeddedLake._create = once(commit), once(create)  # type: ignore[method-assign]


POINTS = {"writing": _while_writing, "committing": _before_commit, "between": _between_commits}


def main(config: str, stage: str, as_of: str, point: str) -> None:
    settings = load_settings(config_file=Path(config))
    spark = build_session(settings)
    ctx = StageContext(settings=settings, spark=spark, lake=open_lake(spark, settings),
                       as_of=date.fromisoformat(as_of) if as_of != "-" else None)
    POINTS[point]()
    run_stage(ctx, stage)
    raise SystemExit(3)


if __name__ == "__main__":
    main(*sys.argv[1:5])
