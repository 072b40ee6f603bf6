"""Notebook 09's figures: WINA and FARMS beside TopK and plain alpha.

Every helper takes ``ax=None`` and returns the Axes it drew on (a new ``matplotlib.figure.Figure`` when
none is given; no pyplot state). Inputs are the tables of ``report.wina_runs`` (runs and comparisons)
and ``report.alpha_estimators`` (per-kind alpha, correlation summary). Colours come from ``plots.style``
(:func:`strategy_style`, :func:`kind_color`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from ..report.wina_runs import COUNTERPART
from .esd import _new_ax
from .style import kind_color, legend_beside, strategy_style


def plot_alpha_shift(kinds: pd.DataFrame, source: str = "smollm2-135m", stat: str = "alpha_median",
                     ax: Axes | None = None) -> Axes:
    """Per kind, the plain and the FARMS alpha (``stat``: ``alpha_median`` or ``alpha_mean`` over layers) as
    two markers joined by an arrow: how far FARMS moves each kind and whether the order survives.

    ``kinds``: ``report.alpha_estimators.kind_alpha_table`` rows (both estimators) of ``source``."""
    ax = _new_ax(ax, figsize=(6, 3.5))
    part = kinds[kinds["source"] == source].pivot(index="kind", columns="estimator", values=stat)
    if not {"plain", "farms"} <= set(part.columns):
        raise ValueError(f"{source!r} needs rows of both estimators (plain, farms); has {list(part.columns)}.")
    part = part.loc[[k for k in dict.fromkeys(kinds.loc[kinds["source"] == source, "kind"])]]
    y = np.arange(len(part))
    for i, (kind, row) in enumerate(part.iterrows()):
        color = kind_color(kind)
        ax.annotate("", xy=(row["farms"], i), xytext=(row["plain"], i),
                    arrowprops=dict(arrowstyle="->", color=color, lw=1.5))
        ax.plot([row["plain"]], [i], "o", color=color, mfc="white")
        ax.plot([row["farms"]], [i], "o", color=color)
    ax.set_yticks(y, list(part.index))
    ax.set_xscale("log")
    ax.set_xlabel(f"alpha ({stat.replace('alpha_', '')} over layers; open = plain, filled = FARMS)")
    ax.set_title(f"{source}: alpha per kind, plain -> FARMS")
    ax.invert_yaxis()
    return ax


def plot_runs_vs_topk(comparison: pd.DataFrame, strategies: Sequence[str] | None = None,
                      ax: Axes | None = None) -> Axes:
    """Perplexity against target sparsity: each new strategy (filled markers) beside its TopK counterpart (open
    markers, thinner line), every line in its own registry style (line style = method), log scale, the legend
    outside the axes. ``comparison``: ``report.wina_runs.compare_runs``."""
    ax = _new_ax(ax, figsize=(8.5, 4.2))
    names = list(strategies) if strategies is not None else list(dict.fromkeys(comparison["strategy"]))
    drawn = set()
    for name in names:
        part = comparison[comparison["strategy"] == name].sort_values("sparsity")
        if part.empty:
            raise ValueError(f"{name!r} is not in the comparison (it has {sorted(set(comparison['strategy']))}).")
        ax.plot(part["sparsity"], part["perplexity"], label=name, lw=1.8, **strategy_style(name))
        counterpart = COUNTERPART.get(name)
        if counterpart and counterpart not in drawn and part["counterpart_ppl"].notna().any():
            ax.plot(part["sparsity"], part["counterpart_ppl"], label=f"{counterpart} (TopK counterpart)", lw=1.0,
                    mfc="white", **strategy_style(counterpart))
            drawn.add(counterpart)
    ax.set_yscale("log")
    ax.set_xlabel("target sparsity (parameter-weighted)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title("WINA / FARMS runs (filled) beside their TopK counterparts (open); line style = method",
                 fontsize="medium")
    legend_beside(ax, 8)
    return ax


def plot_change_vs_counterpart(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Each new run against its TopK counterpart at each target, as a forest plot: one row per (strategy, target),
    the change in percent (negative = better) with its 95% paired-bootstrap interval, on a symmetric-log axis
    (linear within +-5%, so a +-3% WINA effect stays readable beside a +4,500% FARMS one). Rows where a side
    collapsed read "collapsed" instead of a number; rows without per-window losses are open markers without bars.

    ``table``: ``report.wina_runs.comparison_verdicts`` (or a ``compare_runs`` table: point changes only).
    The title counts the verdicts (``report.verdicts``)."""
    from ..report.verdicts import BETTER, NOISE, WORSE

    if "verdict" not in table.columns:  # a compare_runs table: point changes, no intervals
        table = pd.DataFrame({"label": table["strategy"], "sparsity": table["sparsity"],
                              "change": 100 * table["change_vs_counterpart"], "low": np.nan, "high": np.nan,
                              "note": "", "verdict": "no interval", "baseline": table["counterpart"]}).dropna(
            subset=["change"])
    rows = table.reset_index(drop=True)
    ax = _new_ax(ax, figsize=(7.5, 0.28 * len(rows) + 1.6))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows.itertuples()):
        style = strategy_style(r.label)
        if r.note:
            ax.text(0, yi, "collapsed" if "both" not in r.note else "both collapsed", ha="center", va="center",
                    fontsize="x-small", color=style["color"])
            continue
        has = np.isfinite(r.low) and np.isfinite(r.high)
        if has:
            ax.plot([r.low, r.high], [yi, yi], color=style["color"], lw=1.6)
        ax.plot([r.change], [yi], marker=style["marker"] or "o", color=style["color"],
                mfc=style["color"] if has else "white", ms=6, linestyle="none")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xscale("symlog", linthresh=5.0)
    ticks = [t for t in (-100, -10, 0, 10, 100, 1000, 10000)
             if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.set_xticks(ticks, [f"{t:+,d}" if t else "0" for t in ticks], fontsize="small")
    ax.minorticks_off()
    ax.set_yticks(y, [f"{r.label} vs {r.baseline} @ {r.sparsity:g}" for r in rows.itertuples()], fontsize="x-small")
    ax.set_xlabel("perplexity change vs TopK counterpart (%; linear within +-5%, log beyond)")
    ax.grid(True, axis="x", alpha=0.3)
    counts = {v: int((rows["verdict"] == v).sum()) for v in (BETTER, NOISE, WORSE)}
    rest = len(rows) - sum(counts.values())
    ax.set_title(f"Against the TopK counterpart (95% paired bootstrap over windows):\n{counts[BETTER]} better, "
                 f"{counts[NOISE]} inside the noise, {counts[WORSE]} worse"
                 + (f", {rest} collapsed or without interval" if rest else "") + f" (of {len(rows)})",
                 fontsize="medium", loc="right")
    return ax


def plot_estimator_correlations(summary: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Spearman rho of alpha against each sensitivity, plain vs FARMS: bars for all projections, markers for
    the median within kinds. ``summary``: ``report.alpha_estimators.correlation_summary``."""
    ax = _new_ax(ax, figsize=(6.5, 3.5))
    targets = list(dict.fromkeys(summary["sensitivity"]))
    x = np.arange(len(targets))
    for i, (estimator, color) in enumerate((("plain", "#7F7F7F"), ("farms", "#0072B2"))):
        part = summary[summary["estimator"] == estimator].set_index("sensitivity").reindex(targets)
        offset = (i - 0.5) * 0.38
        ax.bar(x + offset, part["rho_all"], 0.38, color=color, label=f"{estimator}: all projections")
        ax.plot(x + offset, part["rho_within_kind_median"], "D", color="black", mfc=color,
                label=f"{estimator}: median within kinds")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, targets, rotation=20, fontsize=8)
    ax.set_ylabel("Spearman rho(alpha, sensitivity)")
    legend_beside(ax, 7)
    values = [c for c in ("rho_all", "rho_within_kind_median", "rho_all_low", "rho_all_high") if c in summary]
    wide = summary.pivot(index="sensitivity", columns="estimator", values=values)
    if {"plain", "farms"} <= set(summary["estimator"]):
        stronger = wide["rho_all"]["farms"].abs() > wide["rho_all"]["plain"].abs()
        if "rho_all_low" in values:  # only where the two Fisher-z intervals do not overlap
            stronger &= (wide["rho_all_low"]["farms"] > wide["rho_all_high"]["plain"]) | (
                wide["rho_all_high"]["farms"] < wide["rho_all_low"]["plain"])
        over = int(stronger.sum())
        within = int((wide["rho_within_kind_median"]["farms"].abs() > wide["rho_within_kind_median"]["plain"].abs()).sum())
        ax.set_title(f"FARMS alpha tracks the measured sensitivity more strongly beyond the 95% interval for {over} "
                     f"of {len(wide)}\nsensitivities over all projections; its median within kinds is larger for "
                     f"{within} of {len(wide)}", fontsize="medium")
    return ax
