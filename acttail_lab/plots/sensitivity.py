"""Matplotlib figures of measured sensitivity: cost curves, metric-vs-cost scatters, correlation
tables and allocations side by side.

Like ``plots.esd``, every ``plot_*`` helper that draws one panel takes
``ax=None`` and returns the Axes (a new ``matplotlib.figure.Figure`` without
pyplot state when no ``ax`` is given); multi-panel helpers return the Figure.

Inputs are the tidy tables of the package: a cost table
(``sensitivity.cost_table``, one row per projection and sparsity level), a
spectra table (``spectra.analyze``), a sensitivity summary
(``sensitivity.sensitivity_summary``, columns like ``rel_error@0.8``), a
correlation table (``sensitivity.spectral_correlations``) and allocations
(``allocation.allocate`` / ``optimal.optimal_allocation``: layer, projection,
n_params, sparsity).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import spearmanr

from ..core.models import PROJECTIONS
from .esd import _new_ax, _tidy_log_axis, alpha_matrix
from ..report.rank_correlation import fisher_interval
from ..report.sensitivity import RULE_FREE  # noqa: F401  (re-exported: metrics that do not depend on xmin)
from .style import KIND_COLORS, color_scale, kind_color, legend_beside, sparsity_scale  # noqa: F401  (KIND_COLORS re-exported)

GROUPING_LABELS = {"all": "all", "projection": "projection\n(within kind)", "layer": "layer\n(within layer)"}
"""Tick labels of the correlation table's groupings (see :func:`plot_correlation_table`): the grouping's name,
as in the columns of :func:`correlation_matrix`, and what it means."""


def _positive_range(values) -> tuple[float, float]:
    """(min, max) of the positive finite values (what a log axis shows); (1, 10) if there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return (float(values.min()), float(values.max())) if values.size else (1.0, 10.0)


def _kinds(frame: pd.DataFrame) -> list[str]:
    present = set(frame["projection"])
    return [k for k in PROJECTIONS if k in present] + sorted(present - set(PROJECTIONS))


# --------------------------------------------------------------------------- cost curves
def plot_cost_curves(cost: pd.DataFrame, names: Sequence[str] | None = None, ax: Axes | None = None,
                     value: str = "rel_error", logy: bool = True) -> Axes:
    """Measured cost against sparsity, one line per projection.

    Args:
        cost: a cost table (columns name, projection, sparsity and ``value``).
        names: projections to draw (in this order, each labelled by its name);
            None draws every projection as a thin line coloured by kind, with
            one legend entry per kind.
        value: the cost column (rel_error, rel_error_token, rel_input_error, ...).
        logy: log-scaled cost axis (the errors span several decades).
    Returns:
        The Axes: one line per projection drawn (x = sparsity, y = ``value``), in
        ``names`` order or in the table's order.
    Raises:
        KeyError: a name in ``names`` is not in the table (the message lists a few that are).
    """
    ax = _new_ax(ax, figsize=(6.0, 4.2))
    order = list(dict.fromkeys(cost["name"])) if names is None else list(names)
    missing = [n for n in order if n not in set(cost["name"])]
    if missing:
        raise KeyError(f"No cost rows for {missing[:3]}; known names look like {list(cost['name'].unique()[:2])}.")
    groups = {name: part.sort_values("sparsity") for name, part in cost.groupby("name", sort=False)}
    for name in order:
        part = groups[name]
        kind = part["projection"].iloc[0]
        if names is None:
            ax.plot(part["sparsity"], part[value], color=kind_color(kind), lw=0.8, alpha=0.5)
        else:
            ax.plot(part["sparsity"], part[value], marker="o", ms=3, lw=1.5, label=name)
    if names is None:
        handles = [Line2D([], [], color=kind_color(k), lw=2, label=k) for k in _kinds(cost)]
        legend_beside(ax, handles=handles, title="projection", borderaxespad=0, frameon=True)  # 210 lines: no free corner
    else:
        ax.legend(fontsize="x-small")
    if logy:
        ax.set_yscale("log")
        _tidy_log_axis(ax.yaxis, *_positive_range(cost[value]))
    ax.set_xlabel("sparsity s of this projection's input (all others dense)")
    ax.set_ylabel(value)
    return ax


# --------------------------------------------------------------------------- metric vs sensitivity
def sensitivity_column(summary: pd.DataFrame, at, value: str = "rel_error") -> str:
    """The summary column read at ``at``: a column name as is, or ``f"{value}@{at:g}"`` for a number."""
    column = at if isinstance(at, str) else f"{value}@{float(at):g}"
    if column not in summary.columns:
        options = [c for c in summary.columns if "@" in c or c.endswith("_auc")]
        raise KeyError(f"The summary has no column {column!r} (it has {options}). Fix: pass at= one of the "
                       "levels given to sensitivity_summary(..., at=...), or a column name.")
    return column


