"""Matplotlib figures of eigenvalue spectra (ESDs), power-law fits and alpha tables.

Every ``plot_*`` helper takes ``ax=None`` and returns the Axes it drew on.
Without an ``ax`` it makes a new ``matplotlib.figure.Figure`` (no pyplot state,
nothing is shown); in a notebook display it with ``ax.figure`` (after
``%matplotlib inline``) or save it with ``ax.figure.savefig(path)``.

Inputs: ``eigs`` are eigenvalues of ``W^T W`` as returned by ``spectra.esd``
(any positive scale: the fits are scale-free); tables are the tidy DataFrames
of ``spectra.analyze`` / ``reference.published_alphas`` (columns ``layer``,
``projection`` and the value column, one row per projection).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..core.models import PROJECTIONS
from .style import DARK_GREY, GREY, color_scale, kind_color, legend_below, legend_beside, series_color

SPECTRUM_COLORS = {"esd": "#A6A6A6", "ks_distance": DARK_GREY, "alpha_curve": GREY}
"""Colours of the spectrum figures (ESD histogram, KS distance curve, alpha at each xmin candidate): greys, so
that none of them takes a colour that names a projection kind (Okabe-Ito, ``plots.style.KIND_COLORS``) in the
same notebook."""
RULE_STYLES = {"ks": dict(color="#882255", linestyle="--"), "peak": dict(color="#44AA99", linestyle="-."),
               "median": dict(color="#999933", linestyle=":")}
"""Colour and line style of each xmin rule (Paul Tol's muted wine / teal / olive, none of them a kind's colour):
its fitted power law (solid), its xmin and its mark on the KS curve."""
FIXED_XMIN_STYLE = dict(color="#117733", linestyle="--")
"""A fit whose xmin was given as a number (no rule)."""


def rule_style(rule) -> dict:
    """``dict(color, linestyle)`` of an xmin rule (:data:`RULE_STYLES`; a number or None: :data:`FIXED_XMIN_STYLE`)."""
    return dict(RULE_STYLES.get(rule, FIXED_XMIN_STYLE)) if isinstance(rule, str) or rule is None else dict(FIXED_XMIN_STYLE)


def _new_ax(ax: Axes | None, figsize=(5.5, 4.0)) -> Axes:
    if ax is not None:
        return ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def _positive(eigs) -> np.ndarray:
    eigs = np.asarray(eigs, dtype=float).ravel()
    eigs = eigs[np.isfinite(eigs) & (eigs > 0)]
    if eigs.size < 2:
        raise ValueError("Need at least two positive, finite eigenvalues to plot a spectrum.")
    return np.sort(eigs)


def _fit(eigs: np.ndarray, xmin):
    from ..spectral.tails import fit_power_law

    return fit_power_law(eigs, xmin=xmin)


def _rule_label(fit) -> str:
    rule = getattr(fit, "xmin_rule", None)
    return f" ({rule})" if rule else ""


def _robust_range(values, lo_pct: float = 2.0, hi_pct: float = 98.0) -> tuple[float, float]:
    """Percentile range of finite values (used to keep outliers from flattening a colour scale)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    lo, hi = np.percentile(values, [lo_pct, hi_pct])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max()) + 1e-12
    return float(lo), float(hi)


def _tidy_log_axis(axis, lo: float, hi: float) -> None:
    """Readable ticks on a log axis spanning [lo, hi]: plain 1-2-5 labels within two decades,
    powers of ten (no minor labels) beyond."""
    if np.log10(hi / lo) <= 2:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------- one spectrum
def power_law_density(x, fit) -> np.ndarray:
    """Density of the fitted tail, scaled to the whole spectrum, at ``x`` (0 below xmin).

    ``p(x) = (n_tail / n_eigs) (alpha - 1) / xmin (x / xmin)^-alpha`` for ``x >= xmin``,
    so it overlays a density histogram of all eigenvalues.
    """
    x = np.asarray(x, dtype=float)
    frac = fit.n_tail / fit.n_eigs
    out = frac * (fit.alpha - 1) / fit.xmin * (x / fit.xmin) ** (-fit.alpha)
    return np.where(x >= fit.xmin, out, 0.0)


