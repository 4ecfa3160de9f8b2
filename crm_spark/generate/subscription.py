"""``generate_subscriptions``: a seeded subscription customer table with a churn flag and its answer key.

Usage::

    from crm_spark.generate.subscription import generate_subscriptions
    summary = generate_subscriptions("data/raw/churn", customers=5000, seed=7, snapshot=date(2024, 6, 30))

The shape of the public "Telco customer churn" export: one row per customer as of one snapshot
date, with planted churn effects whose true probabilities are known, so a churn model can be
scored against the best any model could do (the Bayes-optimal ROC-AUC). numpy and pandas only,
no Spark; draws come from ``numpy.random.default_rng(seed)`` in a fixed order, so the same
arguments give byte-identical files.

Output (``{out}/``)
-------------------
==========================================  ===========================================================
``telco/subscriptions-<snapshot>.csv``      the table (snapshot as ``YYYY-MM-DD``); a header row, RFC-4180
                                            quoting (no value needs quotes), ``\\n`` line ends.
``_truth/subscription.json``                the answer key (below).
``_truth/subscription_probabilities.csv``   ``customerID,churn_probability`` (6 decimals), one row per
                                            customer, in the table's order.
==========================================  ===========================================================

Columns, in this order (values as in the real export)
-----------------------------------------------------
``customerID`` (``1234-ABCDE``, unique), ``gender`` (Female/Male), ``SeniorCitizen`` (0/1),
``Partner``, ``Dependents`` (Yes/No), ``tenure`` (whole months subscribed up to the snapshot,
0-72; 0 for a few one- and two-year contracts signed in the snapshot month), ``Contract``
(Month-to-month/One year/Two year), ``PaperlessBilling`` (Yes/No), ``PaymentMethod`` (Electronic
check/Mailed check/Bank transfer (automatic)/Credit card (automatic)), ``InternetService``
(DSL/Fiber optic/No), ``OnlineSecurity``, ``TechSupport``, ``StreamingTV``, ``StreamingMovies``
(Yes/No, and ``No internet service`` exactly when InternetService is No), ``MonthlyCharges``
(two decimals, a multiple of 0.05: a phone plan, the internet tier, 5.00 per security or support
option, 10.00 per streaming option, hidden add-ons and noise), ``TotalCharges`` (about tenure x
MonthlyCharges with price-change noise, two decimals; a single space ``" "`` when tenure is 0, as
in the real export), ``Churn`` (Yes/No). Attributes are correlated as in the real data: partners
and dependants take longer contracts, long contracts have longer tenure and less fibre, seniors
take more fibre, month-to-month customers pay more often by electronic check.

Planted truth
-------------
``P(Churn = Yes) = sigmoid(eta)``, ``eta = sum(COEFFICIENTS[t] * term_t)`` over the terms of
:data:`TERMS`, every term a function of the published columns (:func:`churn_log_odds` recomputes
it from the CSV read as text): month-to-month contracts churn much more (one- and two-year
contracts are strongly protective), ``ln(1 + tenure)`` is strongly protective, higher monthly
charges raise churn, each protective service (OnlineSecurity, TechSupport) lowers it, fibre optic
and electronic check raise it, seniors and paperless billing slightly, dependants slightly lower.
Two modest interactions give a tree model something beyond a linear one: fibre optic on a
month-to-month contract (extra churn on top of both main effects), and monthly charges within
the first six months (price sensitivity of new customers). With the defaults the churn rate is
about 0.27 and the Bayes-optimal ROC-AUC about 0.86.

Answer key (``_truth/subscription.json``): ``seed``, ``snapshot``, ``rows``, ``churn_rate``,
``coefficients`` (term -> value, ``intercept`` included), ``terms`` (term -> its definition),
``interactions`` (interaction term -> one line), ``bayes_roc_auc``: the rank-based ROC-AUC (ties
averaged) of the true probabilities against the drawn labels, i.e. what a perfect model scores.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from crm_spark.errors import ConfigError

TABLE_DIR = "telco"
TRUTH_DIR = "_truth"
MIN_CUSTOMERS = 100

COLUMNS: tuple[str, ...] = (
    "customerID", "gender", "SeniorCitizen", "Partner", "Dependents", "tenure", "Contract",
    "PaperlessBilling", "PaymentMethod", "InternetService", "OnlineSecurity", "TechSupport",
    "StreamingTV", "StreamingMovies", "MonthlyCharges", "TotalCharges", "Churn",
)
CONTRACTS: tuple[str, ...] = ("Month-to-month", "One year", "Two year")
PAYMENT_METHODS: tuple[str, ...] = (
    "Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)",
)
INTERNET: tuple[str, ...] = ("DSL", "Fiber optic", "No")
SERVICES: tuple[str, ...] = ("OnlineSecurity", "TechSupport", "StreamingTV", "StreamingMovies")
NO_INTERNET = "No internet service"
MAX_TENURE = 72
CHARGES_CENTER = 65.0  # monthly charges enter the predictor as (MonthlyCharges - 65) / 10
SHORT_TENURE = 6  # months: the price-sensitive first half year

TERMS: dict[str, str] = {
    "intercept": "1",
    "contract_one_year": "Contract = One year",
    "contract_two_year": "Contract = Two year",
    "log_tenure": "ln(1 + tenure)",
    "monthly_charges": "(MonthlyCharges - 65) / 10",
    "protective_services": "number of Yes among OnlineSecurity, TechSupport (0-2)",
    "fiber_optic": "InternetService = Fiber optic",
    "electronic_check": "PaymentMethod = Electronic check",
    "senior_citizen": "SeniorCitizen = 1",
    "paperless_billing": "PaperlessBilling = Yes",
    "dependents": "Dependents = Yes",
    "fiber_x_month_to_month": "InternetService = Fiber optic and Contract = Month-to-month",
    "charges_x_short_tenure": "(MonthlyCharges - 65) / 10 when tenure <= 6, else 0",
}
COEFFICIENTS: dict[str, float] = {
    "intercept": 0.5,
    "contract_one_year": -0.9,
    "contract_two_year": -1.7,
    "log_tenure": -0.6,
    "monthly_charges": 0.12,
    "protective_services": -0.45,
    "fiber_optic": 0.45,
    "electronic_check": 0.45,
    "senior_citizen": 0.25,
    "paperless_billing": 0.25,
    "dependents": -0.2,
    "fiber_x_month_to_month": 0.55,
    "charges_x_short_tenure": 0.15,
}
INTERACTIONS: dict[str, str] = {
    "fiber_x_month_to_month": "fibre-optic customers on a month-to-month contract churn more than both main "
                              "effects add up to",
    "charges_x_short_tenure": "in the first six months every 10.00 of monthly charges adds extra churn "
                              "(price-sensitive new customers)",
}


@dataclass(frozen=True)
class SubscriptionSummary:
    """What one ``generate_subscriptions`` call wrote."""

    path: Path  # the table, {out}/telco/subscriptions-<snapshot>.csv
    rows: int
    churn_rate: float
    bayes_roc_auc: float
    truth_path: Path  # the answer key, {out}/_truth/subscription.json


def generate_subscriptions(
    out: str | Path, *, customers: int = 5000, seed: int = 7, snapshot: date = date(2024, 6, 30)
) -> SubscriptionSummary:
    """Write the table, its answer key and the true probabilities under ``out`` (a local folder)."""
    if customers < MIN_CUSTOMERS:
        raise ConfigError(f"--customers must be at least {MIN_CUSTOMERS} (got {customers})")
    root = _local_path(out)
    rng = np.random.default_rng(seed)
    table = draw_customers(rng, customers)
    probability = sigmoid(churn_log_odds(table))
    churned = rng.random(customers) < probability
    table["Churn"] = np.where(churned, "Yes", "No")

    path = root / TABLE_DIR / f"subscriptions-{snapshot.isoformat()}.csv"
    truth_path = root / TRUTH_DIR / "subscription.json"
    churn_rate = float(churned.mean())
    auc = roc_auc(probability, churned)
    key = {
        "seed": seed,
        "snapshot": snapshot.isoformat(),
        "rows": customers,
        "churn_rate": round(churn_rate, 6),
        "coefficients": COEFFICIENTS,
        "terms": TERMS,
        "interactions": INTERACTIONS,
        "bayes_roc_auc": round(auc, 6),
    }
    probabilities = pd.DataFrame({"customerID": table["customerID"],
                                  "churn_probability": [f"{p:.6f}" for p in probability]})
    _write(path, _csv_text(table[list(COLUMNS)]))
    _write(truth_path, json.dumps(key, indent=2) + "\n")
    _write(root / TRUTH_DIR / "subscription_probabilities.csv", _csv_text(probabilities))
    return SubscriptionSummary(path=path, rows=customers, churn_rate=churn_rate, bayes_roc_auc=auc,
                               truth_path=truth_path)


# -- the customers ------------------------------------------------------------------------------


def draw_customers(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Every column but ``Churn``, as the CSV's text, drawn in a fixed order from ``rng``."""
    female = rng.random(n) < 0.5
    senior = rng.random(n) < 0.16
    partner = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(partner, 0.52, 0.12) * np.where(senior, 0.4, 1.0)

    one_year = -1.2 + 0.5 * partner + 0.3 * dependents - 0.3 * senior
    two_year = -1.2 + 0.8 * partner + 0.4 * dependents - 0.6 * senior
    contract = _choose(rng, _softmax(np.column_stack([np.zeros(n), one_year, two_year])))
    tenure = _tenure(rng, contract)

    internet_p = np.array([[0.32, 0.55, 0.13], [0.38, 0.35, 0.27], [0.33, 0.22, 0.45]])[contract]
    internet_p = internet_p + np.where(senior, 1.0, 0.0)[:, None] * np.array([-0.05, 0.15, -0.10])
    internet = _choose(rng, np.clip(internet_p, 0.02, None))
    online = internet != 2
    fiber = internet == 1

    security = online & (rng.random(n) < sigmoid(np.where(fiber, -1.0, -0.1) + 0.025 * (tenure - 30)))
    support = online & (rng.random(n) < sigmoid(np.where(fiber, -0.9, -0.2) + 0.025 * (tenure - 30)))
    tv = online & (rng.random(n) < np.where(fiber, 0.6, 0.35))
    movies = online & (rng.random(n) < np.where(tv, 0.7, 0.25))
    paperless = rng.random(n) < np.array([0.58, 0.75, 0.35])[internet]

    echeck = np.array([0.48, 0.18, 0.10])[contract] - np.where(online, 0.0, 0.12) + 0.08 * senior
    mailed = np.where(online, 0.18, 0.40)
    payment = _choose(rng, np.column_stack([echeck, mailed, np.full(n, 0.21), np.full(n, 0.20)]))

    add_ons = np.where(online, rng.binomial(2, 0.45, n), rng.binomial(1, 0.4, n))
    charges = (19.5 + 5.0 * add_ons + np.array([25.0, 50.0, 0.0])[internet]
               + 5.0 * (security.astype(int) + support) + 10.0 * (tv.astype(int) + movies)
               + rng.normal(0.0, np.where(online, 2.5, 0.8)))
    charges = np.maximum(np.round(charges * 20.0) / 20.0, 18.25)
    drift = np.clip(rng.normal(0.0, 0.03, n), -0.1, 0.1)
    total = np.round(tenure * charges * np.where(tenure > 1, 1.0 + drift, 1.0), 2)

    ids = customer_ids(rng, n)
    return pd.DataFrame({
        "customerID": ids,
        "gender": np.where(female, "Female", "Male"),
        "SeniorCitizen": np.where(senior, "1", "0"),
        "Partner": _yes_no(partner),
        "Dependents": _yes_no(dependents),
        "tenure": tenure.astype(str),
        "Contract": np.array(CONTRACTS)[contract],
        "PaperlessBilling": _yes_no(paperless),
        "PaymentMethod": np.array(PAYMENT_METHODS)[payment],
        "InternetService": np.array(INTERNET)[internet],
        **{name: np.where(online, _yes_no(flag), NO_INTERNET)
           for name, flag in zip(SERVICES, (security, support, tv, movies), strict=True)},
        "MonthlyCharges": [f"{x:.2f}" for x in charges],
        "TotalCharges": [f"{x:.2f}" if t > 0 else " " for x, t in zip(total, tenure, strict=True)],
    })


