"""Matplotlib figure of a spectrum against its random-matrix (Marchenko-Pastur) baseline.

Like ``plots.esd``, the helper takes ``ax=None`` and returns the Axes (a new Figure when none
is given; no pyplot state). Input: eigenvalues of ``W^T W / N`` (``spectral.rmt.normalized_esd``).
"""
from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from ..spectral.rmt import count_above_mp, mp_density, mp_edges
from .esd import SPECTRUM_COLORS, _new_ax
from .style import GREY, OKABE_ITO, legend_below

MP_COLOR = "black"
"""The Marchenko-Pastur density."""
MP_EDGE_COLOR = OKABE_ITO["vermillion"]
"""The MP support's edges (lambda_- dotted, lambda_+ dashed) and the marks of the eigenvalues beyond lambda_+."""
FIT_COLOR = OKABE_ITO["blue"]
THEORY_COLOR = "#332288"
"""Fitted alpha of the tail-index sweep, and Martin & Mahoney's large-matrix line (Paul Tol's indigo)."""


def plot_mp_fit(
    eigs,
    q: float,
    sigma2: float,
    ax: Axes | None = None,
    bins: int = 60,
    x_max: float | None = None,
) -> Axes:
    """Histogram of a normalised spectrum against the Marchenko-Pastur density.

    Args:
        eigs: eigenvalues of ``W^T W / N`` (``rmt.normalized_esd``), same units as the MP law.
        q: aspect ratio ``min/max`` of the matrix shape.
        sigma2: entry variance of the MP law (e.g. ``rmt.mp_sigma2(eigs)``).
        x_max: right end of the histogram (default: the largest eigenvalue). Eigenvalues
            beyond it are counted in the density but not drawn (a triangle at the right edge says how
            many); the view always reaches past the MP upper edge and a little past the last bar.
    Returns:
        The Axes: histogram patches, then lines: MP density, lower edge, upper edge, then a rug of the
        eigenvalues above the upper edge (the spikes, whose bars are too low to see on a density scale).
        The title states how many eigenvalues lie above the upper edge; the legend sits below the axes.
    """
    eigs = np.sort(np.asarray(eigs, dtype=float))
    lo, hi = mp_edges(q, sigma2)
    x_max = float(eigs[-1]) if x_max is None else float(x_max)
    edges = np.linspace(0.0, x_max, bins + 1)
    shown = eigs[eigs <= x_max]
    weights = np.full(shown.size, 1.0 / (eigs.size * (edges[1] - edges[0])))
    ax = _new_ax(ax)
    ax.hist(shown, bins=edges, weights=weights, color=SPECTRUM_COLORS["esd"], label="ESD")
    xs = np.linspace(lo, hi, 400)
    ax.plot(xs, mp_density(xs, q, sigma2), color=MP_COLOR, lw=2,
            label=f"Marchenko-Pastur (q = {q:.3g}, $\\sigma^2$ = {sigma2:.3g})")
    ax.axvline(lo, color=MP_EDGE_COLOR, ls=":", lw=1)
    ax.axvline(hi, color=MP_EDGE_COLOR, ls="--", lw=1.5, label=f"MP edges, $\\lambda_+$ = {hi:.3g}")
    spikes = shown[shown > hi]
    if spikes.size:
        ax.plot(spikes, np.zeros_like(spikes), ls="", marker="|", ms=14, mew=1.2, color=MP_EDGE_COLOR, clip_on=False)
    n_out = count_above_mp(eigs, q, sigma2)
    ax.set_title(f"{n_out} of {eigs.size} eigenvalues above the MP edge $\\lambda_+$ (largest {eigs[-1]:.3g})",
                 fontsize="medium")
    hidden = int((eigs > x_max).sum())
    right = max(1.03 * x_max, 1.08 * hi)  # the upper edge and the last bar stay inside the axes
    if hidden:
        ax.plot([right], [0.0], marker=">", ms=8, ls="", color=SPECTRUM_COLORS["esd"], clip_on=False)
        ax.annotate(f"{hidden} beyond", (right, 0.0), xytext=(-4, 8), textcoords="offset points", ha="right",
                    fontsize="x-small")
    ax.set_xlim(0.0, right)
    ax.set_xlabel("eigenvalue of $W^T W / N$")
    ax.set_ylabel("density")
    legend_below(ax, y=-0.14, ncols=2)
    return ax


def plot_tail_index_sweep(sweep, ax: Axes | None = None) -> Axes:
    """Fitted alpha of heavy-tailed random matrices against the entries' tail index ``mu``, beside
    Martin & Mahoney's large-matrix line ``alpha = 1 + mu / 2`` (drawn where it applies, ``mu < 2``).

    Input: ``spectral.rmt.tail_index_sweep`` (columns tail_index, alpha, n_tail). Returns the Axes:
    the fitted alphas are the first line (markers, each annotated with its tail size), the
    theory line the second; the region ``mu > 2`` is shaded: a Student-t with ``mu`` degrees of freedom has
    finite variance only for ``mu > 2`` (at ``mu = 2`` it is still infinite).
    """
    sweep = sweep.sort_values("tail_index")
    mu, alpha = sweep["tail_index"].to_numpy(float), sweep["alpha"].to_numpy(float)
    ax = _new_ax(ax, figsize=(6.0, 4.2))
    ax.plot(mu, alpha, ls="", marker="o", ms=7, color=FIT_COLOR, label="fitted alpha (KS xmin)")
    grid = np.linspace(min(mu.min(), 0.5), 2.0, 50)
    ax.plot(grid, 1 + grid / 2, color=THEORY_COLOR, lw=1.5, ls="--", label="theory: 1 + mu/2 (mu < 2)")
    ax.axvspan(2.0, max(mu.max(), 2.0) + 0.25, color="0.93", zorder=0,
               label="mu > 2: finite variance (mu <= 2: infinite)")
    for x, y, n in zip(mu, alpha, sweep["n_tail"]):
        ax.annotate(f"{int(n)}", (x, y), xytext=(5, 4), textcoords="offset points", fontsize="x-small", color=GREY)
    ax.set_xlabel("tail index mu of the entries (P(|w| > t) ~ t^-mu)")
    ax.set_ylabel("alpha of the ESD tail")
    ax.set_title("Heavier-tailed entries give a smaller alpha (numbers: eigenvalues in the tail)",
                 fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(True, alpha=0.3)
    return ax