def plot_esd(
    eigs,
    fit=None,
    ax: Axes | None = None,
    bins: int = 50,
    loglog: bool = True,
    xmin="ks",
    show_fit: bool = True,
    title: str | None = None,
) -> Axes:
    """Histogram (density) of a spectrum with its power-law fit and xmin.

    Args:
        eigs: eigenvalues (non-positive values are dropped).
        fit: a ``tails.PowerLawFit``; if None and ``show_fit``, fitted here with ``xmin``.
        ax: axes to draw on (new Figure if None).
        bins: number of bins (log-spaced when ``loglog``).
        loglog: log-log axes (the natural view of a power law) or linear axes.
        xmin: xmin rule used only when ``fit`` is None (``"ks"``, ``"peak"``, ``"median"`` or a value).
        show_fit: draw the fitted tail density (solid line) and xmin (dashed vertical line).
        title: axes title.
    Returns:
        The Axes: ``bins`` histogram patches, then two lines (fit, xmin) when ``show_fit``.
    """
    eigs = _positive(eigs)
    ax = _new_ax(ax)
    if loglog:
        edges = np.geomspace(eigs[0], eigs[-1], bins + 1)
    else:
        edges = np.linspace(eigs[0], eigs[-1], bins + 1)
    ax.hist(eigs, bins=edges, density=True, color=SPECTRUM_COLORS["esd"], label=f"ESD ({eigs.size} eigenvalues)")
    if show_fit:
        fit = _fit(eigs, xmin) if fit is None else fit
        style = rule_style(getattr(fit, "xmin_rule", None))
        xs = np.geomspace(fit.xmin, eigs[-1], 100)
        gid = f"rule:{getattr(fit, 'xmin_rule', None) or 'fixed'}"  # what the colour names: the xmin rule
        ax.plot(xs, power_law_density(xs, fit), color=style["color"], lw=2, gid=gid,
                label=f"power law, alpha = {fit.alpha:.2f}{_rule_label(fit)}")
        ax.axvline(fit.xmin, color=style["color"], ls=style["linestyle"], lw=1.5, gid=gid,
                   label=f"xmin = {fit.xmin:.3g} ({fit.n_tail} in tail)")
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
        _tidy_log_axis(ax.xaxis, eigs[0], eigs[-1])
    ax.set_xlabel("eigenvalue of $W^T W$")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    legend_below(ax, ncols=2)  # off the bars
    return ax


