"""Figures of a segmentation run, drawn from small pandas frames (aggregates and a sample).

Each function returns a :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot state,
no display needed); the stage logs it to MLflow and keeps a PNG for the report. Inputs:

* ``profiles``: the rows of ``gold.segment_profiles`` of one date (``segment_name``,
  ``customers``, ``customer_share``, ``revenue_share`` and feature means);
* ``population``: per feature, the mean and standard deviation over all customers of the date;
* ``points``: at most a few thousand customers on two principal components;
* ``metrics_by_k``: :func:`crm_spark.ml.segment.clustering_metrics` per k tried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_PALETTE = "tab10"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _ordered(profiles: pd.DataFrame) -> pd.DataFrame:
    """Largest segment first; the name breaks ties so the order never depends on row order."""
    return profiles.sort_values(["customers", "segment_name"], ascending=[False, True]).reset_index(drop=True)


def segment_sizes_figure(profiles: pd.DataFrame) -> Figure:
    """Share of customers next to share of revenue, per segment: where the value sits."""
    data = _ordered(profiles)
    fig = _figure(8.0, 0.55 * len(data) + 1.8)
    ax = fig.subplots()
    y = np.arange(len(data))
    height = 0.38
    ax.barh(y - height / 2, data["customer_share"] * 100, height, label="customers", color="#4c72b0")
    ax.barh(y + height / 2, data["revenue_share"] * 100, height, label="revenue", color="#dd8452")
    for i, row in data.iterrows():
        ax.text(row["customer_share"] * 100, i - height / 2, f" {int(row['customers']):,}", va="center", fontsize=8)
    ax.set_yticks(y, data["segment_name"])
    ax.invert_yaxis()
    ax.set_xlabel("share of all customers / of all revenue (%)")
    ax.set_title(f"Segment sizes ({int(data['customers'].sum()):,} customers)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def profile_heatmap_figure(
    profiles: pd.DataFrame, population: Mapping[str, tuple[float, float]], columns: Sequence[str]
) -> Figure:
    """Segments x features: colour = (segment mean - population mean) / population standard
    deviation, text = the segment mean. Shows what sets each segment apart."""
    data = _ordered(profiles)
    shown = [c for c in columns if c in data.columns and c in population]
    z = np.zeros((len(data), len(shown)))
    for j, c in enumerate(shown):
        mean, sd = population[c]
        z[:, j] = (data[c].to_numpy(float) - mean) / sd if sd and sd > 0 else 0.0
    fig = _figure(max(6.0, 0.85 * len(shown) + 2.5), 0.5 * len(data) + 2.4)
    ax = fig.subplots()
    limit = max(1.0, float(np.nanmax(np.abs(z)))) if z.size else 1.0
    image = ax.imshow(z, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(data)):
        for j, c in enumerate(shown):
            ax.text(j, i, _short(float(data.at[i, c])), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(shown)), shown, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(data)), data["segment_name"], fontsize=8)
    fig.colorbar(image, ax=ax, label="standard deviations from the mean", shrink=0.8)
    ax.set_title("Segment profiles: mean per feature", fontsize=10)
    fig.tight_layout()
    return fig


def projection_figure(points: pd.DataFrame, explained: tuple[float, float]) -> Figure:
    """Customers on the first two principal components of the scaled features."""
    fig = _figure(7.5, 5.5)
    ax = fig.subplots()
    names = sorted(points["segment_name"].dropna().unique())
    colours = _colours(len(names))
    for name, colour in zip(names, colours):
        part = points[points["segment_name"] == name]
        ax.scatter(part["pc1"], part["pc2"], s=6, alpha=0.55, color=colour, label=f"{name} ({len(part):,})",
                   edgecolors="none")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.set_title(f"Segments on two principal components ({len(points):,} customers sampled)", fontsize=10)
    ax.legend(fontsize=7, markerscale=2.5, loc="best")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def k_selection_figure(metrics_by_k: Mapping[int, Mapping[str, float]], chosen_k: int) -> Figure:
    """Silhouette and cost per k tried, the chosen k marked."""
    ks = sorted(metrics_by_k)
    fig = _figure(7.0, 4.2)
    ax = fig.subplots()
    ax.plot(ks, [metrics_by_k[k]["silhouette"] for k in ks], "o-", color="#4c72b0", label="silhouette")
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("silhouette (higher is better)", color="#4c72b0")
    ax.set_xticks(ks)
    cost = ax.twinx()
    cost.plot(ks, [metrics_by_k[k]["cost"] for k in ks], "s--", color="#dd8452", label="cost")
    cost.set_ylabel("within-cluster sum of squares", color="#dd8452")
    ax.axvline(chosen_k, color="grey", linestyle=":", label=f"chosen k = {chosen_k}")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Choice of k", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _colours(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps[_PALETTE]
    return [cmap(i % cmap.N) for i in range(n)]


def _short(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}"
