"""Figures of the CPU speed tables on 7B shapes (``report.speed_cpu``): GEMV against the limit, where the time
per token goes, and tokens/s against perplexity with the Pareto front.

Every helper takes ``ax=None`` and returns the Axes it drew on (a new
``matplotlib.figure.Figure`` when none is given; no pyplot state). Legends sit
outside the axes, so they never cover data.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from .esd import _new_ax
from .style import DARK_GREY, GREY, kind_color, legend_beside, strategy_style

SHAPE_KINDS = {"4096x4096": "q", "4096x11008": "gate", "11008x4096": "down", "8192x28672": "up"}
"""Colour of each LLaMA shape (d_in x d_out): the projection kind that has it (8192x28672 is a 70B gate/up)."""
PART_COLORS = {"gemv_ms": "#0072B2", "select_ms": "#D55E00", "wrap_ms": "#CC79A7", "other_ms": GREY}
PART_LABELS = {"gemv_ms": "GEMV", "select_ms": "selection", "wrap_ms": "wrapper (casts, outputs)",
               "other_ms": "everything else (attention, norms, LM head, calls)"}


def plot_gemv_fraction(gemv: pd.DataFrame, ax: Axes | None = None, dtype: str = "fp32", threads: int = 1,
                       candidate: str = "numba", title: str | None = None) -> Axes:
    """Fraction of the memory-bound limit reached against sparsity, one line per 7B weight shape.

    y = ``frac_of_limit`` = (fastest dense GEMV time / candidate time) x (1 - s); the goals of issue 27
    (0.9 at s = 0.5, 0.7 at s = 0.8) are drawn as black ticks. Dashed: the same candidate against ``F.linear``
    (``vs_linear x (1 - s)``), which can exceed 1 because that call does not reach the machine's bandwidth.
    """
    from ..report.speed_cpu import GEMV_GOALS

    rows = gemv[(gemv["candidate"] == candidate) & (gemv["dtype"] == dtype) & (gemv["threads"] == threads)]
    if rows.empty:
        raise ValueError(f"No {candidate!r} rows for {dtype} on {threads} thread(s).")
    ax = _new_ax(ax, figsize=(6.5, 4.0))
    for shape, group in rows.groupby("shape", sort=False):
        group = group.sort_values("sparsity")
        color = kind_color(SHAPE_KINDS.get(shape, "o"))
        ax.plot(group["sparsity"], group["frac_of_limit"], marker="o", color=color, label=f"{shape} vs fastest dense")
        ax.plot(group["sparsity"], group["vs_linear"] * (1 - group["sparsity"]), ls="--", lw=0.9, color=color,
                label=f"{shape} vs F.linear")
    for s, goal in GEMV_GOALS.items():
        ax.plot([s], [goal], marker="_", ms=22, mew=2.5, color="black", ls="none",
                label="goal" if s == min(GEMV_GOALS) else None)
    ax.axhline(1.0, color=DARK_GREY, lw=0.8, ls=":")
    ax.set_xlabel("sparsity s (fraction of input rows skipped)")
    ax.set_ylabel("fraction of the limit 1/(1-s)")
    ax.set_title(title or f"{candidate} GEMV, {dtype}, {threads} thread(s)", fontsize=9)
    legend_beside(ax, 8)
    return ax


def plot_decode_breakdown(breakdown: pd.DataFrame, ax: Axes | None = None, target: float = 0.5,
                          title: str | None = None) -> Axes:
    """Milliseconds per token by part (GEMV, selection, wrapper, everything else), one horizontal bar per
    configuration at ``target`` (plus the dense path, drawn whole, and dense through the kernel).

    Args:
        breakdown: :func:`report.speed_cpu.decode_breakdown`.
    """
    rows = breakdown[np.isclose(breakdown["target"], target) | breakdown["strategy"].isin(["dense", "dense-kernel"])]
    if rows.empty:
        raise ValueError(f"No configuration at target {target}.")
    ax = _new_ax(ax, figsize=(7.5, 0.35 * len(rows) + 1.2))
    labels = [s if s in ("dense", "dense-kernel") else f"{s} ({m})" for s, m in zip(rows["strategy"], rows["mode"])]
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for part in PART_COLORS:
        width = rows[part].to_numpy(float) if part in rows else np.full(len(rows), np.nan)
        if part == "other_ms":  # the dense path has no kernel parts: its whole time is "everything else"
            width = np.where(np.isnan(width), rows["ms_per_token"].to_numpy(float), width)
        width = np.nan_to_num(width)
        ax.barh(y, width, left=left, color=PART_COLORS[part], label=PART_LABELS[part], height=0.7)
        left += width
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("milliseconds per token")
    ax.set_title(title or f"Where the time per token goes at {target:.0%}", fontsize=9)
    legend_beside(ax, 8)
    return ax


def plot_speed_quality(table: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Tokens/s (y, with the slowest-fastest round as error bars) against perplexity (x, log), one line per
    strategy through its sparsities, each point labelled with its target; the Pareto front (faster and
    better is up-left) is a black step line.

    Args:
        table: :func:`report.speed_cpu.speed_quality`.
    """
    ax = _new_ax(ax, figsize=(7.5, 4.5))
    for strategy, part in table.groupby("strategy", sort=False):
        part = part.sort_values("target")
        style = strategy_style(strategy)
        err = np.vstack([part["tokens_per_s"] - part["tokens_per_s_min"],
                         part["tokens_per_s_max"] - part["tokens_per_s"]])
        ax.errorbar(part["perplexity"], part["tokens_per_s"], yerr=np.nan_to_num(err), color=style["color"],
                    marker=style["marker"] or "*", ls=style["linestyle"] if len(part) > 1 else "none", capsize=2,
                    label=strategy, ms=5, lw=1.1)
        for r in part.itertuples():
            if r.strategy != "dense":
                ax.annotate(f"{r.target:.0%}", (r.perplexity, r.tokens_per_s), textcoords="offset points",
                            xytext=(3, 3), fontsize=6, color=style["color"])
    front = table[table["pareto"]].sort_values("perplexity")
    ax.step(front["perplexity"], front["tokens_per_s"], where="post", color="black", lw=1.0, alpha=0.6,
            label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity (log scale; lower is better)")
    ax.set_ylabel("tokens/s (batch 1, greedy)")
    ax.set_title(title or "Speed beside quality", fontsize=9)
    legend_beside(ax, 8)
    return ax
