"""Configuration: base + overlay, validation that names the key and the file, interpolation,
frozen settings, path resolution and secret masking (SPEC section 7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from crm_spark.config import ENV_VAR_CONF_DIR, ENV_VAR_ENV, load_settings
from crm_spark.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]

BASE = """\
paths:
  raw: data/raw
  lake: lake
spark:
  app_name: base-app
  conf:
    spark.sql.shuffle.partitions: 8
    spark.sql.session.timeZone: UTC
lake:
  engine: auto
  vacuum_retention_hours: 168
"""


def project(tmp_path: Path, **overlays: str) -> Path:
    """A project folder with conf/base.yaml and the given overlays (name -> YAML text)."""
    conf = tmp_path / "proj" / "conf"
    conf.mkdir(parents=True)
    (conf / "base.yaml").write_text(BASE)
    for name, text in overlays.items():
        (conf / f"{name}.yaml").write_text(text)
    return conf


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- layering -----------------------------------------------------------------------------
def test_the_overlay_wins_and_the_base_fills_the_rest(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="spark:\n  conf:\n    spark.sql.shuffle.partitions: 2\nlake:\n  engine: embedded\n")

    settings = load_settings(config_file=conf / "dev.yaml", environ={})

    assert settings.env == "dev"
    assert settings.spark.app_name == "base-app"
    assert settings.spark.conf == {"spark.sql.shuffle.partitions": 2, "spark.sql.session.timeZone": "UTC"}
    assert (settings.lake.engine, settings.lake.vacuum_retention_hours) == ("embedded", 168)


def test_the_env_picks_the_overlay_from_the_conf_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = project(tmp_path, staging="lake:\n  vacuum_retention_hours: 24\n")
    monkeypatch.setenv(ENV_VAR_CONF_DIR, str(conf))

    settings = load_settings(environ={ENV_VAR_ENV: "staging"})

    assert (settings.env, settings.lake.vacuum_retention_hours) == ("staging", 24)


def test_overrides_beat_the_files(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="")

    settings = load_settings(config_file=conf / "dev.yaml", overrides={"paths.lake": "s3a://bucket/lake"}, environ={})

    assert settings.paths.lake == "s3a://bucket/lake"


@pytest.mark.parametrize("env", ["local", "cluster", "docker"])
def test_every_shipped_environment_validates(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR_CONF_DIR, str(PROJECT / "conf"))

    settings = load_settings(env=env, environ={})

    assert settings.env == env


def test_the_cluster_overlay_defaults_to_hdfs_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR_CONF_DIR, str(PROJECT / "conf"))

    settings = load_settings(env="cluster", environ={})

    assert settings.paths.raw == "hdfs://namenode:8020/crm/raw"
    assert settings.paths.lake == "hdfs://namenode:8020/crm/lake"


# -- errors name the key and the file -----------------------------------------------------
def test_an_unknown_key_names_the_key_path_and_the_file() -> None:
    broken = PROJECT / "conf" / "broken.yaml"

    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=broken, environ={})

    assert one_line(exc) == f"unknown key 'lake.engin' in {broken}"


def test_an_unknown_key_in_the_base_names_the_base(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="")
    (conf / "base.yaml").write_text(BASE + "sparkk:\n  master: local[1]\n")

    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=conf / "dev.yaml", environ={})

    assert one_line(exc) == f"unknown key 'sparkk' in {conf / 'base.yaml'}"


def test_a_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="lake:\n  vacuum_retention_hours: soon\n")

    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=conf / "dev.yaml", environ={})

    message = one_line(exc)
    assert message.startswith(f"'lake.vacuum_retention_hours' in {conf / 'dev.yaml'}: ")
    assert message.endswith("(got 'soon')")


def test_an_unknown_time_zone_of_a_source_is_a_config_error(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="sources:\n  orders:\n    path: orders\n    timezone: Mars/Olympus\n")

    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=conf / "dev.yaml", environ={})

    assert "'sources.orders.timezone'" in one_line(exc) and "unknown time zone 'Mars/Olympus'" in str(exc.value)


def test_a_wrong_type_under_a_union_names_the_key_not_the_union_members(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="spark:\n  conf:\n    spark.jars: [a.jar, b.jar]\n")

    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=conf / "dev.yaml", environ={})

    message = one_line(exc)
    assert message.startswith(f"'spark.conf.spark.jars' in {conf / 'dev.yaml'}: ")
    assert message.count("'spark.conf.spark.jars") == 1


def test_a_value_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="lake:\n  engine: delta\n")

    with pytest.raises(ConfigError, match=r"^'lake.engine' in .*dev.yaml: .*'delta'"):
        load_settings(config_file=conf / "dev.yaml", environ={})


def test_an_unknown_env_lists_the_known_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = project(tmp_path, dev="", prod="")
    monkeypatch.setenv(ENV_VAR_CONF_DIR, str(conf))

    with pytest.raises(ConfigError) as exc:
        load_settings(env="qa", environ={})

    assert one_line(exc) == f"unknown env 'qa': {conf / 'qa.yaml'} not found (known: dev, prod)"


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.yaml not found"):
        load_settings(config_file=tmp_path / "nowhere.yaml", environ={})


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="lake:\n  engine: [embedded\n")

    with pytest.raises(ConfigError, match=r"dev.yaml line \d+: not valid YAML"):
        load_settings(config_file=conf / "dev.yaml", environ={})


# -- interpolation ------------------------------------------------------------------------
def test_variables_are_replaced_from_the_environment(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="paths:\n  raw: ${DATA_ROOT}/raw\n  lake: s3a://${BUCKET}/lake\n")

    settings = load_settings(config_file=conf / "dev.yaml", environ={"DATA_ROOT": "/srv/crm", "BUCKET": "acme"})

    assert (settings.paths.raw, settings.paths.lake) == ("/srv/crm/raw", "s3a://acme/lake")


def test_a_default_is_used_only_when_the_variable_is_unset(tmp_path: Path) -> None:
    conf = project(
        tmp_path, dev="paths:\n  raw: ${RAW_URI:-hdfs://nn:8020/raw}\n  lake: ${LAKE_URI:-hdfs://nn:8020/lake}\n"
    )

    settings = load_settings(config_file=conf / "dev.yaml", environ={"LAKE_URI": "s3a://acme/lake"})

    assert (settings.paths.raw, settings.paths.lake) == ("hdfs://nn:8020/raw", "s3a://acme/lake")


def test_a_missing_variable_names_the_variable_and_the_key(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="lake:\n  storage_options:\n    AWS_SECRET_ACCESS_KEY: ${CRM_TEST_S3_SECRET}\n")

    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=conf / "dev.yaml", environ={})

    message = one_line(exc)
    assert "CRM_TEST_S3_SECRET" in message
    assert message.startswith("lake.storage_options.AWS_SECRET_ACCESS_KEY:")


# -- the result ---------------------------------------------------------------------------
def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(config_file=project(tmp_path, dev="") / "dev.yaml", environ={})

    with pytest.raises(ValidationError):
        settings.lake.engine = "embedded"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.paths = settings.paths  # type: ignore[misc]
    assert settings.lake.engine == "auto"


def test_relative_paths_resolve_against_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = project(tmp_path, dev="")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(config_file=conf / "dev.yaml", environ={})

    assert settings.paths.raw == str(tmp_path / "proj" / "data" / "raw")
    assert settings.paths.lake == str(tmp_path / "proj" / "lake")


def test_relative_paths_from_the_command_line_resolve_against_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = project(tmp_path, dev="")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(config_file=conf / "dev.yaml", overrides={"paths.lake": "my-lake"}, environ={})

    assert settings.paths.lake == str(elsewhere / "my-lake")


def test_uris_with_a_scheme_are_kept(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="paths:\n  raw: hdfs://nn:8020/crm/raw/\n  lake: file:///srv/lake\n")

    settings = load_settings(config_file=conf / "dev.yaml", environ={})

    assert (settings.paths.raw, settings.paths.lake) == ("hdfs://nn:8020/crm/raw", "file:///srv/lake")


def test_public_dict_masks_secrets(tmp_path: Path) -> None:
    conf = project(
        tmp_path,
        dev="lake:\n  storage_options:\n    AWS_ACCESS_KEY_ID: ${KEY_ID}\n    AWS_SECRET_ACCESS_KEY: ${SECRET}\n"
        "tracking:\n  uri: postgresql://mlflow:${SECRET}@db/mlflow\n",
    )

    settings = load_settings(config_file=conf / "dev.yaml", environ={"KEY_ID": "AKIA123", "SECRET": "s3cr3t-value"})
    public = settings.public_dict()

    assert public["lake"]["storage_options"] == {"AWS_ACCESS_KEY_ID": "***", "AWS_SECRET_ACCESS_KEY": "***"}
    assert public["tracking"]["uri"] == "***"
    assert "s3cr3t-value" not in repr(public) and "AKIA123" not in repr(public)
    assert settings.lake.storage_options["AWS_SECRET_ACCESS_KEY"].get_secret_value() == "s3cr3t-value"
    assert public["spark"]["conf"]["spark.sql.shuffle.partitions"] == 8


def test_public_dict_masks_values_whose_key_names_a_secret(tmp_path: Path) -> None:
    # spark.conf is typed as plain strings: a secret there is recognised by its key.
    conf = project(
        tmp_path,
        dev="spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: ${SECRET}\n    spark.hadoop.fs.s3a.access.key: AKIA123\n"
        "    spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net: azkey\n"
        "    spark.hadoop.fs.s3a.session.token: tok\n    spark.hadoop.javax.jdo.option.ConnectionPassword: pw\n"
        "    spark.hadoop.fs.s3a.endpoint: http://127.0.0.1:9000\n",
    )

    settings = load_settings(config_file=conf / "dev.yaml", environ={"SECRET": "s3cr3t-value"})
    public = settings.public_dict()["spark"]["conf"]

    masked = {k for k, v in public.items() if v == "***"}
    assert masked == {"spark.hadoop.fs.s3a.secret.key", "spark.hadoop.fs.s3a.access.key",
                      "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net",
                      "spark.hadoop.fs.s3a.session.token", "spark.hadoop.javax.jdo.option.ConnectionPassword"}
    assert public["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    for secret in ("s3cr3t-value", "AKIA123", "azkey", "tok", "pw"):
        assert f"'{secret}'" not in repr(settings.public_dict())
    assert settings.spark.conf["spark.hadoop.fs.s3a.secret.key"] == "s3cr3t-value"  # the session still gets it


# -- config keys that name columns are checked against the table contracts ------------------
@pytest.mark.parametrize(
    ("overlay", "key", "hint"),
    [
        ("refine:\n  missing:\n    orders.chanel: web\n", "'refine.missing.orders.chanel'", "silver.orders has no raw column 'chanel'"),
        ("refine:\n  missing:\n    order.channel: web\n", "'refine.missing.order.channel'", "no silver table 'order'"),
        ("refine:\n  outliers:\n    order_items.quantiy: {policy: cap, upper: 0.99}\n",
         "'refine.outliers.order_items.quantiy'", "no numeric column 'quantiy'"),
        ("refine:\n  outliers:\n    orders.channel: {policy: flag, upper: 0.99}\n",
         "'refine.outliers.orders.channel'", "no numeric column 'channel'"),
        ("segment:\n  features: [recency_days, monetry]\n  log_features: []\n", "'segment.features'", "monetry"),
        ("segment:\n  features: [recency_days, rfm_segment]\n  log_features: []\n", "'segment.features'", "rfm_segment"),
    ],
)
def test_a_config_key_naming_an_unknown_column_is_an_error_naming_the_key(
    tmp_path: Path, overlay: str, key: str, hint: str
) -> None:
    conf = project(tmp_path, dev=overlay)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=conf / "dev.yaml", environ={})
    message = one_line(caught)
    assert key in message and hint in message


def test_config_keys_naming_real_columns_load(tmp_path: Path) -> None:
    conf = project(
        tmp_path,
        dev="refine:\n  missing:\n    orders.channel: web\n  outliers:\n    order_items.quantity: {policy: cap, upper: 0.99}\n"
        "segment:\n  features: [recency_days, monetary]\n  log_features: [monetary]\n",
    )
    settings = load_settings(config_file=conf / "dev.yaml", environ={})
    assert settings.refine.missing == {"orders.channel": "web"}
    assert settings.segment.features == ("recency_days", "monetary")


# -- customer attributes ---------------------------------------------------------------------
_FEED = "sources:\n  s:\n    path: s\n    targets:\n      customer_attributes:\n        columns: {customer_id: id, snapshot_date: day, %s}\n"


@pytest.mark.parametrize(
    ("overlay", "hint"),
    [
        ("attributes: {Plan: categorical}\n", "attribute names ['Plan'] must be lower-case identifiers"),
        ("attributes: {value: numeric}\n", "attribute names ['value'] must be"),
        ("attributes: {plan: text}\n", "'attributes.plan'"),
        (_FEED % "plan: Plan", "feed customer_attributes but no attributes are declared"),
        ("attributes: {plan: categorical}\n" + _FEED % "plna: Plan",
         "sources.s.targets.customer_attributes.columns ['plna'] are not declared under attributes (plan)"),
        ("attributes: {plan: categorical}\nchurn: {attributes: [plam]}\n", "churn.attributes ['plam'] are not declared"),
        ("attributes: {plan: categorical}\nsegment: {attributes: [plan]}\n", "segment.attributes ['plan'] are categorical"),
    ],
)
def test_attribute_config_mistakes_are_one_line_errors(tmp_path: Path, overlay: str, hint: str) -> None:
    conf = project(tmp_path, dev=overlay)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=conf / "dev.yaml", environ={})
    assert hint in one_line(caught)


def test_declared_attributes_load_with_their_kinds(tmp_path: Path) -> None:
    conf = project(tmp_path, dev="attributes: {plan: categorical, charges: numeric}\nchurn: {attributes: [charges]}\n"
                   + _FEED % "plan: Plan")
    settings = load_settings(config_file=conf / "dev.yaml", environ={})
    assert settings.attributes == {"plan": "categorical", "charges": "numeric"}
    assert settings.model_attributes() == {"charges": "numeric"} and settings.feeding("customer_attributes") == ["s"]