def plot_metric_vs_sensitivity(spectra: pd.DataFrame, summary: pd.DataFrame, metric: str, at,
                               ax: Axes | None = None, value: str = "rel_error", logx: bool = False,
                               logy: bool = True, symlog: float | None = None) -> Axes:
    """One dot per projection: a spectral metric (x) against its measured sensitivity (y), coloured by kind.

    Args:
        spectra: ``spectra.analyze`` table (columns name, projection, ``metric``).
        summary: ``sensitivity.sensitivity_summary`` (or any table with name and the sensitivity column).
        metric: the spectral column, e.g. "alpha", "stable_rank".
        at: a sparsity (reads ``f"{value}@{at:g}"``) or a summary column name (e.g. "rel_error_auc").
        value: cost column prefix used when ``at`` is a number.
        symlog: a symmetric-log y axis, linear within +- this value (for costs that can be negative, e.g. a
            noisy loss increase), with the limits padded so no dot sits on the frame; overrides ``logy``.
    Returns:
        The Axes: one scatter collection per kind (forward order); the title
        gives the Spearman rho over all dots with its 95% Fisher-z interval. ActTail's premise predicts a
        negative rho for alpha (higher alpha tolerates more sparsity).
    """
    column = sensitivity_column(summary, at, value)
    merged = spectra[["name", "projection", metric]].merge(summary[["name", column]], on="name")
    ax = _new_ax(ax, figsize=(5.0, 4.2))
    for kind in _kinds(merged):
        part = merged[merged["projection"] == kind]
        ax.scatter(part[metric], part[column], s=16, alpha=0.8, color=kind_color(kind), label=kind)
    rho = spearmanr(merged[metric], merged[column]).statistic if len(merged) > 2 else float("nan")
    low, high = fisher_interval(float(rho), len(merged))
    interval = f" [{low:+.2f}, {high:+.2f}]" if np.isfinite(low) else ""
    ax.set_title(f"{metric} vs {column}:\nSpearman rho = {rho:+.2f}{interval} (n = {len(merged)})",
                 fontsize="medium")  # two lines: side-by-side panels' titles never run into each other
    if logx:
        ax.set_xscale("log")
        _tidy_log_axis(ax.xaxis, *_positive_range(merged[metric]))
    if symlog is not None:
        ax.set_yscale("symlog", linthresh=symlog)
        y = merged[column].to_numpy(dtype=float)
        y = y[np.isfinite(y)]
        if y.size:  # half a decade of room beyond the extreme dots (linear room inside the threshold)
            pad = lambda v: v * 3.0 if abs(v) > symlog else v + np.sign(v or 1) * symlog  # noqa: E731
            ax.set_ylim(min(pad(y.min()), -symlog), pad(y.max()))
    elif logy:
        ax.set_yscale("log")
        _tidy_log_axis(ax.yaxis, *_positive_range(merged[column]))
    ax.set_xlabel(metric)
    ax.set_ylabel(column)
    if symlog is not None:  # the dots fill the panel: the legend goes beside it
        legend_beside(ax, borderaxespad=0, frameon=True)
    else:
        ax.legend(fontsize="small", ncols=2)
    return ax


# --------------------------------------------------------------------------- correlation table
METRIC_ORDER = ("alpha", "alpha_weighted", "stable_rank", "lambda_max")


def correlation_matrix(corr: pd.DataFrame, sensitivities: Sequence[str] | None = None,
                       groupings: Sequence[str] = ("all", "projection", "layer")) -> pd.DataFrame:
    """Median Spearman rho over groups: rows "metric (rule)", columns "sensitivity | grouping".

    Rows are ordered by metric (alpha, alpha_weighted, stable_rank, lambda_max,
    then any other) and by rule in order of appearance; rule-free metrics
    (stable_rank, lambda_max) get one row, labelled without a rule.
    ``sensitivities`` defaults to every one in ``corr``, in order of appearance.
    """
    sensitivities = list(dict.fromkeys(corr["sensitivity"])) if sensitivities is None else list(sensitivities)
    part = corr[corr["sensitivity"].isin(sensitivities) & corr["group_by"].isin(groupings)]
    medians = part.groupby(["rule", "metric", "sensitivity", "group_by"], sort=False)["rho"].median()
    table = medians.unstack(["sensitivity", "group_by"])
    columns = [(s, g) for s in sensitivities for g in groupings if (s, g) in table.columns]
    rules = list(dict.fromkeys(part["rule"]))
    metrics = sorted(dict.fromkeys(part["metric"]),
                     key=lambda m: METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER))
    rows = {}
    for metric in metrics:
        for rule in rules[:1] if metric in RULE_FREE else rules:
            if (rule, metric) in table.index:
                rows[metric if metric in RULE_FREE else f"{metric} ({rule})"] = table.loc[(rule, metric), columns]
    out = pd.DataFrame(rows).T.astype(float)
    out.columns = [f"{s} | {g}" for s, g in columns]
    return out


def plot_correlation_table(corr: pd.DataFrame, ax: Axes | None = None, sensitivities: Sequence[str] | None = None,
                           groupings: Sequence[str] = ("all", "projection", "layer"),
                           annotate: bool = True) -> Axes:
    """Heat map of Spearman rho, spectral metric (rows) x sensitivity and grouping (columns).

    Args:
        corr: ``sensitivity.spectral_correlations`` output (one row per rule,
            metric, sensitivity, group_by, group).
        sensitivities: which sensitivity columns (e.g. ["rel_error@0.8",
            "loss_increase@0.8"]); default all.
        groupings: "all" (one rho over every projection), "projection" (median
            over kinds of the rho across layers), "layer" (median over layers of
            the rho across the kinds).
        annotate: write each rho in its cell.
    Returns:
        The Axes; ``ax.images[0].get_array()`` holds the matrix of
        :func:`correlation_matrix` (colour scale fixed to [-1, 1]; red =
        positive: the metric rises with the cost; blue = negative: what
        ActTail's premise predicts for alpha). Columns are grouped by
        sensitivity (named above the axes), with the grouping as tick label.
    """
    matrix = correlation_matrix(corr, sensitivities, groupings)
    blocks = list(dict.fromkeys(c.split(" | ")[0] for c in matrix.columns))
    ax = _new_ax(ax, figsize=(2.2 + 0.62 * matrix.shape[1], 1.6 + 0.4 * matrix.shape[0]))
    image = ax.imshow(matrix.to_numpy(), **color_scale("correlation"), aspect="auto", interpolation="nearest")
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    groups = [c.split(" | ")[1] for c in matrix.columns]
    ax.set_xticks(range(matrix.shape[1]), [GROUPING_LABELS.get(g, g) for g in groups],
                  rotation=90, fontsize="small")
    start = 0
    for block in blocks:
        width = sum(c.split(" | ")[0] == block for c in matrix.columns)
        ax.text(start + (width - 1) / 2, -0.7, block, ha="center", va="bottom", fontsize="small")
        if start:  # dark, so it shows next to pale cells too
            ax.axvline(start - 0.5, color="black", lw=1.5)
        start += width
    if annotate:
        for (i, j), rho in np.ndenumerate(matrix.to_numpy()):
            if np.isfinite(rho):
                ax.text(j, i, f"{rho:+.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if abs(rho) > 0.55 else "black")
    ax.figure.colorbar(image, ax=ax, label="Spearman rho (median over groups)", shrink=0.8)
    return ax


# --------------------------------------------------------------------------- allocations
def plot_allocations_side_by_side(allocations: Mapping[str, pd.DataFrame], vmin: float | None = None,
                                  vmax: float | None = None, cmap: str | None = None,
                                  center: float | str | None = "target") -> Figure:
    """Layer x projection heat maps of several allocations, one panel each, on one colour scale.

    Args:
        allocations: label -> allocation (columns layer, projection, n_params, sparsity).
        center: ``"target"`` (default): when every allocation has one common ``target``, the
            diverging scale of ``plots.style.sparsity_scale`` on [0, 1] with white = the target
            (as ``plots.perplexity.plot_sparsity_maps``); a number: white at that value; None
            (or targets differ): the fixed sequential sparsity scale ``magma_r`` on [0, 1].
        vmin, vmax, cmap: override the colour scale.
    Returns:
        A Figure with one Axes per allocation (layer 0 on top), in the mapping's
        order, then a shared colour bar; each title gives the label and the
        parameter-weighted mean sparsity; ``fig.axes[i].images[0].get_array()``
        is that allocation's ``alpha_matrix(allocation, "sparsity")``.
    """
    if not allocations:
        raise ValueError("No allocations to draw. Fix: pass {label: allocation table, ...}.")
    matrices = {label: alpha_matrix(table, "sparsity") for label, table in allocations.items()}
    if isinstance(center, str):
        targets = {float(t) for table in allocations.values() if "target" in table.columns for t in table["target"]}
        has_all = all("target" in table.columns for table in allocations.values())
        center = targets.pop() if has_all and len(targets) == 1 else None
    scale = sparsity_scale(center, 0.0 if vmin is None else vmin, 1.0 if vmax is None else vmax)
    cmap = cmap or scale["cmap"]
    n_layers = max(len(m) for m in matrices.values())
    fig = Figure(figsize=(1.0 + 2.1 * len(matrices), max(3.2, 0.15 * n_layers + 1.6)), layout="constrained")
    axes = fig.subplots(1, len(matrices), sharey=True, squeeze=False)[0]
    for ax, (label, matrix) in zip(axes, matrices.items()):
        table = allocations[label]
        mean = float(np.dot(table["sparsity"], table["n_params"]) / table["n_params"].sum())
        image = ax.imshow(matrix.to_numpy(dtype=float), aspect="auto", cmap=cmap, norm=scale["norm"],
                          interpolation="nearest")
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=90, fontsize="small")
        step = max(1, len(matrix) // 15)
        ax.set_yticks(range(0, len(matrix), step), matrix.index[::step])
        ax.set_title(f"{label}\nmean {mean:.2f}", fontsize="medium")
    axes[0].set_ylabel("layer")
    fig.colorbar(image, ax=list(axes), label="sparsity" + (f" (white = {center:g})" if center is not None else ""),
                 shrink=0.9)
    return fig
