"""Helper for tests/test_crash_points.py: one stage that dies by SIGKILL at a chosen point of a write
(or, with :func:`arm` and :func:`abort`, stops in-process at that point, leaving the same files).

Usage: ``python tests/killed_stage.py <config-file> <stage> <as-of> <point>``, points:

* ``writing``: Spark is writing the stage's first data files (a part file half written under
  the output's ``_temporary`` folder, as a killed task leaves it);
* ``committing``: the first write's files are complete, its commit has not begun;
* ``during``: the first commit is being written (a half-written temporary commit file in the
  table's ``_delta_log``, as a writer killed inside its commit leaves it; the commit is not done);
* ``between``: the stage's first table is committed, the next commit has not begun.

Exits 3 if the stage finished without reaching its kill point (the parent test then fails).
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql.readwriter import DataFrameWriter

from crm_spark.config import load_settings
from crm_spark.errors import CrmSparkError
from crm_spark.lake import open_lake
from crm_spark.lake.embedded import EmbeddedLake
from crm_spark.session import build_session
from crm_spark.stages import StageContext, run_stage


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Aborted(BaseException):
    """The in-process stand-in for SIGKILL: no ``except Exception`` of the stage or the lake
    catches it, so the files on disk are left as a killed process leaves them."""


def abort() -> None:
    raise Aborted


Patch = Callable[[Any, str, Any], None]


def arm(point: str, die: Callable[[], None] = _die, patch: Patch = setattr) -> None:
    """Make the next write die at ``point`` (``die``: SIGKILL here, or :func:`abort` in-process;
    ``patch``: ``setattr``, or a monkeypatch's, which undoes it)."""
    commit, create = EmbeddedLake._commit, EmbeddedLake._create

    def half_written(self: DataFrameWriter, path: str, *args: Any, **kwargs: Any) -> None:
        task = Path(path.removeprefix("file://").removeprefix("file:")) / "_temporary" / "0" / "_temporary" / "attempt_0"
        task.mkdir(parents=True)
        (task / "part-00000.snappy.parquet").write_bytes(b"PAR1" + os.urandom(2048))  # no footer yet
        die()

    def half_committed(self: EmbeddedLake, table: str) -> None:
        log = Path(self.uri(table).removeprefix("file://").removeprefix("file:")) / "_delta_log"
        log.mkdir(parents=True, exist_ok=True)
        (log / f"_commit_{uuid.uuid4()}.json.tmp").write_text('{"commitInfo":{"timestamp":1')  # cut short
        die()

    calls = {"n": 0}

    def second(real: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] > 1:
                die()
            return real(*args, **kwargs)

        return step

    if point == "writing":
        patch(DataFrameWriter, "parquet", half_written)
    elif point == "committing":
        patch(EmbeddedLake, "_commit", lambda *_a, **_k: die())
        patch(EmbeddedLake, "_create", lambda *_a, **_k: die())
    elif point == "during":
        patch(EmbeddedLake, "_commit", lambda self, dt, table, *_a, **_k: half_committed(self, table))
        patch(EmbeddedLake, "_create", lambda self, table, *_a, **_k: half_committed(self, table))
    elif point == "between":
        patch(EmbeddedLake, "_commit", second(commit))
        patch(EmbeddedLake, "_create", second(create))
    else:
        raise ValueError(f"no kill point {point!r}")


def main(config: str, stage: str, as_of: str, point: str) -> None:
    settings = load_settings(config_file=Path(config))
    spark = build_session(settings)
    ctx = StageContext(settings=settings, spark=spark, lake=open_lake(spark, settings),
                       as_of=date.fromisoformat(as_of) if as_of != "-" else None)
    arm(point)
    try:
        run_stage(ctx, stage)
    except CrmSparkError as exc:
        print(f"error: {exc}", flush=True)
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(3)


if __name__ == "__main__":
    main(*sys.argv[1:5])
