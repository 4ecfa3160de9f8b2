"""Churn figures: ROC, precision-recall, calibration, lift (cumulative gains) and coefficients.

Every figure is drawn from the small pandas frames the evaluators in :mod:`crm_spark.ml.churn`
return (a threshold curve of at most ``bins + 1`` rows, a calibration table of at most ten
rows, one weight per feature), never from scored rows. Figures are ``matplotlib.figure.Figure``
objects (Agg canvas, no pyplot state), so they are safe in a headless job; the caller logs them.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

_COEFFICIENTS_SHOWN = 20


def roc_figure(curves: Mapping[str, pd.DataFrame], aucs: Mapping[str, float]) -> Figure:
    """True- vs false-positive rate per model, with the chance diagonal."""
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(curve["fpr"], curve["recall"], label=f"{name} (AUC {aucs.get(name, float('nan')):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_title("ROC on the evaluation date")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def pr_figure(curves: Mapping[str, pd.DataFrame], aucs: Mapping[str, float], *, base_rate: float) -> Figure:
    """Precision vs recall per model, with the base rate (a random ranking's precision)."""
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    for name, curve in curves.items():
        flagged = curve[(curve["tp"] + curve["fp"]) > 0]
        ax.plot(flagged["recall"], flagged["precision"], label=f"{name} (AUC {aucs.get(name, float('nan')):.3f})")
    ax.axhline(base_rate, linestyle="--", color="grey", linewidth=1, label=f"base rate {base_rate:.2f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall on the evaluation date")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def calibration_figure(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Observed churn rate vs mean predicted probability per probability group (reliability diagram)."""
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for name, table in tables.items():
        ax.plot(table["mean_probability"], table["observed_rate"], marker="o", label=name)
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Calibration on the evaluation date")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def lift_figure(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """Cumulative gains (share of churners caught) and lift vs share of customers targeted."""
    fig = Figure(figsize=(10.0, 4.5))
    gains, lift = fig.subplots(1, 2)
    for name, curve in curves.items():
        targeted = curve[curve["share_flagged"] > 0]
        gains.plot(targeted["share_flagged"], targeted["recall"], label=name)
        # lift = (churners caught / flagged) / base rate = recall / share flagged
        lift.plot(targeted["share_flagged"], targeted["recall"] / targeted["share_flagged"], label=name)
    gains.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="random")
    gains.axvline(0.1, color="grey", linewidth=0.8, alpha=0.6)
    gains.set_xlabel("share of customers targeted (highest probability first)")
    gains.set_ylabel("share of churners caught")
    gains.set_title("Cumulative gains")
    lift.axhline(1.0, linestyle="--", color="grey", linewidth=1)
    lift.axvline(0.1, color="grey", linewidth=0.8, alpha=0.6)
    lift.set_xlabel("share of customers targeted")
    lift.set_ylabel("lift (churn rate in target / overall)")
    lift.set_title("Lift")
    for ax in (gains, lift):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def weights_figure(weights: pd.DataFrame, *, title: str, xlabel: str) -> Figure:
    """Horizontal bars of the largest weights by magnitude (``feature, weight`` frame)."""
    shown = weights.head(_COEFFICIENTS_SHOWN).iloc[::-1]
    fig = Figure(figsize=(7.0, 0.3 * len(shown) + 1.5))
    ax = fig.subplots()
    colours = ["tab:red" if w > 0 else "tab:blue" for w in shown["weight"]]
    ax.barh(shown["feature"], shown["weight"], color=colours)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
