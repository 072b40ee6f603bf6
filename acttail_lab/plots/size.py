"""The answer as a function of size: perplexity change against uniform against parameter count (log x), one panel
per target, with ActTail's claimed points at 80% as reference markers.

Every helper takes ``ax=None`` / ``axes=None`` and returns what it drew on (a new constrained-layout Figure when none
is given; nothing shown). Input: :func:`acttail_lab.report.size.size_table` (percent changes, parameter counts) and
:func:`acttail_lab.report.size.claimed_points`. Each point sits at its model's parameter count exactly (no sideways
offset); one colour / marker / line style per strategy (``plots.style``).
"""
from __future__ import annotations


import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import FixedLocator, FuncFormatter

from ..report.size import MEASURED, SIZE_STRATEGIES, measured, size_text, size_title
from .cross_model import _panel_axes
from .esd import _new_ax
from .style import strategy_style

Y_TICKS = (-99.0, -95.0, -90.0, -75.0, -50.0, -25.0, 0.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)
"""Candidate y ticks in percent (those inside the axis are drawn)."""
CLAIM_GID = "ActTail abstract"
MISSING_COLOR = "0.6"


def _forward(pct):
    """Percent change -> log of the perplexity ratio (the axis is even in ratios: halving and doubling look alike)."""
    return np.log1p(np.maximum(np.asarray(pct, dtype=float), -99.99) / 100.0)


def _inverse(value):
    return np.expm1(np.asarray(value, dtype=float)) * 100.0


def _percent(value, _pos=None) -> str:
    return "0%" if abs(value) < 1e-9 else f"{value:+.0f}%"


def _y_ticks(low: float, high: float, count: int = 9) -> list[float]:
    """Ticks of :data:`Y_TICKS` inside [low, high] at least 1/``count`` of the span apart (in ratio space), 0 first."""
    span = float(_forward(high) - _forward(low))
    kept: list[float] = []
    for tick in sorted((t for t in Y_TICKS if low <= t <= high), key=abs):
        if all(abs(float(_forward(tick) - _forward(k))) >= span / count for k in kept):
            kept.append(tick)
    return sorted(kept)


def _y_range(values: np.ndarray) -> tuple[float, float]:
    """Axis limits in percent holding every value and 0, with a margin of 8% of the span in ratio space."""
    logs = _forward(np.append(values[np.isfinite(values)], 0.0))
    low, high = logs.min(), logs.max()
    pad = 0.08 * max(high - low, 0.2)
    return float(_inverse(low - pad)), float(_inverse(high + pad))


