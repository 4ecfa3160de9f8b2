"""Tracker: where runs go, and the lineage every model run carries (one experiment per stage,
run name with the as-of date, input versions, git commit, config without secrets), figures, and
registered Spark models loaded back through an alias."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pyspark.ml import Pipeline
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import SparkSession

import crm_spark
from crm_spark.config import LakeSettings, PathsSettings, Settings, TrackingSettings
from crm_spark.errors import ConfigError
from crm_spark.tracking import Tracker, tracking_uri

AS_OF = date(2025, 3, 31)
PASSWORD = "s3cret-pa55"
STORAGE_KEY = "k3y-0f-the-bucket"


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def _own(settings: Settings, root: Path, **update: Any) -> Settings:
    """The session settings with a lake of this test's own."""
    paths = PathsSettings(raw=str(root / "raw"), lake=str(root / "lake"))
    return settings.model_copy(update={"paths": paths, **update})


def _download_json(tracker: Tracker, run_id: str, path: str, into: Path) -> Any:
    into.mkdir(parents=True, exist_ok=True)
    return json.loads(Path(tracker.client.download_artifacts(run_id, path, str(into))).read_text())


# -- where runs go -------------------------------------------------------------------------------
def test_default_store_is_sqlite_under_the_lake(settings: Settings, tmp_path: Path) -> None:
    own = _own(settings, tmp_path)
    assert tracking_uri(own) == f"sqlite:///{tmp_path / 'lake' / '_mlflow' / 'mlflow.db'}"


