"""BG/NBD + Gamma-Gamma: the probabilistic "buy till you die" baseline of customer lifetime value.

Fitted by maximum likelihood on the driver from one row per customer, as the clv stage's
standard baseline (issue 15): ``x`` repeat purchases (purchase days after the first), ``t_x`` the
age of the last purchase and ``T`` the age of the customer at the end of the calibration period
(both from the first purchase, in any time unit), and ``m`` the mean value of the repeat purchases.

* BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way"): while alive a
  customer buys at a Poisson rate (gamma(r, alpha) across customers) and after each purchase
  drops out with a probability (beta(a, b) across customers). Gives the expected purchases in
  the next ``t`` and P(alive).
* Gamma-Gamma (Fader, Hardie and Lee 2005, "RFM and CLV"): purchase values are gamma with a
  customer-level scale (inverse gamma(q, v)) and shape p, independent of the purchase process.
  Gives each customer's expected purchase value from their repeat purchases.

Written here with SciPy (about 60 lines of published formulas) rather than taken from a library:
``lifetimes`` has had no release since 2020, and ``pymc-marketing`` brings PyMC and PyTensor (and a
C toolchain) for what is a four-parameter maximum-likelihood fit. Tests check that both models
recover the parameters of data simulated from them. The summary is one row per customer: a
driver fits millions of rows in seconds; a larger base is fitted on a sample (the stage's job).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1


@dataclass(frozen=True)
class BgNbd:
    """A fitted BG/NBD model (parameters r, alpha, a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def _alive_odds(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:  # noqa: N803
        """(1 - P(alive)) / P(alive): 0 for customers without a repeat purchase."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        repeat = x > 0
        safe_x = np.where(repeat, x, 1.0)
        odds = a / (b + safe_x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + safe_x)
        return np.where(repeat, odds, 0.0)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:  # noqa: N803
        """P(the customer is still active at T | x, t_x, T)."""
        return 1.0 / (1.0 + self._alive_odds(x, t_x, T))

    def expected_purchases(self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:  # noqa: N803
        """E[purchases in (T, T + t] | x, t_x, T] (equation 10 of the paper)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        tail = 1.0 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        return np.maximum(head * tail / (1.0 + self._alive_odds(x, t_x, T)), 0.0)


@dataclass(frozen=True)
class GammaGamma:
    """A fitted Gamma-Gamma spend model (parameters p, q, v)."""

    p: float
    q: float
    v: float

    def expected_value(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """E[a purchase's value | x repeat purchases of mean value m]; the population mean without any."""
        p, q, v = self.p, self.q, self.v
        population = p * v / (q - 1)
        weighted = (p * (v + x * m)) / (p * x + q - 1)
        return np.where(x > 0, weighted, population)


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> BgNbd:  # noqa: N803
    """Maximum-likelihood BG/NBD on per-customer (x, t_x, T)."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))  # noqa: N806
    repeat = x > 0

    def negative_ll(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        a3 = -(r + x) * np.log(alpha + T)
        a4 = np.where(repeat, np.log(a) - np.log(b + np.where(repeat, x, 1.0) - 1) - (r + x) * np.log(alpha + t_x),
                      -np.inf)
        return float(-np.mean(a1 + a2 + np.logaddexp(a3, a4)))

    start = np.log([1.0, max(float(np.mean(T)), 1e-3), 1.0, 1.0])
    fit = minimize(negative_ll, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-10})
    if not fit.success:
        raise ValueError(f"the BG/NBD fit did not converge ({fit.message})")
    r, alpha, a, b = np.exp(fit.x)
    return BgNbd(float(r), float(alpha), float(a), float(b))


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma on the customers with repeat purchases of positive mean value."""
    x, m = (np.asarray(v, dtype=float) for v in (x, m))
    keep = (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    if len(x) < 2:
        raise ValueError("Gamma-Gamma needs at least two customers with repeat purchases of positive value")

    def negative_ll(log_params: np.ndarray) -> float:
        p, q, v = np.exp(log_params)
        ll = (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v) + (p * x - 1) * np.log(m)
              + p * x * np.log(x) - (p * x + q) * np.log(x * m + v))
        return float(-np.mean(ll))

    start = np.log([1.0, 2.0, max(float(np.mean(m)), 1e-3)])
    fit = minimize(negative_ll, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-10})
    p, q, v = np.exp(fit.x)
    if not fit.success or q <= 1:
        raise ValueError(f"the Gamma-Gamma fit did not converge to a finite mean spend (q = {q:.3g}; {fit.message})")
    return GammaGamma(float(p), float(q), float(v))