def customer_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``1234-ABCDE`` ids, unique (a clash is redrawn), in draw order."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        need = n - len(ids)
        digits = rng.integers(0, 10_000, need)
        tails = letters[rng.integers(0, 26, (need, 5))]
        for d, tail in zip(digits, tails, strict=True):
            cid = f"{d:04d}-{''.join(tail)}"
            if cid not in seen:
                seen.add(cid)
                ids.append(cid)
    return ids


def _tenure(rng: np.random.Generator, contract: np.ndarray) -> np.ndarray:
    """Whole months: short on month-to-month, long on two-year; a few new one/two-year signups at 0."""
    n = contract.size
    monthly = 1 + np.floor(rng.exponential(17.0, n))
    one = 1 + np.round(rng.beta(1.6, 1.2, n) * (MAX_TENURE - 1))
    two = 1 + np.round(rng.beta(2.8, 0.9, n) * (MAX_TENURE - 1))
    tenure = np.minimum(np.select([contract == 0, contract == 1], [monthly, one], two), MAX_TENURE)
    new = (contract > 0) & (rng.random(n) < 0.005)
    return np.where(new, 0, tenure).astype(np.int64)


# -- the planted truth --------------------------------------------------------------------------


def churn_terms(table: pd.DataFrame) -> pd.DataFrame:
    """The predictor's terms (columns named as in :data:`TERMS`) from the table's columns as text."""
    tenure = pd.to_numeric(table["tenure"]).to_numpy(dtype=float)
    charges = (pd.to_numeric(table["MonthlyCharges"]).to_numpy(dtype=float) - CHARGES_CENTER) / 10.0
    fiber = (table["InternetService"] == "Fiber optic").to_numpy()
    monthly = (table["Contract"] == "Month-to-month").to_numpy()
    return pd.DataFrame({
        "intercept": 1.0,
        "contract_one_year": (table["Contract"] == "One year").to_numpy(dtype=float),
        "contract_two_year": (table["Contract"] == "Two year").to_numpy(dtype=float),
        "log_tenure": np.log1p(tenure),
        "monthly_charges": charges,
        "protective_services": ((table["OnlineSecurity"] == "Yes").to_numpy(dtype=float)
                                + (table["TechSupport"] == "Yes").to_numpy(dtype=float)),
        "fiber_optic": fiber.astype(float),
        "electronic_check": (table["PaymentMethod"] == "Electronic check").to_numpy(dtype=float),
        "senior_citizen": (table["SeniorCitizen"].astype(str) == "1").to_numpy(dtype=float),
        "paperless_billing": (table["PaperlessBilling"] == "Yes").to_numpy(dtype=float),
        "dependents": (table["Dependents"] == "Yes").to_numpy(dtype=float),
        "fiber_x_month_to_month": (fiber & monthly).astype(float),
        "charges_x_short_tenure": np.where(tenure <= SHORT_TENURE, charges, 0.0),
    }, index=table.index)


