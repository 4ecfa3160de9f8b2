"""Typed errors: one class per failure kind, each with a message a user can act on.

The CLI maps each class to one line on stderr and the exit code below; anything else is a bug
and exits 1 with a traceback hint.
"""

from __future__ import annotations


class CrmSparkError(Exception):
    """Base of every expected failure. ``exit_code`` is what the CLI returns for it."""

    exit_code = 1
    kind = "error"


class ConfigError(CrmSparkError):
    """The configuration is invalid: unknown key, wrong type, missing file or env variable."""

    exit_code = 3
    kind = "config error"


class SourceError(CrmSparkError):
    """An input (raw landing zone, source file, user mapping) is missing or unreadable."""

    exit_code = 4
    kind = "source error"


class DataQualityError(CrmSparkError):
    """A table-level data-quality gate failed; the table it guards was not written."""

    exit_code = 5
    kind = "data quality gate failed"


class LakeError(CrmSparkError):
    """A lake operation failed: schema mismatch, missing table, conflicting commit."""

    exit_code = 6
    kind = "lake error"


class EnvironmentSetupError(CrmSparkError):
    """The machine cannot run Spark: Java missing or too old, a required secret unset."""

    exit_code = 7
    kind = "environment error"


class StageNotBuiltError(CrmSparkError):
    """The stage exists in the product contract but is not implemented in this version."""

    exit_code = 2
    kind = "not built"
