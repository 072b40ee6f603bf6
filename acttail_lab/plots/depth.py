"""Matplotlib figures of depth utilisation (``acttail_lab.measure.depth``): per-layer scores, variance
profiles under sparsity, and budget-vs-score scatters.

Every helper takes ``ax=None`` and returns the Axes (a new ``matplotlib.figure.Figure``
without pyplot state when no ``ax`` is given), like ``plots.esd`` and ``plots.sensitivity``.
Inputs: the per-layer table of ``depth.depth_table`` / ``depth.load_depth()[0]`` and the
long table of ``depth.variance_under_sparsity`` / ``depth.load_depth()[1]``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from .esd import _new_ax
from .style import OKABE_ITO, strategy_style

TARGET_LINESTYLES = ("-", "--", "-.", ":")
"""Line style of the i-th smallest target in :func:`plot_variance_profiles` (colour = strategy)."""
SCORE_COLOR, OVERLAY_COLOR = OKABE_ITO["sky_blue"], OKABE_ITO["vermillion"]

LABELS = {
    "delta_nll": "NLL increase when skipped (nats)", "jacobian_gap": "Jacobian gap ||Jv - v|| / ||v||",
    "block_influence": "1 - cos(h_in, h_out)", "rel_update": "||h_out - h_in|| / ||h_in||",
    "growth": "variance growth var_out / var_in", "growth_median": "variance growth (per-token medians)",
    "var_out": "var_out (mean over tokens)", "var_out_median": "var_out (median over tokens)",
    "alpha_mean": "mean alpha of the layer", "alpha_weighted": "parameter-weighted mean alpha",
}
"""Axis labels of the known columns (others are labelled by their name)."""


def _label(column: str) -> str:
    if column.startswith("budget_"):
        strategy, _, target = column[len("budget_"):].partition("@")
        return f"{strategy} budget of the layer at {target}"
    return LABELS.get(column, column)


def _require(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"The table has no column(s) {missing} (it has {list(df.columns)}). "
                       "Fix: pass depth.depth_table(...) / depth.load_depth() tables.")


def plot_layer_scores(df: pd.DataFrame, score: str = "delta_nll", overlay: str | None = "alpha_mean",
                      ax: Axes | None = None, logy: bool = False, color: str = SCORE_COLOR) -> Axes:
    """One bar per layer for ``score``, and ``overlay`` as a line in a second panel below (shared x).

    With a given ``ax`` there is no room for a second panel: the overlay then goes on a twin y-axis.

    Args:
        df: per-layer table (columns layer, ``score`` and ``overlay``).
        score: the bar height (e.g. delta_nll, jacobian_gap, block_influence, growth).
        overlay: a second per-layer column drawn in the panel below (None: none).
        logy: log-scaled score axis (bars <= 0 are then not visible).
    Returns:
        The score Axes: ``len(df)`` bars in layer order (``ax.patches``). The overlay
        axes (when drawn) is ``ax.overlay_axes``, with one line (x = layer, y = overlay).
    """
    _require(df, "layer", score, *([overlay] if overlay else []))
    df = df.sort_values("layer")
    below = None
    if ax is None and overlay:
        ax, below = Figure(figsize=(7.0, 5.0), layout="constrained").subplots(2, 1, sharex=True, height_ratios=(3, 2))
    ax = _new_ax(ax, figsize=(7.0, 3.6))
    ax.bar(df["layer"], df[score], color=color, label=_label(score))
    ax.set_xlabel("layer")
    ax.set_ylabel(_label(score))
    if logy:
        ax.set_yscale("log")
    ax.overlay_axes = None
    if overlay:
        other = below if below is not None else ax.twinx()
        other.plot(df["layer"], df[overlay], color=OVERLAY_COLOR, marker="o", ms=3, lw=1.2, label=_label(overlay))
        other.set_ylabel(_label(overlay), color=OVERLAY_COLOR if below is None else "black")
        if below is not None:
            other.set_xlabel("layer")
            other.grid(True, alpha=0.3)
        ax.overlay_axes = other
    return ax


def plot_variance_profiles(long_df: pd.DataFrame, ax: Axes | None = None, value: str = "var_out",
                           relative_to: str | None = None, logy: bool = True, legend: bool = True) -> Axes:
    """``value`` against layer, one line per condition (dense, uniform@0.5, acttail@0.5, ...).

    Args:
        long_df: ``depth.variance_under_sparsity`` table (condition, strategy, target, layer, ``value``).
        value: var_out, var_out_median, growth, growth_median, rel_update, ...
        relative_to: a condition (e.g. "dense"): draw ``value`` divided by that
            condition's, layer by layer (that condition becomes the line y = 1).
        logy: log-scaled y axis.
        legend: draw a legend (off for a panel beside another that has one: same lines, less ink over data).
    Returns:
        The Axes: one line per condition in order of appearance, labelled by the
        condition; colour and marker by strategy (``plots.style``), line style by target.
    """
    _require(long_df, "condition", "layer", value)
    ax = _new_ax(ax, figsize=(6.5, 4.0))
    conditions = list(dict.fromkeys(long_df["condition"]))
    if relative_to is not None and relative_to not in conditions:
        raise KeyError(f"No condition {relative_to!r} to divide by (have {conditions}).")
    reference = (long_df[long_df["condition"] == relative_to].set_index("layer")[value]
                 if relative_to is not None else None)
    targets = sorted({float(t) for t in long_df.get("target", pd.Series([0.0])) if float(t) > 0})
    linestyles = {t: TARGET_LINESTYLES[i % len(TARGET_LINESTYLES)] for i, t in enumerate(targets)}
    for condition in conditions:
        part = long_df[long_df["condition"] == condition].sort_values("layer")
        y = part[value].to_numpy(dtype=float)
        if reference is not None:
            y = y / reference.reindex(part["layer"]).to_numpy(dtype=float)
        strategy = str(part["strategy"].iloc[0]) if "strategy" in part else condition
        style = strategy_style(strategy)
        target = float(part["target"].iloc[0]) if "target" in part else 0.0
        style["linestyle"] = linestyles.get(target, "-")
        style["marker"] = style["marker"] or None
        ax.plot(part["layer"], y, ms=2.5, lw=2.0 if strategy == "dense" else 1.5, label=condition, **style)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel(_label(value) + (f" / {relative_to}" if relative_to else ""))
    if legend:
        ax.legend(fontsize="small")
    return ax


def _scatter_color(column: str) -> str:
    """A ``budget_<strategy>@<target>`` column takes its strategy's colour; others the score colour."""
    if column.startswith("budget_"):
        return strategy_style(column[len("budget_"):].partition("@")[0])["color"]
    return SCORE_COLOR


