"""MLflow tracking for every model stage.

One experiment per stage (``crm-spark/<stage>``), run names carry the as-of date. Every run
logs: params, the as-of date, the Delta version of each input table, the git commit, the
config (secrets masked), the data-quality summary, figures and the fitted Spark model with a
registered model version. The tracking URI is ``$MLFLOW_TRACKING_URI``, else
``tracking.uri`` from config, else a SQLite database under ``<lake>/_mlflow/`` (the file store
is deprecated in MLflow 3).

A new SQLite store starts as a copy of an empty, fully migrated MLflow schema kept in the user's
cache (``$XDG_CACHE_HOME/crm-spark`` or ``~/.cache/crm-spark``, one file per MLflow version):
MLflow would otherwise run its whole Alembic migration chain for every new lake, 2.5-4 s each.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from crm_spark.config import Settings
from crm_spark.errors import ConfigError

log = logging.getLogger(__name__)
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _local_lake(settings: Settings) -> Path | None:
    lake = settings.paths.lake
    if lake.startswith("file://"):
        lake = lake[len("file://") :]
    return None if "://" in lake else Path(lake)


def tracking_uri(settings: Settings) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if settings.tracking.uri:
        return settings.tracking.uri.get_secret_value()
    lake = _local_lake(settings)
    if lake is None:
        raise ConfigError(
            "tracking.uri is not set and the lake is not on a local path: set tracking.uri "
            "(e.g. http://mlflow:5000) or MLFLOW_TRACKING_URI"
        )
    (lake / "_mlflow").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{_default_store(lake)}"


def _default_store(lake: Path) -> Path:
    return (lake / "_mlflow" / "mlflow.db").resolve()


def _schema_template() -> Path | None:
    """An empty SQLite database at this MLflow version's schema head (made once, then cached)."""
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crm-spark"
    template = cache / f"mlflow-{mlflow.__version__}-schema.db"
    if template.exists():
        return template
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as work:
            db = Path(work) / "schema.db"
            uri = f"sqlite:///{db}"
            mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
            with sqlite3.connect(db) as con:  # MLflow makes the Default experiment when it opens a store without one
                con.execute("DELETE FROM experiments")
            con.close()
            os.replace(db, template)  # atomic: a concurrent maker's file is the same schema
    except (OSError, sqlite3.Error) as exc:
        log.debug("no MLflow schema template (%s): new stores migrate from scratch", exc)
        return None
    return template


def _seed_from_schema_template(db: Path) -> None:
    """Start a new store at ``db`` as a copy of the schema template (never over an existing file)."""
    if db.exists():
        return
    template = _schema_template()
    if template is None:
        return
    partial = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, partial)
        os.link(partial, db)  # fails if another process created the store meanwhile
    except OSError:
        pass
    finally:
        partial.unlink(missing_ok=True)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


