"""Matplotlib figures of perplexity by allocation strategy, and of the allocations themselves.

Every ``plot_*`` helper takes ``ax=None`` and returns the Axes it drew on (a new
``matplotlib.figure.Figure`` when none is given: no pyplot state, nothing shown;
in a notebook display ``ax.figure``). Inputs are the tidy tables of
``acttail_lab.report.results`` (runs: one row per strategy x sparsity plus a dense row)
and of ``acttail_lab.allocation`` (one row per projection, or ``summary`` rows).
Each strategy keeps one colour, marker and line style in every figure (``plots.style.strategy_style``, by name).
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..report.results import (
    DENSE,
    check_one_setting,
    check_runs,
    relative_to_uniform,
    run_labels,
)
from .esd import _new_ax, alpha_matrix
from .style import STRATEGY_STYLES, color_scale, legend_beside, series_color, sparsity_scale, strategy_style

def line_style(label: str) -> dict:
    """Matplotlib line keywords of a run label: :func:`plots.style.strategy_style` (colour and marker by
    label, line style by method; ``"acttail (xmin=ks)"`` is styled as ``acttail-ks``, the label of its setting)."""
    return strategy_style(label)


def _labelled(runs: pd.DataFrame, strategies: Sequence[str] | None) -> tuple[pd.DataFrame, list[str]]:
    runs = runs.assign(label=run_labels(runs))
    body = runs[runs["strategy"] != DENSE]
    present = list(dict.fromkeys(body["label"]))
    if strategies is None:
        return runs, present
    unknown = [s for s in strategies if s not in present]
    if unknown:
        raise ValueError(f"Strategies {unknown} are not in the table (it has {present}).")
    return runs, list(strategies)


# --------------------------------------------------------------------------- perplexity
def plot_perplexity_vs_sparsity(runs: pd.DataFrame, ax: Axes | None = None, strategies: Sequence[str] | None = None,
                                dense: bool = True, logy: bool = True, title: str | None = None,
                                x: str = "sparsity", collapse_at: float | None = None) -> Axes:
    """Perplexity against target sparsity, one line per strategy (ActTail's headline figure).

    Args:
        runs: a runs table of one setting (``results.load_perplexity`` / ``evaluate_grid``).
        strategies: labels to draw, in order (default: all, in table order).
        dense: draw the dense perplexity as a dotted horizontal line.
        logy: log-scale perplexity axis (errors grow multiplicatively with sparsity).
        x: ``"sparsity"`` (each strategy's target) or ``"realised_sparsity"`` (fraction of all
            projection weights skipped: the fair axis when some methods cover only the FFN).
        collapse_at: a perplexity (e.g. ``report.headline.collapse_threshold``): the axis stops
            just above it, the band above it is shaded, and each point at or above it is marked
            by a triangle in its strategy's colour at the top (the lines keep the exact values).
    Returns:
        The Axes: one line per strategy (x = the ``x`` column ascending, y = perplexity,
        label = strategy), then the dense line when drawn (label ``"dense"``); with
        ``collapse_at`` and a run at or above it, ``ax.collections[0]`` holds the collapsed points' markers.
    """
    check_runs(runs)
    check_one_setting(runs, "plot_perplexity_vs_sparsity")
    runs, labels = _labelled(runs, strategies)
    ax = _new_ax(ax, figsize=(6.5, 4.5))
    for label in labels:
        rows = runs[runs["label"] == label].sort_values(x)
        ax.plot(rows[x].to_numpy(float), rows["perplexity"].to_numpy(float), lw=1.8, ms=6,
                label=label, **line_style(label))
    dense_rows = runs[runs["strategy"] == DENSE]
    if dense and not dense_rows.empty:
        dense_style = strategy_style(DENSE)
        ax.axhline(float(dense_rows["perplexity"].iloc[0]), color=dense_style["color"], ls=dense_style["linestyle"],
                   lw=1.5, label=DENSE)
    if logy:
        ax.set_yscale("log")
    if collapse_at is not None:
        shown = runs["label"].isin(labels) | ((runs["strategy"] == DENSE) & dense)
        _mark_collapsed(ax, runs[shown], x, float(collapse_at), logy)
    ax.set_xlabel("target sparsity (parameter-weighted mean)" if x == "sparsity"
                  else "realised sparsity (fraction of all projection weights skipped)")
    ax.set_ylabel("perplexity" + (" (log scale)" if logy else ""))
    ax.set_title(title if title is not None else _setting_title(runs))
    ax.grid(True, which="major", alpha=0.3)
    legend_beside(ax)
    return ax


def _fill(text: str, width: int) -> str:
    return textwrap.fill(text, width, break_on_hyphens=False)


def headline_labels(runs: pd.DataFrame, strategies: Sequence[str] | None = None) -> list[str]:
    """The labels (``report.labels``) of ``strategies``, in the order given: a name matches rows whose label or
    strategy column it is (the related grid's ``acttail`` rows are shown as ``acttail-ks``); default: all."""
    labelled = runs.assign(label=run_labels(runs))
    body = labelled[labelled["strategy"] != DENSE]
    if strategies is None:
        return list(dict.fromkeys(body["label"]))
    out = []
    for name in strategies:
        out += list(dict.fromkeys(body.loc[(body["label"] == name) | (body["strategy"] == name), "label"]))
    return list(dict.fromkeys(out))


def plot_headline(runs: pd.DataFrame, strategies: Sequence[str] | None = None, ax: Axes | None = None,
                  what: str = "", x: str = "sparsity", reached_only: bool = False,
                  windows: pd.DataFrame | None = None, among=None, among_name: str | None = None) -> Axes:
    """:func:`plot_perplexity_vs_sparsity` as a finding: labels by settings, collapsed runs marked at the top
    (``report.headline.collapse_threshold``) and a title computed by the verdict engine
    (``report.winners.lowest`` over EVERY drawn row, or ``among`` a subset named by ``among_name``; a lead inside
    the noise is marked, ``windows`` giving the paired intervals), prefixed by ``what`` (e.g. "SmolLM2-135M").

    ``strategies``: labels or strategy names (those present are drawn, in this order; default all).
    ``reached_only``: only rows within 2 points of their target compete (and are drawn), as the title says.
    """
    from ..report import headline, winners

    shown = headline_labels(runs, strategies)
    labelled = runs.assign(label=run_labels(runs))
    subset = runs[(labelled["label"].isin(shown) | (labelled["strategy"] == DENSE)).to_numpy()]
    if reached_only:
        subset = headline.reached(subset)
        kept = set(run_labels(subset))
        shown = [label for label in shown if label in kept]
    win = winners.lowest(subset, windows, among=among, among_name=among_name)
    title = winners.lowest_title(win)
    if reached_only:
        title = title.replace(" runs", " runs that reach their target", 1)
    gone = subset[headline.collapsed(subset).to_numpy()].assign(label=lambda t: run_labels(t))
    first = gone.groupby("label")["sparsity"].min().sort_values()
    if len(first) > 2:
        title += f"; {len(first)} runs collapse ({first.index[0]} first, from {first.iloc[0]:g})"
    elif len(first):
        title += "; " + ", ".join(f"{label} {'collapses ' if i == 0 else ''}from {at:g}"
                                  for i, (label, at) in enumerate(first.items()))
    ax = plot_perplexity_vs_sparsity(subset, ax=ax, strategies=shown, x=x,
                                     collapse_at=headline.collapse_threshold(runs),
                                     title=_fill(f"{what}: {title}" if what else title, 62))
    ax.title.set_fontsize("medium")
    if ax.figure.get_figwidth() < 8.0:
        ax.figure.set_size_inches(8.0, 4.8)
    return ax


def _mark_collapsed(ax: Axes, runs: pd.DataFrame, x: str, limit: float, logy: bool) -> None:
    """Stop the y axis just above ``limit``, shade the band above it, mark collapsed points at the top
    (nothing to do when no run reaches ``limit``)."""
    gone = runs[(runs["perplexity"] >= limit) & (runs["strategy"] != DENSE)]
    if gone.empty:
        return
    low = float(np.nanmin(runs["perplexity"]))
    top = limit * 2.0 if logy else limit * 1.15
    ax.set_ylim(low / 1.3 if logy else 0.0, top)
    ax.axhspan(limit, top, color="0.92", zorder=0)
    marker_y = limit * 1.45 if logy else limit * 1.08
    ax.scatter(gone[x].to_numpy(float), np.full(len(gone), marker_y), marker="^", s=42, zorder=4,
               c=[strategy_style(label)["color"] for label in gone["label"]], edgecolors="black", linewidths=0.4,
               clip_on=False)
    # the legend entry is a neutral proxy: a coloured one would look like one run's marker
    ax.scatter([], [], marker="^", s=42, c="white", edgecolors="black", linewidths=0.6,
               label=f"collapsed (perplexity >= {limit:.0f}; colour = run)")


def _setting_title(runs: pd.DataFrame) -> str:
    row = runs.iloc[0]
    parts = [str(row[c]) for c in ("model", "corpus", "split") if c in runs.columns]
    if "window" in runs.columns:
        parts.append(f"window {int(row['window'])}")
    if "tokens" in runs.columns:
        parts.append(f"{int(row['tokens'])} tokens")
    if "protocol" in runs.columns:
        parts.append(f"protocol {row['protocol']}")
    return ", ".join(parts)


def plot_relative_change(runs: pd.DataFrame, ax: Axes | None = None, strategies: Sequence[str] | None = None,
                         scale: str = "auto") -> Axes:
    """Change of perplexity against uniform (%) at each target: grouped bars, one group per sparsity.

    Args:
        runs: a runs table (one setting) or the output of ``results.relative_to_uniform``.
        strategies: labels to draw (default: every non-uniform label, in table order).
        scale: ``"linear"``, ``"symlog"`` (linear within +-10 %, logarithmic beyond) or
            ``"auto"`` (symlog when some |change| exceeds 100 %).
    Returns:
        The Axes: ``ax.containers[i]`` holds strategy i's bars (label = strategy),
        one per sparsity present, heights = ``change_pct`` (below zero: better than uniform).
    """
    rel = runs if "change_pct" in runs.columns else relative_to_uniform(runs)
    if "label" not in rel.columns:
        rel = rel.assign(label=run_labels(rel))
    check_one_setting(rel, "plot_relative_change")
    present = list(dict.fromkeys(rel.loc[rel["strategy"] != "uniform", "label"]))
    labels = present if strategies is None else list(strategies)
    sparsities = np.sort(rel["sparsity"].unique())
    ax = _new_ax(ax, figsize=(7.0, 4.2))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        rows = rel[rel["label"] == label].set_index("sparsity")["change_pct"].reindex(sparsities)
        offsets = np.arange(len(sparsities)) - 0.4 + width * (i + 0.5)
        style = strategy_style(label)
        hatch = {"--": "//", "-.": "..", ":": ".."}.get(style["linestyle"])  # controls //, other xmin rules ..
        ax.bar(offsets, rows.to_numpy(float), width=width, color=style["color"], label=label,
               hatch=hatch, edgecolor="white", linewidth=0.5)
    ax.axhline(0.0, color="black", lw=1)
    values = rel.loc[rel["label"].isin(labels), "change_pct"].dropna()
    if scale == "symlog" or (scale == "auto" and len(values) and values.abs().max() > 100):
        ax.set_yscale("symlog", linthresh=10)
        if len(values):  # a factor 2 of headroom on each side, at least the linear band
            ax.set_ylim(min(-10.0, 2.0 * values.min()), max(10.0, 2.0 * values.max()))
    ax.set_xticks(range(len(sparsities)), [f"{s:g}" for s in sparsities])
    ax.set_xlabel("target sparsity")
    ax.set_ylabel("perplexity vs uniform (%)\n< 0: better than uniform")
    ax.grid(True, axis="y", alpha=0.3)
    legend_beside(ax)
    return ax


def plot_change_heatmap(change: pd.DataFrame, ax: Axes | None = None, title: str | None = None,
                        noise: pd.DataFrame | None = None, collapsed: pd.DataFrame | None = None) -> Axes:
    """Strategy x target heat map of the perplexity change against uniform (``headline.change_matrix``).

    Colour: log2(perplexity / uniform's) on the fixed ``relative_change`` scale of ``plots.style``
    (blue = better than uniform, red = worse; beyond half / double it saturates); each cell is
    written as the change in percent (``x650`` for a factor). ``noise``: optional boolean table of the
    same labels (``report.bootstrap.paired_bootstrap``'s ``inside_noise`` pivoted strategy x target);
    a True cell's text gets a trailing ``~`` (its 95% interval contains 0). ``collapsed``: optional boolean
    table (e.g. ``report.perplexity_runs.collapsed_matrix``): a True cell (the run or uniform collapsed) reads
    "collapsed" instead of a number, since no percentage against a collapsed run means anything.
    Returns:
        The Axes; ``ax.images[0].get_array()`` is log2(1 + change / 100), rows = ``change.index``.
    """
    ratio = np.log2(1.0 + change.to_numpy(dtype=float) / 100.0)
    ax = _new_ax(ax, figsize=(1.2 * change.shape[1] + 3.2, 0.32 * change.shape[0] + 1.4))
    image = ax.imshow(ratio, aspect="auto", interpolation="nearest", **color_scale("relative_change"))
    inside = (np.zeros(change.shape, dtype=bool) if noise is None else
              noise.reindex(index=change.index, columns=change.columns).eq(True).to_numpy(dtype=bool))
    gone = (np.zeros(change.shape, dtype=bool) if collapsed is None else
            collapsed.reindex(index=change.index, columns=change.columns).eq(True).to_numpy(dtype=bool))
    for (i, j), value in np.ndenumerate(change.to_numpy(dtype=float)):
        if np.isfinite(value):
            text = f"{value:+.0f}%" if abs(value) < 1000 else f"x{1 + value / 100:.0f}"
            text += " ~" if inside[i, j] else ""
            text = "collapsed" if gone[i, j] else text
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                    color="white" if abs(ratio[i, j]) > 0.7 else "black")
    ax.set_xticks(range(change.shape[1]), [f"{s:g}" for s in change.columns])
    ax.set_yticks(range(change.shape[0]), change.index)
    ax.set_xlabel("target sparsity")
    bar = ax.figure.colorbar(image, ax=ax, label="perplexity vs uniform's (colour: log scale)", extend="both")
    ticks = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    bar.set_ticks(ticks, labels=[f"{100 * (2 ** t - 1):+.0f}%" for t in ticks])
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


# --------------------------------------------------------------------------- allocations
def plot_sparsity_map(allocation: pd.DataFrame, ax: Axes | None = None, vmin: float = 0.0, vmax: float = 1.0,
                      cmap: str | None = None, center: float | None = None, colorbar: bool = True,
                      title: str | None = None) -> Axes:
    """Heat map of one allocation: layers as rows (layer 0 on top), projection kinds as columns.

    Args:
        allocation: ``allocation.allocate`` output (columns layer, projection, sparsity).
        vmin, vmax: colour range (default [0, 1], sequential ``magma_r``: darker = sparser).
        cmap: override the colour map.
        center: if given (e.g. the target), a diverging map instead (``plots.style.sparsity_scale``:
            red = sparser than ``center``, blue = denser, white = equal) on the same [vmin, vmax].
        title: default ``"<label> @ <target>"`` when those columns exist.
    Returns:
        The Axes; ``ax.images[0].get_array()`` is ``plots.esd.alpha_matrix(allocation, "sparsity")``.
    """
    matrix = alpha_matrix(allocation, "sparsity")
    scale = sparsity_scale(center, vmin, vmax)
    ax = _new_ax(ax, figsize=(3.8, max(3.0, 0.14 * len(matrix) + 1.2)))
    image = ax.imshow(matrix.to_numpy(dtype=float), aspect="auto", cmap=cmap or scale["cmap"], norm=scale["norm"],
                      interpolation="nearest")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=90)
    step = max(1, len(matrix) // 10)
    ax.set_yticks(range(0, len(matrix), step), matrix.index[::step])
    ax.set_xlabel("projection")
    ax.set_ylabel("layer")
    if title is None and {"label", "target"} <= set(allocation.columns):
        title = f"{allocation['label'].iloc[0]} @ {float(allocation['target'].iloc[0]):g}"
    if title:
        ax.set_title(title, fontsize="medium")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="sparsity")
    return ax