_LABEL_OFFSETS = ((4, 3), (4, -10), (-10, 3), (-10, -10), (4, 10), (-10, 10), (10, -3), (-16, -3))
"""Candidate offsets (points) of a layer label from its dot, tried in order."""


def _place_labels(ax: Axes, x, y, texts, fontsize: float = 7.0) -> list:
    """Annotate points without overlapping labels: each label takes the first offset of :data:`_LABEL_OFFSETS`
    whose box (estimated from the font size, in display units of the axes as laid out now) overlaps neither a
    placed label nor a dot other than its own; a label with no free place is left out (its dot stays). Points
    are labelled from the most isolated to the most crowded. Returns the annotations made."""
    fig = ax.figure
    scale = fig.dpi / 72.0
    xy = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    dot = 3.0 * scale
    gaps = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2) + np.eye(len(xy)) * 1e9
    order = np.argsort(-gaps.min(axis=1), kind="stable")
    placed, made = [], []
    for i in order:
        width, height = (0.62 * fontsize * len(texts[i]) + 2) * scale, (fontsize + 2) * scale
        for dx, dy in _LABEL_OFFSETS:
            x0, y0 = xy[i, 0] + dx * scale, xy[i, 1] + dy * scale
            box = (x0, y0, x0 + width, y0 + height)
            hits_label = any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)
            others = np.delete(xy, i, axis=0)
            hits_dot = bool(np.any((others[:, 0] > box[0] - dot) & (others[:, 0] < box[2] + dot)
                                   & (others[:, 1] > box[1] - dot) & (others[:, 1] < box[3] + dot)))
            if not hits_label and not hits_dot:
                placed.append(box)
                made.append(ax.annotate(texts[i], (float(np.asarray(x)[i]), float(np.asarray(y)[i])),
                                        xytext=(dx, dy), textcoords="offset points", fontsize=fontsize))
                break
    return made


def plot_budget_vs_score(df: pd.DataFrame, x: str = "budget_acttail@0.5", y: str = "delta_nll",
                         ax: Axes | None = None, annotate: bool = True, logy: bool = False) -> Axes:
    """One dot per layer: ``x`` (e.g. ActTail's budget or mean alpha) against ``y`` (a utilisation score).

    Returns the Axes: one scatter collection of ``len(df)`` points (x, y); with ``annotate``, layer indices
    next to the dots where they fit without overlapping one another or another dot (:func:`_place_labels`;
    crowded dots stay unlabelled); the title gives Spearman's rho over the layers (the same value as
    ``depth.depth_correlations``) with its 95% Fisher-z interval.
    """
    from ..report.rank_correlation import fisher_interval

    _require(df, "layer", x, y)
    ax = _new_ax(ax, figsize=(5.0, 4.0))
    ax.scatter(df[x], df[y], s=20, color=_scatter_color(x), zorder=3)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    pair = df[[x, y]].astype(float).dropna()
    rho = spearmanr(pair[x], pair[y]).statistic if len(pair) > 2 else float("nan")
    low, high = fisher_interval(float(rho), len(pair))
    interval = f" [{low:+.2f}, {high:+.2f}]" if np.isfinite(low) else ""
    ax.set_title(f"Spearman rho = {rho:+.2f}{interval} (n = {len(pair)} layers)", fontsize="medium")
    if annotate:
        ax.autoscale_view()
        _place_labels(ax, df[x].to_numpy(float), df[y].to_numpy(float), [str(int(v)) for v in df["layer"]])
    return ax


__all__ = ["plot_layer_scores", "plot_variance_profiles", "plot_budget_vs_score"]