def churn_log_odds(table: pd.DataFrame, coefficients: dict[str, float] | None = None) -> np.ndarray:
    """The true churn log-odds of every row (``coefficients`` defaults to :data:`COEFFICIENTS`)."""
    coefficients = COEFFICIENTS if coefficients is None else coefficients
    terms = churn_terms(table)
    return terms[list(coefficients)].to_numpy() @ np.array(list(coefficients.values()))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-based ROC-AUC (Mann-Whitney U over positives x negatives), tied scores averaged."""
    positive = np.asarray(labels, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = pd.Series(np.asarray(scores, dtype=float)).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# -- small helpers ------------------------------------------------------------------------------


def _choose(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category index per row, with probability proportional to that row's ``weights``."""
    cumulative = np.cumsum(weights, axis=1)
    u = rng.random(weights.shape[0]) * cumulative[:, -1]
    return np.minimum((cumulative <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _yes_no(flag: np.ndarray) -> np.ndarray:
    return np.where(flag, "Yes", "No")


def _csv_text(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(frame.columns)
    writer.writerows(frame.itertuples(index=False, name=None))
    return buffer.getvalue()


def _local_path(out: str | Path) -> Path:
    text = str(out)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if "://" in text:
        raise ConfigError(f"the subscription table is written to a local folder, not {text}")
    return Path(text)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
