"""SQL expression text and hash-based pseudo-randomness.

The generator builds its columns as Spark SQL expression strings handed to ``selectExpr``: one
py4j call per step instead of one per operator, which keeps the driver's share of a run small.

Every random draw is a pure function of ``(seed, salt, key columns)``: the same row gets the same
number whatever the partitioning, the number of cores or the order of evaluation, which is what
makes two runs with the same arguments byte-identical. ``rand()`` is never used: its stream
depends on the partition a row lands in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_MASK = "9223372036854775807"
_TWO_63 = "9.223372036854775808E18"


def q(text: str) -> str:
    """A SQL string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def dbl(x: float) -> str:
    """A SQL DOUBLE literal (plain decimals would be DECIMAL in Spark SQL)."""
    text = repr(float(x))
    return text if "e" in text else f"{text}D"


def num_array(values: Sequence[float] | Sequence[int], element: str) -> str:
    """A literal numeric array from one string literal (constant-folded by Spark)."""
    if element == "DOUBLE":
        text = ",".join(repr(float(v)) for v in values)
    else:
        text = ",".join(str(int(v)) for v in values)
    return f"CAST(split('{text}', ',') AS ARRAY<{element}>)"


def str_array(values: Sequence[str]) -> str:
    return "array(" + ", ".join(q(v) for v in values) + ")"


def pick(values: Sequence[str], index: str) -> str:
    """``values[index]`` for a 0-based int expression."""
    return f"element_at({str_array(values)}, CAST({index} AS INT) + 1)"


def weighted_index(weights: Sequence[float], u: str) -> str:
    """Map a uniform (a column name: it is repeated) to an index drawn with ``weights``."""
    total = float(sum(weights))
    cases, cum = [], 0.0
    for i, w in enumerate(weights[:-1]):
        cum += float(w) / total
        cases.append(f"WHEN {u} < {dbl(cum)} THEN {i}")
    if not cases:
        return "0"
    return f"CASE {' '.join(cases)} ELSE {len(weights) - 1} END"


def clamp(expr: str, lo: str, hi: str) -> str:
    return f"least({hi}, greatest({lo}, {expr}))"


class Rng:
    """SQL text of random draws keyed by the seed, a salt naming the draw, and row key columns."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def u(self, salt: str, *keys: str) -> str:
        """Uniform in the open interval (0, 1)."""
        return f"(((xxhash64({self.seed}L, {q(salt)}, {', '.join(keys)}) & {_MASK}) + 0.5D) / {_TWO_63})"

    def below(self, n: int | str, salt: str, *keys: str) -> str:
        """Integer uniform in ``[0, n)``."""
        return f"CAST(least(floor({self.u(salt, *keys)} * ({n})), ({n}) - 1) AS INT)"

    def normal(self, salt: str, *keys: str) -> str:
        """Standard normal by Box-Muller."""
        u1, u2 = self.u(salt + "#1", *keys), self.u(salt + "#2", *keys)
        return f"(sqrt(-2.0D * ln({u1})) * cos({dbl(2 * math.pi)} * {u2}))"

    def exponential(self, salt: str, *keys: str) -> str:
        """Exponential with mean 1."""
        return f"(-ln({self.u(salt, *keys)}))"

    def lognormal_unit_mean(self, sigma: float, salt: str, *keys: str) -> str:
        """Lognormal with mean 1: a heavy-tailed multiplier."""
        return f"exp({dbl(sigma)} * {self.normal(salt, *keys)} - {dbl(sigma * sigma / 2)})"

    def geometric(self, mean: str, salt: str, *keys: str) -> str:
        """Failures before a success (0, 1, 2, ...) with the given mean."""
        return f"CAST(floor(ln({self.u(salt, *keys)}) / ln(1.0D - 1.0D / (({mean}) + 1.0D))) AS INT)"
