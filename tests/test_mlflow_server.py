"""A model stage tracked by a real MLflow tracking server backed by PostgreSQL.

PostgreSQL (Debian's `postgresql`, installed with apt-get when missing) and `mlflow server` (with
a local artifact root it proxies) are started on loopback; the churn stage runs on a copy of the
end-to-end lake with `MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`, and its run, the registered
model and its `champion` alias are read back through the server, the run's row from the database
itself and its artifacts from the server's artifact root."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import E2E_END, EndToEnd
from services import apt_install, free_port, start, stop, wait_until

from crm_spark.config import PathsSettings
from crm_spark.lake import open_lake
from crm_spark.stages import StageContext, run_stage
from crm_spark.stages.churn import CHAMPION, MODEL_NAME

pytestmark = [pytest.mark.slow]

PASSWORD = "crm-spark-test"


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@dataclass
class Postgres:
    uri: str
    dsn: str


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database ``mlflow`` owned by ``mlflow``."""
    apt_install(["postgresql"], present=lambda: _pg_bin() is not None)
    bin_dir = _pg_bin()
    assert bin_dir is not None
    # initdb refuses to run as root: as root the cluster belongs to the package's `postgres` user, in
    # a folder under /tmp that user can reach.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="crm-spark-pg-"))
    if as_user:
        shutil.chown(home, "postgres")
    (home / "pw").write_text(PASSWORD)
    if as_user:
        shutil.chown(home / "pw", "postgres")
    init = subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(home / "db"), "-U", "mlflow",
                           f"--pwfile={home / 'pw'}", "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert init.returncode == 0, init.stderr[-2000:]
    port, log = free_port(), home / "postgres.log"
    if as_user:
        log.touch()
        shutil.chown(log, "postgres")
    server = start([*as_user, str(bin_dir / "postgres"), "-D", str(home / "db"), "-h", "127.0.0.1", "-p", str(port),
                    "-k", str(home), "-c", "fsync=off"], log)
    env = {**os.environ, "PGPASSWORD": PASSWORD}

    def ready() -> bool:
        return subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True, check=False).returncode == 0

    try:
        wait_until(ready, procs=[server], timeout=60, what="PostgreSQL", log=log)
        created = subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                                 env=env, capture_output=True, text=True, timeout=60, check=False)
        assert created.returncode == 0, created.stderr
        dsn = f"host=127.0.0.1 port={port} dbname=mlflow user=mlflow password={PASSWORD}"
        yield Postgres(f"postgresql+psycopg://mlflow:{PASSWORD}@127.0.0.1:{port}/mlflow", dsn)
    finally:
        stop(server, sig=signal.SIGINT)  # PostgreSQL's fast shutdown
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Server:
    url: str
    artifacts: Path


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("mlflow_server")
    port, log = free_port(), work / "mlflow.log"
    url = f"http://127.0.0.1:{port}"
    proc = start([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                  "--workers", "1", "--backend-store-uri", postgres.uri,
                  "--artifacts-destination", (work / "artifacts").as_uri()], log)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, procs=[proc], timeout=180, what="mlflow server", log=log)
        yield Server(url, work / "artifacts")
    finally:
        stop(proc)


def test_churn_run_model_and_champion_read_back_through_the_server(
    spark, e2e: EndToEnd, postgres: Postgres, mlflow_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg
    from mlflow import MlflowClient

    lake_root = tmp_path / "lake"
    shutil.copytree(e2e.lake.root, lake_root, ignore=shutil.ignore_patterns("_mlflow", "_reports"))
    # The tracking is under test, not the model: no GBT challenger.
    churn = e2e.settings.churn.model_copy(update={"challenger": "none"})
    settings = e2e.settings.model_copy(update={"paths": PathsSettings(raw=str(e2e.raw), lake=str(lake_root)),
                                               "churn": churn})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("CRM_SPARK_PII_KEY", "end-to-end-test-key")
    ctx = StageContext(settings=settings, spark=spark, lake=open_lake(spark, settings), as_of=E2E_END)
    assert ctx.tracker.uri == mlflow_server.url

    result = run_stage(ctx, "churn")

    assert not result.skipped and not result.unchanged and result.mlflow_run_id
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    aucs = {k: v for k, v in run.data.metrics.items() if k.endswith(".roc_auc") and not k.startswith("baseline")}
    assert aucs and 0.6 < max(aucs.values()) <= 1.0, run.data.metrics
    assert run.data.tags["crm_spark.as_of"] == E2E_END.isoformat()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert champion.run_id == result.mlflow_run_id
    assert client.get_registered_model(MODEL_NAME).aliases[CHAMPION] == champion.version

    # The rows live in PostgreSQL, and the artifacts under the server's artifact root, uploaded through it.
    with psycopg.connect(postgres.dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (result.mlflow_run_id,))
        assert cursor.fetchone() == ("FINISHED",)
        cursor.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (MODEL_NAME,))
        assert cursor.fetchall() == [(CHAMPION, int(champion.version))]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = [p for p in mlflow_server.artifacts.rglob("*") if p.is_file()]
    assert stored and any(p.suffix == ".png" for p in stored), stored[:5]
    assert client.list_artifacts(result.mlflow_run_id)
