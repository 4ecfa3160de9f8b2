"""Config expressions may call only allowlisted Spark SQL functions (issue 17: a mapping
``reflect('java.lang.System', 'getenv', 'CRM_SPARK_PII_KEY')`` wrote the PII key into silver)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from crm_spark.config import load_settings
from crm_spark.errors import ConfigError
from crm_spark.sqlcheck import ALLOWED_FUNCTIONS, ALLOWED_GROUPS, check_expression, functions_called

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("expression", "called"),
    [
        ("customerID", set()),
        ("try_to_timestamp(InvoiceDate, 'M/d/yyyy H:mm')", {"try_to_timestamp"}),
        ("CASE WHEN Quantity < 0 THEN 'cancelled' ELSE 'completed' END", set()),
        ("CAST(price AS DECIMAL(14, 2))", set()),
        ("add_months(DATE'2024-06-30', -try_cast(tenure AS INT))", {"add_months"}),
        ("transform(split(items, ','), x -> trim(x))", {"transform", "split", "trim"}),
        ("concat('reflect(', a, `java_method(`)", {"concat"}),  # inside literals and back-quoted names: not calls
        ("row_number() OVER (PARTITION BY f ORDER BY v)", {"row_number"}),
        ("REFLECT ('java.lang.System', 'getenv', 'KEY')", {"reflect"}),
        ("system.builtin.java_method('java.lang.System', 'getenv', 'KEY')", {"system.builtin.java_method"}),
        ("x IN (1, 2) AND NOT (y IS NULL)", set()),
    ],
)
def test_functions_called_are_found_outside_literals(expression: str, called: set[str]) -> None:
    assert functions_called(expression) == called


@pytest.mark.parametrize(
    "expression",
    [
        "reflect('java.lang.System', 'getenv', 'CRM_SPARK_PII_KEY')",
        "java_method('java.lang.System', 'getenv', 'CRM_SPARK_PII_KEY')",
        "try_reflect('java.lang.System', 'getenv', 'X')",
        "upper(Reflect('java.lang.System', 'getenv', 'X'))",
        "system.builtin.reflect('java.lang.System', 'getenv', 'X')",
        "aes_decrypt(unbase64(secret), 'key')",
        "current_user()",
        "my_registered_udf(a)",
        "(SELECT max(x) FROM parquet.`/etc`)",
    ],
)
def test_a_call_outside_the_allowlist_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="not allowed in a config expression"):
        check_expression(expression)


def test_a_mapping_that_reaches_java_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    overlay = tmp_path / "dev.yaml"
    overlay.write_text(
        "sources:\n  orders:\n    path: orders\n    targets:\n      orders:\n        columns:\n"
        "          payment_type: \"reflect('java.lang.System','getenv','CRM_SPARK_PII_KEY')\"\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=overlay, environ={})
    message = str(caught.value)
    assert "'sources.orders.targets.orders.columns.payment_type'" in message
    assert "reflect not allowed" in message and "\n" not in message


@pytest.mark.parametrize("example", sorted((ROOT / "conf" / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_example_passes_the_check(example: Path) -> None:
    load_settings(config_file=example, environ={"CRM_SPARK_PII_KEY": "x"})


def test_the_allowlist_is_spark_builtins_of_the_allowed_groups(spark: SparkSession) -> None:
    """Each allowed name is a built-in of an allowed group in the running Spark (none came from
    the misc group that holds reflect and java_method)."""
    jvm = spark.sparkContext._jvm
    registry = jvm.org.apache.spark.sql.catalyst.analysis.FunctionRegistry.builtin()
    groups: dict[str, str] = {}
    functions = registry.listFunction()
    for i in range(functions.size()):
        ident = functions.apply(i)
        info = registry.lookupFunction(ident)
        if info.isDefined():
            groups[ident.funcName().lower()] = info.get().getGroup()
    assert {"reflect", "java_method"} <= set(groups) and groups["reflect"] not in ALLOWED_GROUPS
    wrong = {n: groups.get(n) for n in ALLOWED_FUNCTIONS if groups.get(n) not in ALLOWED_GROUPS}
    assert not wrong, wrong
