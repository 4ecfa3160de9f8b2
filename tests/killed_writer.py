"""Helper for tests/test_lake.py: a writer that dies by SIGKILL between writing files and committing.

Usage: ``python tests/killed_writer.py <lake-root> <table>``. Builds its own session from the test
overlay, makes the embedded engine's commit step kill the process, then appends two rows
(order_id 10 and 11). The parent test checks what that left on disk and in the table.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import date
from pathlib import Path

from crm_spark.config import load_settings
from crm_spark.lake.embedded import EmbeddedLake
from crm_spark.session import build_session

TEST_CONF = Path(__file__).parent / "conf" / "test.yaml"
ORDERS_DDL = "order_id BIGINT, customer_id STRING, amount_eur DOUBLE, order_date DATE"


def _die(*_args: object, **_kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(lake_root: str, table: str) -> None:
    settings = load_settings(config_file=TEST_CONF, overrides={"paths.lake": lake_root})
    spark = build_session(settings)
    lake = EmbeddedLake(spark, lake_root)
    EmbeddedLake._commit = _die  # type: ignore[method-assign]  # the atomic step never happens
    frame = spark.createDataFrame(
        [(10, "c10", 100.0, date(2024, 3, 9)), (11, "c11", 110.0, date(2024, 3, 9))], ORDERS_DDL
    )
    lake.append(table, frame)
    raise SystemExit("the commit step returned: the kill did not happen")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