def test_a_new_store_starts_from_the_cached_schema_without_migrating(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.store.db.utils as db_utils

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = Tracker(_own(settings, tmp_path / "a"))  # makes the template (migrating once)
    first.experiment_id("segment")
    assert [p.name for p in (tmp_path / "cache" / "crm-spark").iterdir()] == [
        f"mlflow-{__import__('mlflow').__version__}-schema.db"]

    def no_migrations(engine: Any) -> None:
        raise AssertionError("a store seeded from the template ran MLflow's migrations")

    monkeypatch.setattr(db_utils, "_initialize_tables", no_migrations)
    second = Tracker(_own(settings, tmp_path / "b"))
    experiment = second.experiment_id("churn")
    listed = {e.name: e for e in second.client.search_experiments()}
    assert set(listed) == {"Default", "crm-spark/churn"} and listed["Default"].experiment_id == "0"
    assert listed["crm-spark/churn"].experiment_id == experiment == "1"
    assert listed["crm-spark/churn"].artifact_location == (tmp_path / "b" / "lake" / "_mlflow" / "artifacts" / "churn").as_uri()
    # an existing store is never replaced
    assert tracking_uri(_own(settings, tmp_path / "b")) == second.uri
    assert {e.name for e in Tracker(_own(settings, tmp_path / "b")).client.search_experiments()} == set(listed)


def test_the_environment_variable_overrides_config(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    own = _own(settings, tmp_path, tracking=TrackingSettings(uri=SecretStr("http://configured:5000")))
    assert tracking_uri(own) == "http://tracking.example:5000"


def test_configured_uri_is_used_without_the_variable(settings: Settings, tmp_path: Path) -> None:
    own = _own(settings, tmp_path, tracking=TrackingSettings(uri=SecretStr("http://configured:5000")))
    assert tracking_uri(own) == "http://configured:5000"


def test_a_remote_lake_needs_a_tracking_uri(settings: Settings) -> None:
    remote = settings.model_copy(update={"paths": PathsSettings(raw="s3a://bucket/raw", lake="s3a://bucket/lake")})
    with pytest.raises(ConfigError, match="tracking.uri"):
        tracking_uri(remote)


def test_trackers_of_two_lakes_log_to_their_own_stores(settings: Settings, tmp_path: Path) -> None:
    first, second = Tracker(_own(settings, tmp_path / "a")), Tracker(_own(settings, tmp_path / "b"))
    with first.start_run("segment", as_of=AS_OF, inputs={}) as run_a:
        pass
    with second.start_run("segment", as_of=AS_OF, inputs={}) as run_b:
        pass

    def run_ids(tracker: Tracker) -> set[str]:
        experiments = [e.experiment_id for e in tracker.client.search_experiments()]
        return {r.info.run_id for r in tracker.client.search_runs(experiments)}

    assert run_ids(first) == {run_a.info.run_id}
    assert run_ids(second) == {run_b.info.run_id}


# -- run conventions -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three runs in one store: two of stage segment, one of churn; config carries two secrets."""
    root = tmp_path_factory.mktemp("tracking")
    secret_settings = _own(
        settings,
        root,
        tracking=TrackingSettings(uri=SecretStr(f"http://mlflow:{PASSWORD}@mlflow.internal:5000")),
        lake=LakeSettings(storage_options={"AWS_SECRET_ACCESS_KEY": SecretStr(STORAGE_KEY)}),
    )
    store = f"sqlite:///{root / 'store.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", store)  # the configured URI (with the password) is not reachable
        tracker = Tracker(secret_settings)
    with tracker.start_run(
        "segment",
        as_of=AS_OF,
        inputs={"gold.customer_features": 3},
        params={"k_min": 4, "features": ["recency_days", "frequency"]},
        quality={"table": "gold.customer_segments", "success": True, "failed": 0, "seconds": 1.5},
    ) as first:
        pass
    with tracker.start_run("segment", as_of=date(2025, 4, 30), inputs={"gold.customer_features": 4}) as second:
        pass
    with tracker.start_run("churn", as_of=AS_OF, inputs={"gold.customer_features": 3}) as churn:
        pass
    return {"tracker": tracker, "root": root, "store": store,
            "runs": {name: tracker.client.get_run(r.info.run_id) for name, r in
                     (("first", first), ("second", second), ("churn", churn))}}


def test_the_tracker_uses_the_overriding_store(logged: dict[str, Any]) -> None:
    assert logged["tracker"].uri == logged["store"]


def test_runs_of_a_stage_share_one_experiment_named_after_it(logged: dict[str, Any]) -> None:
    client, runs = logged["tracker"].client, logged["runs"]
    assert runs["first"].info.experiment_id == runs["second"].info.experiment_id
    assert runs["churn"].info.experiment_id != runs["first"].info.experiment_id
    assert client.get_experiment(runs["first"].info.experiment_id).name == "crm-spark/segment"
    assert client.get_experiment(runs["churn"].info.experiment_id).name == "crm-spark/churn"


def test_run_name_carries_the_stage_and_as_of_date(logged: dict[str, Any]) -> None:
    runs = logged["runs"]
    assert [runs[n].info.run_name for n in ("first", "second", "churn")] == [
        "segment-2025-03-31", "segment-2025-04-30", "churn-2025-03-31",
    ]


def test_params_hold_the_as_of_date_input_versions_and_stage_params(logged: dict[str, Any]) -> None:
    assert logged["runs"]["first"].data.params == {
        "as_of": "2025-03-31",
        "input.gold.customer_features.version": "3",
        "k_min": "4",
        "features": '["recency_days", "frequency"]',
    }


def test_tags_hold_the_git_commit_stage_and_as_of(logged: dict[str, Any]) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(crm_spark.__file__).parent.parent, capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    tags = logged["runs"]["first"].data.tags
    assert (tags["mlflow.source.git.commit"], tags["crm_spark.stage"], tags["crm_spark.as_of"]) == (
        head, "segment", "2025-03-31",
    )


def test_quality_summary_is_logged_as_artifact_and_numeric_metrics(logged: dict[str, Any]) -> None:
    run = logged["runs"]["first"]
    quality = _download_json(logged["tracker"], run.info.run_id, "quality.json", logged["root"] / "q")
    assert quality == {"table": "gold.customer_segments", "success": True, "failed": 0, "seconds": 1.5}
    assert run.data.metrics == {"quality.success": 1.0, "quality.failed": 0.0, "quality.seconds": 1.5}


def test_inputs_artifact_lists_the_input_versions(logged: dict[str, Any]) -> None:
    run = logged["runs"]["second"]
    assert _download_json(logged["tracker"], run.info.run_id, "inputs.json", logged["root"] / "i") == {
        "gold.customer_features": 4
    }


def test_config_artifact_has_the_settings_without_secrets(logged: dict[str, Any]) -> None:
    run = logged["runs"]["first"]
    folder = logged["root"] / "c"
    config = _download_json(logged["tracker"], run.info.run_id, "config.json", folder)
    text = (folder / "config.json").read_text()
    assert PASSWORD not in text and STORAGE_KEY not in text
    assert config["tracking"]["uri"] == "***"
    assert config["lake"]["storage_options"] == {"AWS_SECRET_ACCESS_KEY": "***"}
    assert config["segment"]["k_min"] == logged["tracker"].settings.segment.k_min


def test_no_param_or_tag_holds_a_secret(logged: dict[str, Any]) -> None:
    for run in logged["runs"].values():
        values = [*run.data.params.values(), *run.data.tags.values()]
        assert not [v for v in values if PASSWORD in v or STORAGE_KEY in v]


# -- figures and models --------------------------------------------------------------------------
def test_a_figure_is_logged_and_kept_as_png_for_the_report(settings: Settings, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    tracker = Tracker(_own(settings, tmp_path))
    fig = Figure()
    fig.subplots().plot([1, 2, 3], [3, 1, 2])
    with tracker.start_run("segment", as_of=AS_OF, inputs={}) as run:
        kept = tracker.log_figure(fig, "sizes.png")
    assert kept == tmp_path / "lake" / "_reports" / "figures" / "segment" / "2025-03-31" / "sizes.png"
    assert kept.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a.path for a in tracker.client.list_artifacts(run.info.run_id, "figures")] == ["figures/sizes.png"]


@pytest.mark.slow
def test_a_registered_model_loads_back_through_its_alias(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    import mlflow.spark

    tracker = Tracker(_own(settings, tmp_path))
    df = spark.createDataFrame([(0.0, 0.0), (0.5, 0.2), (9.0, 9.0), (9.5, 8.8)], "a double, b double")
    model = Pipeline(
        stages=[VectorAssembler(inputCols=["a", "b"], outputCol="v"), KMeans(k=2, seed=1, featuresCol="v")]
    ).fit(df)
    with tracker.start_run("segment", as_of=AS_OF, inputs={}) as run:
        version = tracker.log_spark_model(model, artifact_path="model", registered_model="crm-spark-test")
    client = tracker.client
    client.set_registered_model_alias("crm-spark-test", "champion", str(version))

    registered = client.get_model_version_by_alias("crm-spark-test", "champion")
    assert (version, int(registered.version), registered.run_id) == (1, 1, run.info.run_id)
    loaded = mlflow.spark.load_model("models:/crm-spark-test@champion")
    expected = [r.prediction for r in model.transform(df).orderBy("a").collect()]
    assert [r.prediction for r in loaded.transform(df).orderBy("a").collect()] == expected