def plot_esd_grid(
    spectra: Mapping[str, np.ndarray],
    names: Sequence[str],
    titles: Sequence[str] | None = None,
    xmin="ks",
    ncols: int = 4,
    bins: int = 40,
) -> Figure:
    """A grid of :func:`plot_esd` panels, one per name (e.g. the 7 projections of a layer).

    Args:
        spectra: name -> eigenvalues (``spectra.model_spectra(model)``).
        names: which spectra to draw, in order.
        titles: panel titles (default: the names).
        xmin: xmin rule for every fit.
        ncols: panels per row.
    Returns:
        A new Figure (display it in a notebook as the cell's last expression).
    """
    names = list(names)
    titles = list(titles) if titles is not None else names
    nrows = int(np.ceil(len(names) / ncols))
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name, title in zip(axes, names, titles):
        fit = _fit(_positive(spectra[name]), xmin)
        plot_esd(spectra[name], fit=fit, ax=ax, bins=bins, title=title)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.get_legend().remove()
        ax.text(0.97, 0.96, f"alpha = {fit.alpha:.2f}\n{fit.n_tail} of {fit.n_eigs} in tail",
                transform=ax.transAxes, ha="right", va="top", fontsize="small",
                bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
    for ax in axes[len(names):]:
        ax.set_axis_off()
    fig.supxlabel("eigenvalue of $W^T W$")
    fig.supylabel("density")
    return fig


# --------------------------------------------------------------------------- alpha tables
def alpha_matrix(table: pd.DataFrame, value: str = "alpha") -> pd.DataFrame:
    """``table[value]`` pivoted to layers (rows) x projection kinds (columns, forward order)."""
    kinds = [k for k in PROJECTIONS if k in set(table["projection"])]
    return table.pivot(index="layer", columns="projection", values=value).reindex(columns=kinds).sort_index()


def plot_alpha_heatmap(
    table: pd.DataFrame,
    value: str = "alpha",
    ax: Axes | None = None,
    robust: bool = True,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Axes:
    """Heat map of ``value`` with layers as rows (layer 0 on top) and projection kinds as columns.

    Args:
        table: one row per projection (columns ``layer``, ``projection``, ``value``).
        value: column to show.
        robust: for a column without a fixed scale, the colour range from the 2nd to the 98th
            percentile; ``alpha`` always uses the fixed scale of ``plots.style.color_scale("alpha")``
            so that heat maps side by side compare (outliers saturate, the colour bar shows
            arrows); the image data keep the exact values.
        vmin, vmax, cmap: override the colour scale.
    Returns:
        The Axes; ``ax.images[0].get_array()`` is the (n_layers, n_kinds) matrix.
    """
    matrix = alpha_matrix(table, value)
    ax = _new_ax(ax, figsize=(4.5, max(3.0, 0.16 * len(matrix) + 1.2)))
    scale = color_scale("alpha") if value.startswith("alpha") else None
    if scale is not None:
        lo, hi = scale["vmin"], scale["vmax"]
    else:
        lo, hi = _robust_range(matrix.to_numpy()) if robust else (np.nanmin(matrix.to_numpy()), np.nanmax(matrix.to_numpy()))
    vmin, vmax = (lo if vmin is None else vmin), (hi if vmax is None else vmax)
    cmap = cmap or color_scale("alpha")["cmap"]
    image = ax.imshow(matrix.to_numpy(dtype=float), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns)
    step = max(1, len(matrix) // 15)
    ax.set_yticks(range(0, len(matrix), step), matrix.index[::step])
    ax.set_xlabel("projection")
    ax.set_ylabel("layer")
    extend = "neither"
    if vmin is not None and vmax is not None:
        data = matrix.to_numpy(dtype=float)
        extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
                  (True, True): "both"}[(bool(np.nanmin(data) < vmin), bool(np.nanmax(data) > vmax))]
    ax.figure.colorbar(image, ax=ax, label=value, extend=extend)
    return ax


def plot_alpha_by_kind(
    table: pd.DataFrame,
    value: str = "alpha",
    ax: Axes | None = None,
    seed: int = 0,
) -> Axes:
    """Box plot of ``value`` per projection kind, with every projection as a jittered dot.

    Returns:
        The Axes: one box per kind present (forward order q..down) and one scatter
        collection holding all ``len(table)`` points.
    """
    kinds = [k for k in PROJECTIONS if k in set(table["projection"])]
    groups = [table.loc[table["projection"] == k, value].to_numpy(dtype=float) for k in kinds]
    ax = _new_ax(ax)
    ax.boxplot(groups, tick_labels=kinds, showfliers=False, widths=0.6,
               medianprops=dict(color="black", lw=2))
    rng = np.random.default_rng(seed)
    xs = np.concatenate([np.full(len(g), i + 1) + rng.uniform(-0.18, 0.18, len(g)) for i, g in enumerate(groups)])
    colors = [kind_color(k) for k, g in zip(kinds, groups) for _ in g]
    ax.scatter(xs, np.concatenate(groups), s=10, alpha=0.6, c=colors, zorder=3)
    ax.set_xlabel("projection")
    ax.set_ylabel(value)
    return ax


def plot_alpha_by_depth(
    table: pd.DataFrame,
    value: str = "alpha",
    ax: Axes | None = None,
    show_mean: bool = True,
    robust: bool = True,
) -> Axes:
    """``value`` against layer index: one thin line per projection kind, the block mean thick.

    Args:
        robust: clip the y view to the 2nd-98th percentile range (padded); outliers
            leave the frame but stay in the lines' data.
    Returns:
        The Axes: one line per kind (forward order), then the block-mean line (label "block mean").
    """
    matrix = alpha_matrix(table, value)
    ax = _new_ax(ax, figsize=(7.0, 4.0))
    for kind in matrix.columns:
        ax.plot(matrix.index, matrix[kind], marker="o", ms=3, lw=1, alpha=0.8, label=kind, color=kind_color(kind))
    if show_mean:
        ax.plot(matrix.index, matrix.mean(axis=1), color="black", lw=2.5, label="block mean")
    if robust:
        lo, hi = _robust_range(matrix.to_numpy())
        pad = 0.08 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("layer")
    ax.set_ylabel(value)
    legend_beside(ax)
    return ax


def plot_mean_alpha_by_kind(
    tables: Mapping[str, pd.DataFrame],
    value: str = "alpha",
    ax: Axes | None = None,
) -> Axes:
    """Mean ``value`` per projection kind, one line of markers per model (e.g. SmolLM2 vs LLaMA-2).

    Args:
        tables: label -> table (columns ``projection`` and ``value``).
    Returns:
        The Axes: one line per table, x = kinds in forward order, y = means.
    """
    ax = _new_ax(ax, figsize=(6.0, 4.0))
    for label, table in tables.items():
        means = table.groupby("projection")[value].mean()
        kinds = [k for k in PROJECTIONS if k in means.index]
        ax.plot(range(len(kinds)), means.reindex(kinds).to_numpy(), marker="o", lw=1.5, label=label,
                color=series_color(label))
    ax.set_xticks(range(len(PROJECTIONS)), PROJECTIONS)
    ax.set_xlabel("projection")
    ax.set_ylabel(f"mean {value}")
    ax.legend(fontsize="small")
    return ax


def plot_alpha_scatter(
    x_table: pd.DataFrame,
    y_table: pd.DataFrame,
    value: str = "alpha",
    labels: tuple[str, str] = ("ks", "peak"),
    ax: Axes | None = None,
    log: bool = True,
) -> Axes:
    """One projection per dot: ``value`` of ``x_table`` against ``y_table`` (e.g. two xmin rules).

    Rows are matched on ``name``; dots are coloured by projection kind and the
    diagonal ``y = x`` is drawn.
    Returns:
        The Axes: one scatter collection per kind (forward order), then the diagonal line.
    """
    merged = x_table[["name", "projection", value]].merge(y_table[["name", value]], on="name",
                                                          suffixes=("_x", "_y"))
    ax = _new_ax(ax, figsize=(5.0, 4.5))
    for kind in [k for k in PROJECTIONS if k in set(merged["projection"])]:
        part = merged[merged["projection"] == kind]
        ax.scatter(part[f"{value}_x"], part[f"{value}_y"], s=14, alpha=0.8, label=kind, color=kind_color(kind))
    both = merged[[f"{value}_x", f"{value}_y"]].to_numpy(dtype=float)
    lo, hi = np.nanmin(both), np.nanmax(both)
    ax.plot([lo, hi], [lo, hi], color=GREY, ls="--", lw=1)  # a reference, named in place (no legend colour)
    ax.annotate("y = x", (hi, hi), xytext=(-4, -12), textcoords="offset points", ha="right", fontsize="small",
                color=GREY)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        _tidy_log_axis(ax.xaxis, lo, hi)
        _tidy_log_axis(ax.yaxis, lo, hi)
    ax.set_xlabel(f"{value} ({labels[0]})")
    ax.set_ylabel(f"{value} ({labels[1]})")
    ax.legend(fontsize="small", ncols=2)
    return ax