def plot_size_panel(table: pd.DataFrame, target: float, ax: Axes | None = None, strategies=SIZE_STRATEGIES,
                    claims: pd.DataFrame | None = None, ylim: tuple[float, float] | None = None) -> Axes:
    """One target: per strategy, its % change against uniform at each measured model's parameter count (log x),
    joined across sizes in the strategy's line style, with the 95% paired-bootstrap interval as an error bar; uniform
    is the 0 line. A collapsed comparison is marked at the top frame instead of a number; a model with no
    measurement at this target is a dotted vertical line reading "not yet measured". ``claims``
    (``report.size.claimed_points``): the rows at ``target`` are drawn as open stars labelled with their model.
    ``ylim``: the y range in percent (default: every point, interval and claim). Returns the axes."""
    ax = _new_ax(ax)
    rows = table[(table["sparsity"] - target).abs() < 1e-9]
    done = measured(rows)
    values = []
    for name in [s for s in strategies if s in set(done["strategy"])]:
        part = done[done["strategy"] == name].sort_values("parameters")
        style = strategy_style(name)
        gone = part["collapsed"].astype(bool) | part["uniform_collapsed"].astype(bool)
        shown = part[~gone]
        y = shown["change_pct"].to_numpy(float)
        ax.errorbar(shown["parameters"].to_numpy(float), y,
                    yerr=[y - shown["ci_low_pct"].to_numpy(float), shown["ci_high_pct"].to_numpy(float) - y],
                    capsize=2, label=name, color=style["color"], marker=style["marker"] or "o",
                    linestyle=style["linestyle"], linewidth=1, markersize=6)
        values += [*y, *shown["ci_low_pct"], *shown["ci_high_pct"]]
        if gone.any():
            ax.plot(part.loc[gone, "parameters"].to_numpy(float), np.ones(int(gone.sum())), linestyle="none",
                    marker="^", color=style["color"], markersize=7, clip_on=False, transform=ax.get_xaxis_transform(),
                    label="collapsed (not compared)", gid="collapsed")
    at = claims[(claims["sparsity"] - target).abs() < 1e-9] if claims is not None else pd.DataFrame()
    if len(at):
        ax.plot(at["parameters"].to_numpy(float), at["change_pct"].to_numpy(float), linestyle="none", marker="*",
                markersize=12, markerfacecolor="none", color=strategy_style("acttail")["color"],
                label=f"acttail, {CLAIM_GID} (LLaMA-2, Mistral)", gid=CLAIM_GID)
        for n, r in enumerate(at.sort_values("change_pct", ascending=False).itertuples()):  # sides alternate
            right = n % 2 == 0
            ax.annotate(r.model, (r.parameters, r.change_pct), xytext=(7 if right else -7, -3), textcoords="offset points",
                        fontsize="x-small", color="0.25", ha="left" if right else "right")
        values += list(at["change_pct"])
    for model, part in rows.groupby("model", sort=False):
        if not (part["status"] == MEASURED).any():
            x = float(part["parameters"].iloc[0])
            ax.axvline(x, color=MISSING_COLOR, linestyle=":", linewidth=1.2, label="not yet measured", gid=model)
            ax.text(x, 0.04, f" {model}: not yet measured", rotation=90, transform=ax.get_xaxis_transform(),
                    fontsize="x-small", color="0.35", va="bottom", ha="right")
    ax.axhline(0.0, color=strategy_style("uniform")["color"], linewidth=1, label="uniform")
    ax.set_xscale("log")
    ax.set_yscale("function", functions=(_forward, _inverse))
    low, high = ylim or _y_range(np.asarray(values, dtype=float))
    ax.set_ylim(low, high)
    ax.yaxis.set_major_locator(FixedLocator(_y_ticks(low, high)))
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: size_text(v)))
    ax.set(xlabel="parameters (log scale)", ylabel="perplexity change against uniform", title=f"target {target:.0%}")
    ax.grid(True, which="major", axis="y", color="0.9", linewidth=0.8)
    return ax


def _x_limits(table: pd.DataFrame, claims: pd.DataFrame | None) -> tuple[float, float]:
    """Log-x limits holding every model's and claim's parameter count, half a decade-ish margin each side."""
    xs = list(table["parameters"].astype(float)) + (list(claims["parameters"]) if claims is not None else [])
    return min(xs) / 1.8, max(xs) * 1.8


def plot_size(table: pd.DataFrame, claims: pd.DataFrame | None = None, strategies=SIZE_STRATEGIES, targets=None,
              axes=None, title: str | None = None):
    """:func:`plot_size_panel` for every target of the table (one panel each, side by side, one shared y range and
    x range), one legend for the figure below the panels, and a suptitle stating the finding (default
    ``report.size.size_title``, computed from the numbers; it names the models not yet measured). Returns the 1-D
    axes array."""
    targets = sorted(table["sparsity"].unique()) if targets is None else list(targets)
    axes = _panel_axes(axes, 1, len(targets), (4.0, 4.5))[0]
    done = measured(table)
    done = done[~(done["collapsed"].astype(bool) | done["uniform_collapsed"].astype(bool))]
    values = np.concatenate([done[c].to_numpy(float) for c in ("change_pct", "ci_low_pct", "ci_high_pct")]
                            + ([claims["change_pct"].to_numpy(float)] if claims is not None else []))
    ylim = _y_range(values)
    xlim = _x_limits(table, claims)
    handles = {}
    for ax, target in zip(axes, targets):
        plot_size_panel(table, target, ax=ax, strategies=strategies, claims=claims, ylim=ylim)
        ax.set_xlim(*xlim)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig = axes[0].figure
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 4),
               fontsize="small")
    text = title if title is not None else size_title(table)
    if text:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(text, 120, break_on_hyphens=False)), fontsize="medium")
    return axes
