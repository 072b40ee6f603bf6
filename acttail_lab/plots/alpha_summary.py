"""Summaries of an alpha table for reading at a glance: alpha by depth as small multiples (one panel
per projection kind) and alpha per kind as a dot plot with its spread (several models side by side).

Inputs: tidy alpha tables (``spectral.spectra.analyze`` / ``core.reference.published_alphas``:
one row per projection, columns ``layer``, ``projection`` and the value column). Every helper
returns a new Figure or the Axes it drew on; colours follow ``plots.style`` (kinds by name,
models by ``series_color``).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..core.models import PROJECTIONS
from .esd import _new_ax, _robust_range
from .style import kind_color, series_color


def plot_alpha_depth_panels(table: pd.DataFrame, value: str = "alpha", ncols: int = 4,
                            robust: bool = True) -> Figure:
    """One small panel per projection kind: ``value`` against layer, in the kind's colour, with the
    kind's median as a dashed line and the other kinds in light grey behind it; shared axes.

    ``robust``: the y range is the 2nd-98th percentile of all values (padded); outliers leave the
    frame but stay in the lines' data. Returns the Figure; ``fig.axes[i]`` is kind i (forward
    order), its last line the kind's own (x = layers, y = values).
    """
    kinds = [k for k in PROJECTIONS if k in set(table["projection"])]
    nrows = int(np.ceil(len(kinds) / ncols))
    fig = Figure(figsize=(2.7 * ncols, 2.2 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    wide = table.pivot(index="layer", columns="projection", values=value).sort_index()
    for ax, kind in zip(axes, kinds):
        for other in kinds:
            if other != kind:
                ax.plot(wide.index, wide[other], color="0.85", lw=0.8)
        ax.axhline(float(wide[kind].median()), color=kind_color(kind), ls="--", lw=1)
        ax.plot(wide.index, wide[kind], color=kind_color(kind), marker="o", ms=2.5, lw=1.5, label=kind)
        ax.set_title(f"{kind}: median {wide[kind].median():.2f}", fontsize="medium")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(kinds):]:
        fig.delaxes(ax)
    if robust:
        lo, hi = _robust_range(wide.to_numpy())
        axes[0].set_ylim(lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo))
    fig.supxlabel("layer")
    fig.supylabel(value)
    return fig


def plot_alpha_kind_dots(tables: Mapping[str, pd.DataFrame], value: str = "alpha", ax: Axes | None = None) -> Axes:
    """Mean ``value`` per projection kind as a dot per model, with a bar over the interquartile range
    of that kind's layers (models side by side within each kind; no lines between kinds).

    Returns the Axes: one errorbar container per model (label = its key), x = kinds in forward
    order, y = means; the bars span the 25th-75th percentile.
    """
    kinds = [k for k in PROJECTIONS if any(k in set(t["projection"]) for t in tables.values())]
    ax = _new_ax(ax, figsize=(7.0, 4.0))
    width = 0.7 / max(1, len(tables))
    for i, (label, table) in enumerate(tables.items()):
        groups = table.groupby("projection")[value]
        mean = groups.mean().reindex(kinds).to_numpy(float)
        q1 = groups.quantile(0.25).reindex(kinds).to_numpy(float)
        q3 = groups.quantile(0.75).reindex(kinds).to_numpy(float)
        xs = np.arange(len(kinds)) - 0.35 + width * (i + 0.5)
        ax.errorbar(xs, mean, yerr=np.vstack([mean - q1, q3 - mean]).clip(0), fmt="o", ms=6, capsize=2,
                    color=series_color(label), label=label)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_xlabel("projection kind")
    ax.set_ylabel(f"mean {value} (bar: 25-75% of layers)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax
