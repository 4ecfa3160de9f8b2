"""``generate_subscriptions``: the Telco-style churn table, its planted effects and its answer key.

numpy and pandas only (no Spark): the default table (5000 customers, seed 7) is written once per
module; the scikit-learn check is skipped where scikit-learn is not installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crm_spark.errors import ConfigError
from crm_spark.generate.subscription import (
    COLUMNS,
    NO_INTERNET,
    SERVICES,
    SubscriptionSummary,
    churn_log_odds,
    generate_subscriptions,
)

PROJECT = Path(__file__).resolve().parents[1]
SEED = 7
CUSTOMERS = 5000
YES_NO = {"Yes", "No"}


@dataclass(frozen=True)
class Generated:
    summary: SubscriptionSummary
    table: pd.DataFrame  # the CSV as text, " " kept
    key: dict
    probability: pd.Series  # the answer key's churn_probability, in the table's order

    @property
    def churned(self) -> pd.Series:
        return self.table["Churn"] == "Yes"

    @property
    def log_odds(self) -> pd.Series:
        p = self.probability
        return np.log(p / (1 - p))


def _read(out: Path, summary: SubscriptionSummary) -> Generated:
    table = pd.read_csv(summary.path, dtype=str, keep_default_na=False)
    probabilities = pd.read_csv(out / "_truth" / "subscription_probabilities.csv", dtype={"customerID": str})
    assert probabilities["customerID"].tolist() == table["customerID"].tolist()
    key = json.loads(summary.truth_path.read_text(encoding="utf-8"))
    return Generated(summary, table, key, probabilities["churn_probability"])


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    out = tmp_path_factory.mktemp("subscriptions")
    return _read(out, generate_subscriptions(out, customers=CUSTOMERS, seed=SEED))


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _rate(mask: pd.Series, churned: pd.Series) -> float:
    assert mask.sum() >= 30, "too few customers in the group to compare"
    return float(churned[mask].mean())


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_subscriptions(tmp_path / name, customers=1000, seed=seed, snapshot=date(2024, 1, 31))

    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert sorted(a) == ["_truth/subscription.json", "_truth/subscription_probabilities.csv",
                         "telco/subscriptions-2024-01-31.csv"]
    assert a == b
    assert sorted(c) == sorted(a)
    assert all(a[name] != c[name] for name in a)


def test_summary_matches_the_files(generated: Generated) -> None:
    s = generated.summary
    assert s.path.name == "subscriptions-2024-06-30.csv" and s.path.parent.name == "telco"
    assert s.rows == len(generated.table) == CUSTOMERS
    assert s.churn_rate == pytest.approx(generated.churned.mean())
    key = generated.key
    assert (key["seed"], key["snapshot"], key["rows"]) == (SEED, "2024-06-30", CUSTOMERS)
    assert key["churn_rate"] == pytest.approx(s.churn_rate, abs=1e-6)
    assert key["bayes_roc_auc"] == pytest.approx(s.bayes_roc_auc, abs=1e-6)
    assert "intercept" in key["coefficients"]
    assert key["interactions"] and set(key["interactions"]) <= set(key["coefficients"])
    assert all(isinstance(line, str) and line for line in key["interactions"].values())


def test_exact_columns_and_value_sets(generated: Generated) -> None:
    t = generated.table
    header = generated.summary.path.read_text(encoding="utf-8").splitlines()[0]
    assert header == ("customerID,gender,SeniorCitizen,Partner,Dependents,tenure,Contract,PaperlessBilling,"
                      "PaymentMethod,InternetService,OnlineSecurity,TechSupport,StreamingTV,StreamingMovies,"
                      "MonthlyCharges,TotalCharges,Churn")
    assert tuple(t.columns) == COLUMNS
    assert t["customerID"].is_unique
    assert t["customerID"].str.fullmatch(r"\d{4}-[A-Z]{5}").all()
    assert set(t["gender"]) == {"Female", "Male"}
    assert set(t["SeniorCitizen"]) == {"0", "1"}
    for column in ("Partner", "Dependents", "PaperlessBilling", "Churn"):
        assert set(t[column]) == YES_NO, column
    assert t["tenure"].str.fullmatch(r"\d+").all()
    tenure = t["tenure"].astype(int)
    assert tenure.min() == 0 and tenure.max() == 72
    assert set(t["Contract"]) == {"Month-to-month", "One year", "Two year"}
    assert set(t["PaymentMethod"]) == {"Electronic check", "Mailed check", "Bank transfer (automatic)",
                                       "Credit card (automatic)"}
    assert set(t["InternetService"]) == {"DSL", "Fiber optic", "No"}
    for column in SERVICES:
        assert set(t[column]) == {*YES_NO, NO_INTERNET}, column
    assert t["MonthlyCharges"].str.fullmatch(r"\d+\.\d\d").all()
    charges = t["MonthlyCharges"].astype(float)
    assert 18 <= charges.min() and charges.max() <= 125


def test_no_internet_service_exactly_when_internet_service_is_no(generated: Generated) -> None:
    t = generated.table
    without = t["InternetService"] == "No"
    for column in SERVICES:
        assert ((t[column] == NO_INTERNET) == without).all(), column
    charges = t["MonthlyCharges"].astype(float)
    assert charges[without].max() < charges[t["InternetService"] == "DSL"].median()
    assert charges[t["InternetService"] == "DSL"].median() < charges[t["InternetService"] == "Fiber optic"].median()


def test_total_charges_blank_only_at_tenure_zero_and_about_tenure_times_monthly(generated: Generated) -> None:
    t = generated.table
    tenure = t["tenure"].astype(int)
    blank = t["TotalCharges"] == " "
    assert (blank == (tenure == 0)).all()
    assert blank.sum() >= 1
    assert t.loc[~blank, "TotalCharges"].str.fullmatch(r"\d+\.\d\d").all()
    total = t.loc[~blank, "TotalCharges"].astype(float)
    expected = tenure[~blank] * t.loc[~blank, "MonthlyCharges"].astype(float)
    ratio = total / expected
    assert ratio.between(0.89, 1.11).all()
    assert (ratio != 1).mean() > 0.5  # noise, not a product
    first_month = tenure == 1
    assert (t.loc[first_month, "TotalCharges"] == t.loc[first_month, "MonthlyCharges"]).all()


def test_churn_rate_and_bayes_auc_recomputed_from_the_files(generated: Generated) -> None:
    assert 0.2 <= generated.summary.churn_rate <= 0.35
    assert 0.8 <= generated.summary.bayes_roc_auc <= 0.9
    # the AUC by its definition: P(score of a churner > score of a stayer), ties counting half
    p = generated.probability.to_numpy()
    y = generated.churned.to_numpy()
    pos, neg = p[y][:, None], p[~y][None, :]
    auc = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert auc == pytest.approx(generated.key["bayes_roc_auc"], abs=1e-5)


def test_probabilities_follow_the_published_coefficients(generated: Generated) -> None:
    eta = churn_log_odds(generated.table, generated.key["coefficients"])
    assert np.abs(1 / (1 + np.exp(-eta)) - generated.probability.to_numpy()).max() <= 1e-6
    # and the drawn labels follow the probabilities: each decile's churn rate within 4 standard errors
    deciles = pd.qcut(generated.probability, 10, labels=False)
    by_decile = pd.DataFrame({"p": generated.probability, "y": generated.churned}).groupby(deciles)
    mean_p, rate, n = by_decile["p"].mean(), by_decile["y"].mean(), by_decile["y"].size()
    assert ((rate - mean_p).abs() < 4 * np.sqrt(mean_p * (1 - mean_p) / n)).all()


def test_each_planted_effect_shows_in_the_churn_rates(generated: Generated) -> None:
    t, churned = generated.table, generated.churned
    rate = lambda mask: _rate(mask, churned)  # noqa: E731
    contract = t["Contract"]
    assert rate(contract == "Month-to-month") > rate(contract == "One year") > rate(contract == "Two year")
    assert rate(contract == "Month-to-month") > 2 * rate(contract == "One year")
    tenure = t["tenure"].astype(int)
    assert rate(tenure <= 6) > 3 * rate(tenure >= 48)
    charges = t["MonthlyCharges"].astype(float)
    assert rate(charges >= charges.quantile(0.75)) > 2 * rate(charges <= charges.quantile(0.25))
    online = t["InternetService"] != "No"
    protective = (t["OnlineSecurity"] == "Yes").astype(int) + (t["TechSupport"] == "Yes").astype(int)
    assert rate(online & (protective == 0)) > rate(online & (protective == 1)) > rate(online & (protective == 2))
    internet = t["InternetService"]
    assert rate(internet == "Fiber optic") > rate(internet == "DSL") > rate(internet == "No")
    payment = t["PaymentMethod"]
    echeck = rate(payment == "Electronic check")
    assert all(echeck > rate(payment == other) for other in set(payment) - {"Electronic check"})
    assert rate(t["SeniorCitizen"] == "1") > rate(t["SeniorCitizen"] == "0")


def test_the_planted_interactions_are_real(generated: Generated) -> None:
    t, log_odds = generated.table, generated.log_odds
    internet, contract = t["InternetService"], t["Contract"]

    def fiber_minus_dsl(term: str) -> float:
        within = contract == term
        fiber, dsl = within & (internet == "Fiber optic"), within & (internet == "DSL")
        return float(log_odds[fiber].mean() - log_odds[dsl].mean())

    assert fiber_minus_dsl("Month-to-month") - fiber_minus_dsl("Two year") > 0.3

    tenure, charges = t["tenure"].astype(int), t["MonthlyCharges"].astype(float)

    def slope(mask: pd.Series) -> float:  # log-odds per 10.00 of monthly charges, same contract
        mask = mask & (contract == "Month-to-month")
        return float(np.polyfit(charges[mask] / 10, log_odds[mask], 1)[0])

    assert slope(tenure.between(1, 6)) - slope(tenure.between(7, 12)) > 0.05


def test_logistic_regression_comes_close_to_the_bayes_auc(generated: Generated) -> None:
    """The planted signal is learnable: a one-hot logistic regression on a stratified 80/20 split
    scores within 0.03 of the true probabilities' AUC on the same test rows."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t = generated.table
    categorical = [c for c in COLUMNS if c not in {"customerID", "tenure", "MonthlyCharges", "TotalCharges", "Churn"}]
    numeric = pd.DataFrame({
        "tenure": t["tenure"].astype(float),
        "MonthlyCharges": t["MonthlyCharges"].astype(float),
        "TotalCharges": pd.to_numeric(t["TotalCharges"].str.strip().replace("", "0")),
    })
    features = pd.concat([numeric, pd.get_dummies(t[categorical], drop_first=True).astype(float)], axis=1)
    y = generated.churned.to_numpy()
    train, test = train_test_split(np.arange(len(t)), test_size=0.2, stratify=y, random_state=SEED)

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features.iloc[train], y[train])
    lr_auc = roc_auc_score(y[test], model.predict_proba(features.iloc[test])[:, 1])
    bayes_test_auc = roc_auc_score(y[test], generated.probability.to_numpy()[test])

    assert abs(lr_auc - bayes_test_auc) <= 0.03
    assert lr_auc > 0.8


def test_fewer_than_100_customers_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 100"):
        generate_subscriptions(tmp_path, customers=99)
    assert not any(tmp_path.iterdir())


def test_cli_shape_subscription_writes_the_table_without_spark(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("crm-spark")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "crm_spark.cli"]
    env = {k: v for k, v in os.environ.items() if k not in {"CRM_SPARK_ENV", "CRM_SPARK_CONF_DIR"}}
    result = subprocess.run(
        [*command, "generate", "--shape", "subscription", "--out", str(tmp_path), "--customers", "300",
         "--seed", "3", "--snapshot", "2024-03-31"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    path = tmp_path / "telco" / "subscriptions-2024-03-31.csv"
    assert str(path) in lines[0] and "300 rows" in lines[0]
    assert re.search(r"churn rate 0\.\d{3}, Bayes ROC-AUC 0\.\d{4}", lines[0])
    assert len(path.read_text(encoding="utf-8").splitlines()) == 301
    assert json.loads((tmp_path / "_truth" / "subscription.json").read_text())["seed"] == 3
