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
from .style import kind_color, legend_beside, series_color


def plot_alpha_depth_panels(table: pd.DataFrame, value: str = "alpha", ncols: int = 4,
                            robust: bool = False) -> Figure:
    """One small panel per projection kind: ``value`` against layer, in the kind's colour, with the
    kind's median as a dashed line and the other kinds in light grey behind it; shared axes.

    The y range holds every value (``robust=False``, default). ``robust=True`` cuts it to the 2nd-98th
    percentile of all values (padded) and marks each value of the kind beyond the top or bottom with a triangle
    at the frame, labelled with the value. Every panel shows its layer ticks. Returns the Figure; ``fig.axes[i]``
    is kind i (forward order), its line labelled with the kind the kind's own (x = layers, y = values).
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
        ax.set_title(f"{kind}: median {wide[kind].median():.2f}, max {wide[kind].max():.1f}", fontsize="medium")
        ax.grid(True, alpha=0.3)
    for i, ax in enumerate(axes[len(kinds):], start=len(kinds)):
        above = i - ncols
        if above >= 0:  # the panel above has nothing under it: give it its own layer ticks
            axes[above].xaxis.set_tick_params(labelbottom=True)
        fig.delaxes(ax)
    if robust:
        lo, hi = _robust_range(wide.to_numpy())
        lo, hi = lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo)
        axes[0].set_ylim(lo, hi)
        for ax, kind in zip(axes, kinds):
            for y_edge, beyond, marker in ((hi, wide[kind] > hi, "^"), (lo, wide[kind] < lo, "v")):
                for layer, v in wide.loc[beyond, kind].items():
                    ax.plot([layer], [y_edge], marker=marker, ms=6, ls="", color=kind_color(kind), clip_on=False)
                    ax.annotate(f"{v:.0f}", (layer, y_edge), xytext=(3, -9 if marker == "^" else 3),
                                textcoords="offset points", fontsize="x-small")
    fig.supxlabel("layer")
    fig.supylabel(value)
    return fig


MODEL_STYLES = {"LLaMA-2-7B": dict(color="#88CCEE", marker="o"), "LLaMA-2-13B": dict(color="#332288", marker="s"),
                "LLaMA-2-70B": dict(color="#AA4499", marker="^"), "SmolLM2": dict(color="#CC6677", marker="D")}
"""Colour and marker of each model in :func:`plot_alpha_kind_dots` with ``colors="models"``: Paul Tol's colours,
none of them a projection kind's (``plots.style.KIND_COLORS``), so that a notebook that colours kinds elsewhere
never gives one colour to a kind and to a model. Looked up by a key found in the label."""


def model_style(label: str) -> dict:
    """:data:`MODEL_STYLES` entry whose key is in ``label`` (longest key first), else the series colour and "o"."""
    for key in sorted(MODEL_STYLES, key=len, reverse=True):
        if key.lower() in str(label).lower():
            return dict(MODEL_STYLES[key])
    return dict(color=series_color(label), marker="o")


def kind_comparison(tables: Mapping[str, pd.DataFrame], ours: str, value: str = "alpha") -> pd.DataFrame:
    """Per projection kind: the mean of ``value`` of the model ``ours`` against the other models' interquartile
    ranges over layers. Columns: kind, ours (mean), others_low (lowest 25th percentile of the others),
    others_high (highest 75th percentile), place: ``"above"`` / ``"below"`` when ours lies outside every other
    model's interquartile range, else ``"within"``."""
    kinds = [k for k in PROJECTIONS if any(k in set(t["projection"]) for t in tables.values())]
    mine = tables[ours].groupby("projection")[value].mean()
    others = [t.groupby("projection")[value] for label, t in tables.items() if label != ours]
    rows = []
    for kind in kinds:
        low = min(float(g.quantile(0.25).get(kind, np.nan)) for g in others)
        high = max(float(g.quantile(0.75).get(kind, np.nan)) for g in others)
        mean = float(mine.get(kind, np.nan))
        place = "above" if mean > high else "below" if mean < low else "within"
        rows.append(dict(kind=kind, ours=mean, others_low=low, others_high=high, place=place))
    return pd.DataFrame(rows)


def kind_comparison_title(comparison: pd.DataFrame, ours: str, others: str = "LLaMA-2") -> str:
    """One line from :func:`kind_comparison`: which kinds sit within the others' range and which above/below."""
    parts = []
    for place, words in (("within", f"within {others}'s layer range"), ("above", "above it"), ("below", "below it")):
        kinds = list(comparison.loc[comparison["place"] == place, "kind"])
        if kinds:
            parts.append(f"{', '.join(kinds)} {words}")
    return f"{ours}'s mean alpha per kind: " + "; ".join(parts)


def plot_alpha_kind_dots(tables: Mapping[str, pd.DataFrame], value: str = "alpha", ax: Axes | None = None,
                         colors: str = "series", title: str | None = None) -> Axes:
    """Mean ``value`` per projection kind as a dot per model, with a bar over the interquartile range
    of that kind's layers (models side by side within each kind; no lines between kinds).

    ``colors``: ``"series"`` (``plots.style.series_color`` of each label) or ``"models"`` (:data:`MODEL_STYLES`:
    colours no projection kind uses, one marker per model; use it in a notebook that colours kinds).
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
        style = model_style(label) if colors == "models" else dict(color=series_color(label), marker="o")
        ax.errorbar(xs, mean, yerr=np.vstack([mean - q1, q3 - mean]).clip(0), fmt=style["marker"], ms=6, capsize=2,
                    color=style["color"], label=label)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_xlabel("projection kind")
    ax.set_ylabel(f"mean {value} (bar: 25-75% of layers)")
    ax.grid(True, axis="y", alpha=0.3)
    legend_beside(ax)
    if title:
        ax.set_title(title, fontsize="medium")
    return ax
