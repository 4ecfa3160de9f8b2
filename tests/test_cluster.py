"""The jobs under spark-submit on a real Spark standalone cluster (master + one worker on loopback,
started from the pip package's own scripts): `jobs/generate.py` writes a small dataset through the
cluster's executor and `jobs/pipeline.py` ingests and refines it into the lake with the `cluster`
env. Processes are started here and stopped by their ids.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest
from deltalake import DeltaTable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cluster,
    # Opt-in: on this 2-core machine the refine gates run pathologically slowly on the standalone
    # cluster (one 544-row silver.order_items gate took 150 s against ~2 s embedded), so the run
    # takes over 15 minutes; under investigation (see the README's troubleshooting section).
    pytest.mark.skipif(os.environ.get("CRM_SPARK_CLUSTER_TESTS") != "1",
                       reason="cluster tests are opt-in: set CRM_SPARK_CLUSTER_TESTS=1 (slow on 2 cores)"),
]

ROOT = Path(__file__).resolve().parent.parent
SPARK_HOME = Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}
    return subprocess.Popen(
        [str(SPARK_HOME / "bin" / "spark-class"), *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env=env, start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """spark://127.0.0.1:<port> with one alive worker (1 core, 2 GiB)."""
    logs = tmp_path_factory.mktemp("cluster_logs")
    port, ui = _free_port(), _free_port()
    master = _start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                     "--webui-port", str(ui)], logs / "master.log")
    url = f"spark://127.0.0.1:{port}"
    worker = _start(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
                     "--memory", "2g", "--webui-port", str(_free_port()), "--work-dir", str(logs / "work")],
                    logs / "worker.log")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as response:
                    if json.load(response).get("aliveworkers", 0) >= 1:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or master.poll() is not None or worker.poll() is not None:
                pytest.fail(f"the standalone cluster did not come up; logs in {logs}")
            time.sleep(1)
        yield url
    finally:
        _stop(worker)
        _stop(master)


def _submit(cluster: str, job: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "CRM_SPARK_PII_KEY": "cluster-test-key",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster, "--conf", "spark.ui.enabled=false",
        "--conf", "spark.sql.shuffle.partitions=2", "--driver-memory", "2g", "--executor-memory", "1g",
        str(ROOT / "jobs" / job), "--env", "cluster", *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_generate_and_pipeline_jobs_run_under_spark_submit(cluster: str, tmp_path: Path) -> None:
    raw, lake = tmp_path / "raw", tmp_path / "lake"

    generated = _submit(cluster, "generate.py", "--customers", "150", "--seed", "3", "--out", str(raw),
                        "--start", "2025-01-01", "--end", "2025-03-31")
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert (raw / "_truth" / "archetypes.csv").exists()

    piped = _submit(cluster, "pipeline.py", "--stages", "ingest,refine", "--raw", str(raw), "--lake", str(lake))
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "Summary" in piped.stdout
    with (raw / "_truth" / "archetypes.csv").open() as handle:
        customers = sum(1 for _ in handle) - 1
    silver = DeltaTable(str(lake / "silver" / "customers")).to_pyarrow_table()
    assert silver.num_rows == customers
    orders = DeltaTable(str(lake / "silver" / "orders")).to_pyarrow_table()
    assert orders.num_rows > 0
