"""The report's own figures, drawn from small pandas frames (aggregates and a bounded sample).

The model stages log their figures to MLflow (ROC, segment profiles, decile calibration, ...) and
the report embeds those; the functions here draw what no stage draws: the data overview, the
customer base and the score distributions. Each returns a :class:`matplotlib.figure.Figure` on the
Agg canvas (no pyplot state, no display), titled, with axis labels in units and numbers written for
people (thousands separators, percentages).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

THOUSANDS = FuncFormatter(lambda v, _: f"{v:,.0f}")
_BAR = "#4C72B0"
_ALT = "#DD8452"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _label_bars(ax, bars, values: Sequence[float], fmt: str) -> None:  # noqa: ANN001 - matplotlib artists
    """Write each bar's value just past its end (horizontal bars)."""
    top = max(values) if len(values) else 0
    for bar, value in zip(bars, values):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, format(value, fmt),
                va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15 if top else 1)


def quarantine_figure(sources: pd.DataFrame) -> Figure:
    """Quarantine rate per silver table (``table``, ``silver_rows``, ``quarantined_rows``), each bar
    labelled with its counts."""
    data = sources.sort_values("table", ascending=False).reset_index(drop=True)
    refined = (data["silver_rows"] + data["quarantined_rows"]).astype(float)
    rate = (data["quarantined_rows"] / refined.where(refined > 0)).fillna(0.0)
    fig = _figure(8.0, 0.45 * len(data) + 1.6)
    ax = fig.subplots()
    bars = ax.barh(data["table"], rate, color=_ALT)
    top = float(rate.max()) or 0.01
    for bar, r, q, n in zip(bars, rate, data["quarantined_rows"], refined):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                f"{r:.1%}  ({q:,.0f} of {n:,.0f} rows)", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.6)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("rows quarantined, share of rows refined (silver + quarantine)")
    ax.set_title("Quarantine rate per silver table", fontsize=10)
    fig.tight_layout()
    return fig


def reasons_figure(reasons: pd.DataFrame) -> Figure:
    """Quarantined rows per reason (``reason``, ``rows``), largest first."""
    data = reasons.sort_values(["rows", "reason"], ascending=[True, False]).reset_index(drop=True)
    fig = _figure(8.0, 0.4 * len(data) + 1.6)
    ax = fig.subplots()
    bars = ax.barh(data["reason"], data["rows"], color=_ALT)
    _label_bars(ax, bars, data["rows"].tolist(), ",.0f")
    ax.xaxis.set_major_formatter(THOUSANDS)
    ax.set_xlabel("quarantined rows")
    ax.set_title("Why rows were quarantined (top reasons, all tables)", fontsize=10)
    fig.tight_layout()
    return fig


def rfm_figure(customers: pd.DataFrame) -> Figure:
    """Histograms of recency (days), frequency (orders) and monetary value of the customers who bought."""
    fig = _figure(11.0, 3.4)
    axes = fig.subplots(1, 3)
    panels = (
        ("recency_days", "days since the last order", "Recency"),
        ("frequency", "orders", "Frequency"),
        ("monetary", "spend (currency units, log scale)", "Monetary value"),
    )
    for ax, (column, xlabel, title) in zip(axes, panels):
        values = customers[column].dropna().to_numpy(dtype=float)
        if column == "monetary":
            values = values[values > 0]
            low, high = (max(values.min(), 1.0), values.max()) if len(values) else (1.0, 1.0)
            bins = np.geomspace(low, high, 30) if high > low * 1.01 else 10  # one value: linear bins around it
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(THOUSANDS)
        elif column == "frequency":
            top = int(np.percentile(values, 99)) if len(values) else 1
            bins = np.arange(0.5, max(top, 1) + 1.5, 1.0)
            values = np.minimum(values, top)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            bins = 30
        ax.hist(values, bins=bins, color=_BAR, edgecolor="white", linewidth=0.4)
        ax.set_xlabel(xlabel + (" (99th percentile and above in the last bar)" if column == "frequency" else ""),
                      fontsize=8)
        ax.set_ylabel("customers")
        ax.yaxis.set_major_formatter(THOUSANDS)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"RFM of the {len(customers):,} customers with an order", fontsize=11)
    fig.tight_layout()
    return fig


def counts_figure(counts: pd.DataFrame, *, label: str, title: str, order: Sequence[str] | None = None) -> Figure:
    """Customers per category (``label``, ``customers``): horizontal bars with counts and shares."""
    data = counts.copy()
    if order is not None:
        rank = {name: i for i, name in enumerate(order)}
        data = data.assign(_o=data[label].map(lambda v: rank.get(v, len(rank)))).sort_values(["_o", label])
    else:
        data = data.sort_values(["customers", label], ascending=[False, True])
    data = data.iloc[::-1].reset_index(drop=True)
    fig = _figure(7.0, 0.4 * len(data) + 1.5)
    ax = fig.subplots()
    bars = ax.barh(data[label].astype(str), data["customers"], color=_BAR)
    total = float(data["customers"].sum()) or 1.0
    top = float(data["customers"].max()) if len(data) else 1.0
    for bar, n in zip(bars, data["customers"]):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, f"{n:,.0f} ({n / total:.0%})",
                va="center", fontsize=8)
    ax.set_xlim(0, top * 1.3)
    ax.xaxis.set_major_formatter(THOUSANDS)
    ax.set_xlabel("customers")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def probability_figure(probabilities: np.ndarray, bands: pd.DataFrame) -> Figure:
    """Histogram of churn probabilities with the risk bands' lower bounds (``band``, ``min_probability``)."""
    fig = _figure(8.0, 3.6)
    ax = fig.subplots()
    ax.hist(probabilities, bins=np.linspace(0, 1, 41), color=_BAR, edgecolor="white", linewidth=0.4)
    for _, row in bands.iterrows():
        if row["min_probability"] > 0:
            ax.axvline(row["min_probability"], color="grey", linestyle="--", linewidth=1)
            ax.text(row["min_probability"], ax.get_ylim()[1] * 0.95, f" {row['band']} from here", fontsize=8,
                    va="top")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(THOUSANDS)
    ax.set_xlabel("churn probability (champion model)")
    ax.set_ylabel("customers")
    ax.set_title(f"Churn probability of the {len(probabilities):,} customers scored", fontsize=10)
    fig.tight_layout()
    return fig


def spend_figure(predicted: np.ndarray, *, horizon_days: int) -> Figure:
    """Distribution of predicted spend over the horizon (log bins; customers predicted below 1 apart)."""
    fig = _figure(8.0, 3.6)
    ax = fig.subplots()
    positive = predicted[predicted >= 1.0]
    low = int((predicted < 1.0).sum())
    if len(positive):
        ax.hist(positive, bins=np.geomspace(1.0, max(positive.max(), 1.01), 40), color=_BAR, edgecolor="white",
                linewidth=0.4)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(THOUSANDS)
    ax.yaxis.set_major_formatter(THOUSANDS)
    ax.set_xlabel(f"predicted spend over the next {horizon_days} days (currency units, log scale)")
    ax.set_ylabel("customers")
    ax.set_title(f"Predicted spend of {len(predicted):,} customers ({low:,} predicted under 1, not shown)",
                 fontsize=10)
    fig.tight_layout()
    return fig