def plot_sparsity_maps(allocations: Sequence[pd.DataFrame], ncols: int = 4, center: float | str | None = "target",
                       vmin: float = 0.0, vmax: float = 1.0, title: str | None = None) -> Figure:
    """:func:`plot_sparsity_map` side by side with one shared colour scale (e.g. four strategies at one target).

    Args:
        center: ``"target"`` (default): a diverging scale around the allocations' common
            target (white = the target, on [vmin, vmax]; the sequential scale if targets differ);
            a number: around that value; None: the sequential [vmin, vmax] scale.
    Returns:
        A new Figure; ``fig.axes[i]`` is allocation i's map (the colour bar axes comes last).
    """
    allocations = list(allocations)
    if isinstance(center, str):
        targets = {float(a["target"].iloc[0]) for a in allocations if "target" in a.columns}
        center = targets.pop() if len(targets) == 1 and all("target" in a for a in allocations) else None
    nrows = int(np.ceil(len(allocations) / ncols))
    n_layers = max(a["layer"].nunique() for a in allocations)
    fig = Figure(figsize=(2.6 * ncols + 1.2, max(3.0, 0.12 * n_layers + 1.4) * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, allocation in zip(axes, allocations):
        plot_sparsity_map(allocation, ax=ax, vmin=vmin, vmax=vmax, center=center, colorbar=False)
    for ax in axes[len(allocations):]:
        fig.delaxes(ax)
    label = "sparsity" + (f" (white = {center:g})" if center is not None else "")
    fig.colorbar(axes[0].images[0], ax=list(axes[:len(allocations)]), label=label, shrink=0.9)
    if title:
        fig.suptitle(_fill(title, 100), fontsize="medium")
    return fig


def plot_kind_budgets(budgets: pd.DataFrame, ax: Axes | None = None, labels: Sequence[str] | None = None,
                      target_line: bool = True, title: str | None = None) -> Axes:
    """Mean sparsity per projection kind, grouped bars: one bar series per label (model / source).

    Args:
        budgets: tidy rows label, projection, sparsity (``results.reference_kind_budgets``:
            ``allocation.summary`` rows of several allocations, plus TEAL's published means).
        labels: series to draw, in order (default: all, in table order).
        target_line: dashed line at the target when all rows share one ``target``.
    Returns:
        The Axes: ``ax.containers[i]`` holds label i's bars, x = kinds in forward
        order (q .. down), heights = sparsity.
    """
    from ..core.models import PROJECTIONS

    labels = list(dict.fromkeys(budgets["label"])) if labels is None else list(labels)
    kinds = [k for k in PROJECTIONS if k in set(budgets["projection"])]
    ax = _new_ax(ax, figsize=(7.5, 4.0))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        rows = budgets[budgets["label"] == label].set_index("projection")["sparsity"].reindex(kinds)
        hatch = "//" if str(label).startswith("TEAL") else None
        ax.bar(np.arange(len(kinds)) - 0.4 + width * (i + 0.5), rows.to_numpy(float), width=width,
               color=series_color(label), hatch=hatch, edgecolor="white", linewidth=0.5, label=label)
    if target_line and "target" in budgets.columns and budgets["target"].nunique() == 1:
        target = float(budgets["target"].iloc[0])
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_xlabel("projection kind")
    ax.set_ylabel("mean sparsity over layers")
    if title:
        ax.set_title(_fill(title, 75), fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    legend_beside(ax)
    return ax


__all__ = ["STRATEGY_STYLES", "strategy_style", "line_style", "headline_labels", "plot_perplexity_vs_sparsity", "plot_relative_change", "plot_change_heatmap", "plot_headline",
           "plot_sparsity_map", "plot_sparsity_maps", "plot_kind_budgets"]
