"""The KS distance of a power-law fit as a function of the xmin candidate, with each xmin rule's choice.

:func:`plot_ks_curve` takes ``ax=None`` and returns the Axes it drew on (a new ``matplotlib.figure.Figure``
without one, no pyplot state). Input: eigenvalues of ``W^T W`` (``spectra.esd``; any positive scale).
Styles (the xmin rules' colours and line styles, the spectrum greys) are those of :mod:`acttail_lab.plots.esd`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.axes import Axes

from .esd import SPECTRUM_COLORS, _new_ax, _positive, _tidy_log_axis, rule_style
from .style import legend_below


def plot_ks_curve(
    eigs,
    ax: Axes | None = None,
    rules: Sequence[str] = ("ks", "peak", "median"),
    show_alpha: bool = True,
    alpha_ylim: tuple[float, float] | None = None,
    what: str | None = None,
) -> Axes:
    """KS distance of the power-law fit as a function of the xmin candidate.

    Args:
        eigs: eigenvalues.
        ax: axes to draw on (new Figure if None).
        rules: xmin rules whose chosen xmin is marked with a vertical line labelled with its alpha.
        show_alpha: also draw alpha(xmin) on a twin y axis (dotted, right scale), with each rule's alpha as a
            marker on it.
        alpha_ylim: y range of the alpha axis. Default: from 1 to 15% above the largest alpha any rule chose
            (at least 8), so every chosen alpha is inside; where the curve runs above the top (alpha explodes
            for tiny tails) a triangle at the top edge marks it.
        what: the projection's name, put before the computed title (which xmin the KS rule picks, how many
            eigenvalues that leaves in the tail, and each rule's alpha).
    Returns:
        The main Axes: the KS curve is its first line, then one vertical line per rule.
        The twin axis, if any, is ``ax.figure.axes[-1]``: alpha(xmin) is its first line.
    """
    from ..spectral.tails import fit_power_law, ks_curve

    eigs = _positive(eigs)
    curve = ks_curve(eigs)
    ax = _new_ax(ax, figsize=(6.0, 5.0))
    ax.plot(curve["xmin"], curve["ks_distance"], color=SPECTRUM_COLORS["ks_distance"], lw=1.5, label="KS distance D")
    fits = {rule: fit_power_law(eigs, xmin=rule) for rule in rules}
    for rule, fit in fits.items():
        style = rule_style(rule)
        ax.axvline(fit.xmin, color=style["color"], ls=style["linestyle"], gid=f"rule:{rule}",
                   label=f"{rule}: xmin = {fit.xmin:.3g}, alpha = {fit.alpha:.2f}, D = {fit.ks_distance:.3f}")
    ax.set_xscale("log")
    _tidy_log_axis(ax.xaxis, float(curve["xmin"].iloc[0]), float(curve["xmin"].iloc[-1]))
    ax.set_xlabel("xmin candidate (eigenvalue)")
    ax.set_ylabel("KS distance D")
    if show_alpha:
        twin = ax.twinx()
        twin.plot(curve["xmin"], curve["alpha"], color=SPECTRUM_COLORS["alpha_curve"], ls=":", lw=1.5,
                  label="alpha at that xmin (right axis)")
        top = max([8.0] + [1.15 * f.alpha for f in fits.values() if np.isfinite(f.alpha)])
        low, high = alpha_ylim if alpha_ylim is not None else (1.0, top)
        for rule, fit in fits.items():
            twin.plot([fit.xmin], [fit.alpha], marker="o", ms=6, ls="", color=rule_style(rule)["color"], gid=f"rule:{rule}")
        above = curve["alpha"].to_numpy(float) > high
        if above.any():
            x_first = float(curve["xmin"].to_numpy(float)[above][0])
            twin.plot([x_first], [high], marker="^", ms=8, ls="", color=SPECTRUM_COLORS["alpha_curve"], clip_on=False)
            twin.annotate(f"alpha > {high:.0f} from here", (x_first, high), xytext=(-4, -12), textcoords="offset points",
                          ha="right", fontsize="x-small", color=SPECTRUM_COLORS["alpha_curve"])
        twin.set_ylim(low, high)
        twin.set_ylabel("alpha at that xmin (dotted)", color=SPECTRUM_COLORS["alpha_curve"])
    if "ks" in fits:
        ks = fits["ks"]
        others = ", ".join(f"{r} {f.alpha:.2f}" for r, f in fits.items() if r != "ks")
        finding = (f"KS minimum at xmin {ks.xmin:.3g}: {ks.n_tail} of {ks.n_eigs} eigenvalues in the tail,\n"
                   f"alpha {ks.alpha:.2f}" + (f" ({others})" if others else ""))
        ax.set_title((f"{what}\n" if what else "") + finding, fontsize="medium")
    elif what:
        ax.set_title(what, fontsize="medium")
    legend_below(ax)
    return ax
