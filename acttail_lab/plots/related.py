"""Figures of notebook 05: threshold spread per token, FFN active-set overlap.

Each helper takes ``ax=None`` and returns the Axes (a new Figure when none is
given; no pyplot state). Perplexity curves of the related methods use
:func:`acttail_lab.plots.perplexity.plot_perplexity_vs_sparsity` (with
``x="realised_sparsity"`` for a fair axis).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from ..core.models import PROJECTIONS
from .esd import _new_ax
from .style import GREY, color_scale, kind_color

SITE_KINDS = {"mlp_in": "gate", "attn_in": "q", "o": "o", "down": "down"}
"""Input site -> the projection kind whose colour it takes (``mlp_in`` feeds gate and up)."""


def _target_color(target: float) -> tuple:
    """Colour of a target sparsity: its place on the fixed sparsity colour scale (by value, not position)."""
    from matplotlib import colormaps

    scale = color_scale("sparsity")
    return colormaps[scale["cmap"]](0.25 + 0.6 * (float(target) - scale["vmin"]) / (scale["vmax"] - scale["vmin"]))


def plot_token_spread(by_kind: pd.DataFrame, strategy: str, ax: Axes | None = None) -> Axes:
    """Realised per-token sparsity by projection kind for one threshold strategy.

    Input: :func:`acttail_lab.measure.related.spread_by_kind`. Draws, per target, one
    point per kind at the mean realised sparsity with a bar from p05 to p95
    (the 5th-95th percentile of the per-token sparsity, averaged over layers),
    and a dashed line at the target. Returns the Axes (one errorbar container per target).
    """
    rows = by_kind[by_kind["strategy"] == strategy]
    if rows.empty:
        raise ValueError(f"No rows for strategy {strategy!r}; it has {sorted(by_kind['strategy'].unique())}.")
    ax = _new_ax(ax, figsize=(6, 3.8))
    kinds = [k for k in PROJECTIONS if k in set(rows["projection"])]
    targets = sorted(rows["target"].unique())
    for j, target in enumerate(targets):
        color = _target_color(target)
        part = rows[rows["target"] == target].set_index("projection").loc[kinds]
        xs = np.arange(len(kinds)) + (j - (len(targets) - 1) / 2) * 0.25
        mean = part["realised_sparsity"].to_numpy(float)
        err = np.vstack([mean - part["realised_p05"].to_numpy(float), part["realised_p95"].to_numpy(float) - mean])
        ax.errorbar(xs, mean, yerr=np.clip(err, 0, None), fmt="o", capsize=3, color=color,
                    label=f"target {target:g}")
        ax.axhline(target, color=color, ls="--", lw=0.8)
    ax.set_xticks(np.arange(len(kinds)), kinds)
    ax.set_ylim(0, 1)
    ax.set_ylabel("realised sparsity per token")
    ax.set_title(f"{strategy}: mean and 5-95% of tokens")
    ax.legend(fontsize="small", frameon=False)
    return ax


def plot_active_set_overlap(overlap: pd.DataFrame, sparsity: float, ax: Axes | None = None,
                            metric: str = "hit") -> Axes:
    """Overlap of FFN active sets per layer at one sparsity, with the chance level.

    Input: :func:`acttail_lab.measure.active_sets.active_set_overlap`. ``metric``: ``"hit"``
    (fraction of the next set already active) or ``"jaccard"``. Draws, for each site,
    the token-to-token (solid) and layer-to-layer (dashed) overlap, and their chance
    levels (dotted, grey). Returns the Axes.
    """
    rows = overlap[np.isclose(overlap["sparsity"], sparsity)]
    if rows.empty:
        raise ValueError(f"No rows at sparsity {sparsity}; the table has {sorted(overlap['sparsity'].unique())}.")
    ax = _new_ax(ax, figsize=(6.5, 4))
    for site, part in rows.groupby("site", sort=True):
        color = kind_color(SITE_KINDS.get(site, site))
        part = part.sort_values("layer")
        layers = part["layer"].to_numpy()
        ax.plot(layers, part[f"token_{metric}"], color=color, marker="o", ms=3, label=f"{site}: next token")
        ax.plot(layers, part[f"layer_{metric}"], color=color, ls="--", marker="s", ms=3, label=f"{site}: next layer")
        ax.plot(layers, part[f"token_{metric}_chance"], color=GREY, ls=":", lw=1)
    ax.plot([], [], color=GREY, ls=":", label="chance (same set sizes)")
    ax.set_xlabel("layer")
    ax.set_ylabel("hit rate |A∩B|/|B|" if metric == "hit" else "Jaccard overlap")
    ax.set_ylim(0, 1)
    ax.set_title(f"FFN active sets at {sparsity:.0%} sparsity")
    ax.legend(fontsize="small", frameon=False, loc="lower right")
    return ax
