"""BG/NBD + Gamma-Gamma: both fits recover the parameters of data simulated from their own models.

Simulated with the CDNOW estimates of the papers (weeks): BG/NBD r 0.243, alpha 4.414, a 0.793,
b 2.426; Gamma-Gamma p 6.25, q 3.74, v 15.44. No Spark.
"""

from __future__ import annotations

import numpy as np
import pytest

from crm_spark.ml.btyd import BgNbd, GammaGamma, fit_bgnbd, fit_gamma_gamma

TRUE = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)


def _simulate_bgnbd(n: int, *, calibration: np.ndarray, holdout: float, seed: int):
    """Per customer: (x, t_x, T) in the calibration period and the purchases in the next ``holdout``."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(TRUE.r, 1.0 / TRUE.alpha, n)
    dropout = rng.beta(TRUE.a, TRUE.b, n)
    x, t_x, later = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        now, end = 0.0, calibration[i] + holdout
        while True:  # the first purchase is at 0; after each repeat purchase the customer may leave
            now += rng.exponential(1.0 / rates[i])
            if now >= end:
                break
            if now < calibration[i]:
                x[i], t_x[i] = x[i] + 1, now
            else:
                later[i] += 1
            if rng.random() < dropout[i]:
                break
    return x, t_x, later


def test_bgnbd_recovers_its_parameters_and_predicts_the_holdout() -> None:
    n, holdout = 6000, 39.0
    calibration = np.random.default_rng(1).uniform(27.0, 39.0, n)
    x, t_x, later = _simulate_bgnbd(n, calibration=calibration, holdout=holdout, seed=2)

    fit = fit_bgnbd(x, t_x, calibration)

    assert fit.r == pytest.approx(TRUE.r, rel=0.2)
    assert fit.alpha == pytest.approx(TRUE.alpha, rel=0.25)
    assert fit.a == pytest.approx(TRUE.a, rel=0.4)
    assert fit.b == pytest.approx(TRUE.b, rel=0.5)
    expected = fit.expected_purchases(holdout, x, t_x, calibration)
    assert expected.sum() == pytest.approx(later.sum(), rel=0.1)
    # Customers who bought more in calibration are expected to buy more, and do.
    busy = x >= 3
    assert expected[busy].mean() > expected[~busy].mean()
    assert later[busy].mean() > later[~busy].mean()


def test_known_answers_of_the_papers() -> None:
    """Fader, Hardie and Lee (2005), CDNOW: a customer with x = 2, t_x = 30.43, T = 38.86 weeks is
    expected to make 1.226 purchases in the next 39 weeks; Gamma-Gamma's population mean spend is 35.22."""
    expected = TRUE.expected_purchases(39.0, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert expected[0] == pytest.approx(1.226, abs=0.001)
    mean = GammaGamma(p=6.25, q=3.74, v=15.44).expected_value(np.array([0.0]), np.array([0.0]))
    assert mean[0] == pytest.approx(35.22, abs=0.01)


def test_bgnbd_p_alive_is_one_without_repeat_purchases_and_falls_with_silence() -> None:
    x = np.array([0.0, 4.0, 4.0])
    t_x = np.array([0.0, 30.0, 5.0])  # the same 4 purchases, the last one recent or long ago
    T = np.array([35.0, 35.0, 35.0])  # noqa: N806

    alive = TRUE.p_alive(x, t_x, T)

    assert alive[0] == 1.0
    assert 0.0 < alive[2] < alive[1] < 1.0


def test_gamma_gamma_recovers_the_mean_spend_and_shrinks_towards_it() -> None:
    rng = np.random.default_rng(3)
    p, q, v, n = 6.25, 3.74, 15.44, 5000
    scale_rate = rng.gamma(q, 1.0 / v, n)  # each customer's rate nu
    x = rng.integers(1, 12, n).astype(float)
    m = np.array([rng.gamma(p, 1.0 / nu, int(k)).mean() for nu, k in zip(scale_rate, x, strict=True)])

    fit = fit_gamma_gamma(x, m)

    assert fit.p == pytest.approx(p, rel=0.25)
    assert fit.p * fit.v / (fit.q - 1) == pytest.approx(p * v / (q - 1), rel=0.1)  # the population mean
    one, many = fit.expected_value(np.array([1.0, 20.0, 0.0]), np.array([100.0, 100.0, 0.0]))[:2]
    population = fit.p * fit.v / (fit.q - 1)
    assert population < one < many < 100.0  # one purchase of 100 says less than twenty
    assert fit.expected_value(np.array([0.0]), np.array([0.0]))[0] == pytest.approx(population)
    with pytest.raises(ValueError, match="at least two customers"):
        fit_gamma_gamma(np.array([0.0, 1.0]), np.array([0.0, 5.0]))