class Tracker:
    """MLflow set up from config; the only module that talks to MLflow."""

    def __init__(self, settings: Settings) -> None:
        import mlflow

        self.settings = settings
        self.uri = tracking_uri(settings)
        lake = _local_lake(settings)
        store = _default_store(lake) if lake is not None else None
        if store is not None and self.uri == f"sqlite:///{store}":  # the lake's own store, not a configured one
            _seed_from_schema_template(store)
        self._mlflow = mlflow
        self._stage: str | None = None
        self._as_of: date | None = None
        self._activate()

    def _activate(self) -> None:
        """Point MLflow's fluent API (start_run, log_*, registry) at this tracker's store.

        ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` (and the registry
        variable); that export is undone, or it would pass for the user's override when a later
        Tracker of another lake (tests, notebooks) resolves its URI, and log to this store.
        """
        saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        self._mlflow.set_tracking_uri(self.uri)
        self._mlflow.set_registry_uri(self.uri)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self, stage: str) -> str:
        self._activate()
        name = f"{self.settings.tracking.experiment_prefix}/{stage}"
        found = self._mlflow.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        artifact_location = None
        lake = _local_lake(self.settings)
        if self.uri.startswith("sqlite:") and lake is not None:
            artifact_location = (lake / "_mlflow" / "artifacts" / stage).resolve().as_uri()
        return str(self._mlflow.create_experiment(name, artifact_location=artifact_location))

    @contextmanager
    def start_run(
        self,
        stage: str,
        *,
        as_of: date,
        inputs: Mapping[str, int],
        params: Mapping[str, Any] | None = None,
        quality: Mapping[str, Any] | None = None,
    ) -> Iterator[Any]:
        """An MLflow run with the lineage every model run carries; yields the active run."""
        mlflow = self._mlflow
        with mlflow.start_run(experiment_id=self.experiment_id(stage), run_name=f"{stage}-{as_of.isoformat()}") as run:
            self._stage, self._as_of = stage, as_of
            mlflow.set_tags(
                {
                    "crm_spark.stage": stage,
                    "crm_spark.as_of": as_of.isoformat(),
                    "crm_spark.env": self.settings.env,
                    "mlflow.source.git.commit": git_commit(),
                }
            )
            mlflow.log_params({"as_of": as_of.isoformat(), **{f"input.{t}.version": v for t, v in inputs.items()}})
            if params:
                mlflow.log_params({k: _param(v) for k, v in params.items()})
            mlflow.log_dict(self.settings.public_dict(), "config.json")
            mlflow.log_dict(dict(inputs), "inputs.json")
            if quality:
                mlflow.log_dict(dict(quality), "quality.json")
                numeric = {f"quality.{k}": float(v) for k, v in quality.items() if isinstance(v, (int, float))}
                if numeric:
                    mlflow.log_metrics(numeric)
            try:
                yield run
            finally:
                self._stage, self._as_of = None, None
            log.info("mlflow run %s (%s) logged to %s", run.info.run_id, f"{stage}-{as_of}", self.uri)

    def log_figure(self, fig: Any, filename: str) -> Path | None:
        """Log a matplotlib figure to the active run and keep a PNG under ``<lake>/_reports/figures``
        (rendered once: the PNG kept is the one logged)."""
        lake = _local_lake(self.settings)
        if lake is None or self._stage is None or self._as_of is None:
            self._mlflow.log_figure(fig, f"figures/{filename}", save_kwargs={"dpi": 110, "bbox_inches": "tight"})
            return None
        out = lake / "_reports" / "figures" / self._stage / self._as_of.isoformat() / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110, bbox_inches="tight")
        self._mlflow.log_artifact(str(out), artifact_path="figures")
        return out

    def log_json(self, data: Any, filename: str) -> None:
        self._mlflow.log_text(json.dumps(data, indent=2, default=str), filename)

    def log_text(self, text: str, filename: str) -> None:
        self._mlflow.log_text(text, filename)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    # -- reading runs back (the report) -------------------------------------------------------
    def find_run(self, stage: str, *, run_id: str | None = None, as_of: date | None = None) -> Any | None:
        """The run ``run_id``, else the latest run of ``stage`` tagged with ``as_of`` (None: none logged)."""
        if run_id:
            return self.client.get_run(run_id)
        return self._latest(stage, f"tags.`crm_spark.as_of` = '{as_of.isoformat()}'" if as_of is not None else "")

    def find_tagged(self, stage: str, key: str, value: str) -> Any | None:
        """The latest run of ``stage`` whose tag ``key`` is ``value`` (None: none logged)."""
        return self._latest(stage, f"tags.`{key}` = '{value}'")

    def _latest(self, stage: str, query: str) -> Any | None:
        """The latest run of ``stage``'s experiment matching ``query`` (an MLflow filter string)."""
        experiment = self.client.get_experiment_by_name(f"{self.settings.tracking.experiment_prefix}/{stage}")
        if experiment is None:
            return None
        runs = self.client.search_runs([experiment.experiment_id], filter_string=query,
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def alias_version(self, registered_model: str, alias: str) -> int | None:
        """The version ``alias`` points at (None when unset), without loading the model."""
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(registered_model, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def figures(self, run_id: str) -> dict[str, bytes]:
        """The PNG figures a run logged (``figures/*.png``), by file name."""
        from mlflow.artifacts import download_artifacts

        if not any(f.path.endswith(".png") for f in self.client.list_artifacts(run_id, "figures")):
            return {}
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in a job's log
        with tempfile.TemporaryDirectory(prefix="crm_spark_figures_") as tmp:
            local = Path(download_artifacts(run_id=run_id, artifact_path="figures", dst_path=tmp, tracking_uri=self.uri))
            return {p.name: p.read_bytes() for p in sorted(local.glob("*.png"))}

    # -- model registry ---------------------------------------------------------------------
    def model_by_alias(self, registered_model: str, alias: str) -> tuple[int, Any] | None:
        """The version ``alias`` points at and its Spark model, or None when the alias is unset."""
        import mlflow.spark

        version = self.alias_version(registered_model, alias)
        if version is None:
            return None
        # The artifact URI from this tracker's registry, not models:/ (which reads MLflow's global registry URI).
        source = self.client.get_model_version_download_uri(registered_model, str(version))
        log.info("loading %s version %d (%s) from %s", registered_model, version, alias, source)
        return version, mlflow.spark.load_model(source)

    def set_alias(self, registered_model: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(registered_model, alias, str(version))

    def tag_version(self, registered_model: str, version: int, tags: Mapping[str, Any]) -> None:
        client = self.client
        for key, value in tags.items():
            client.set_model_version_tag(registered_model, str(version), key, str(value))

    def log_spark_model(self, model: Any, *, artifact_path: str, registered_model: str) -> int:
        """Log a fitted Spark ML model and register it; returns the registered version number.

        The requirements are given (pyspark at this version) rather than inferred: MLflow infers
        them by loading the model again in a subprocess with a Spark JVM of its own, which costs
        more than the rest of a small stage.
        """
        import mlflow.spark
        import pyspark

        self._activate()
        info = mlflow.spark.log_model(
            model,
            artifact_path=artifact_path,
            registered_model_name=registered_model,
            pip_requirements=[f"pyspark=={pyspark.__version__}"],
        )
        version = getattr(info, "registered_model_version", None)
        if version is None:
            latest = self.client.search_model_versions(f"name='{registered_model}'", order_by=["version_number DESC"], max_results=1)
            version = latest[0].version
        self._mlflow.set_tag(f"crm_spark.registered_model_version.{artifact_path}", str(int(version)))
        return int(version)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]
