"""Matplotlib figures of decoding speed: speedup against sparsity and the 1/(1-s) limit, per kind, tokens/s.

Every ``plot_*`` helper takes ``ax=None`` and returns the Axes it drew on (a
new ``matplotlib.figure.Figure`` when none is given: no pyplot state, nothing
shown; in a notebook display ``ax.figure``). Inputs are the tidy tables of
``acttail_lab.report.speed`` (GEMV rows: shape x dtype x method x sparsity;
decode rows: strategy x target x mode; per-kind rows from ``kind_speedups``).
The memory-bound limit ``1 / (1 - s)`` is drawn as a dashed grey line.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from ..core.models import PROJECTIONS
from .esd import _new_ax
from .style import GREY, kind_color, legend_beside, series_color, strategy_style

LIMIT_STYLE = dict(color=GREY, ls="--", lw=1.2, label="limit 1/(1-s)")
MODE_STYLES = {"topk": dict(ls="-", marker="o"), "threshold": dict(ls=":", marker="^")}


def _shape_color(group: pd.DataFrame) -> str:
    """Colour of a weight shape: its first projection kind's colour (``"q,k,v,o"`` -> q's), by name."""
    if "kinds" in group.columns:
        return kind_color(str(group["kinds"].iloc[0]).split(",")[0].strip())
    return series_color(str(group["shape"].iloc[0]))


def _limit_line(ax: Axes, lo: float, hi: float) -> None:
    s = np.linspace(lo, hi, 200)
    ax.plot(s, 1.0 / (1.0 - s), **LIMIT_STYLE)


def _device_title(df: pd.DataFrame, what: str) -> str:
    from ..report.speed import device_label

    return f"{what}\n{device_label(df)}"


def plot_gemv_speedup(gemv: pd.DataFrame, ax: Axes | None = None, method: str = "topk",
                      dtype: str | None = None, max_sparsity: float = 0.9, title: str | None = None) -> Axes:
    """Per-GEMV speedup over the dense product against sparsity, one line per weight shape, with the limit.

    Args:
        gemv: a GEMV table (``speed_results.load_speed("gemv", kind)``).
        method: ``"topk"``, ``"topk_gemv_only"`` or ``"threshold"``.
        dtype: which dtype's rows (default: the first in the table).
        max_sparsity: rows above it are left out (the limit explodes near 1).
    Returns:
        The Axes: one line per shape (label ``"<d_in>x<d_out> (<kinds>)"``,
        x = sparsity, y = speedup), then the limit line, and a dotted line at 1.
    """
    dtype = dtype or str(gemv["dtype"].iloc[0])
    rows = gemv[(gemv["method"] == method) & (gemv["dtype"] == dtype) & (gemv["sparsity"] <= max_sparsity + 1e-9)]
    if rows.empty:
        raise ValueError(f"No rows for method={method!r}, dtype={dtype!r} (methods: {sorted(set(gemv['method']))}, "
                         f"dtypes: {sorted(set(gemv['dtype']))}).")
    ax = _new_ax(ax)
    for shape, group in rows.groupby("shape", sort=False):
        group = group.sort_values("sparsity")
        ax.plot(group["sparsity"], group["speedup"], marker="o", color=_shape_color(group),
                label=f"{shape} ({group['kinds'].iloc[0]})")
    _limit_line(ax, 0.0, float(rows["sparsity"].max()))
    ax.axhline(1.0, color="0.7", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity s (fraction of inputs skipped)")
    ax.set_ylabel("speedup over dense (x)")
    ax.set_title(title or _device_title(gemv, f"Sparse GEMV ({method}, {dtype}) vs dense"), fontsize=9)
    ax.legend(fontsize=8)
    return ax


def plot_decode_speedup(decode: pd.DataFrame, ax: Axes | None = None, modes: Sequence[str] | None = None,
                        title: str | None = None) -> Axes:
    """End-to-end decoding speedup over the dense model against target sparsity, per strategy and mode.

    The speedup is ``report.speed.decode_table``'s one definition, tokens/s over dense tokens/s (so it agrees with
    :func:`plot_tokens_per_s`); the spread over rounds is drawn as error bars when the table has it.
    Returns the Axes: one line per (strategy, mode) (label ``"<strategy> (<mode>)"``,
    x = target, y = speedup), then the limit line and, when the table has it,
    the weight-bytes limit of the first strategy as a grey dotted line.
    """
    from ..report.speed import decode_table

    table = decode_table(decode)
    body = table[table["strategy"] != "dense"]
    modes = list(modes) if modes is not None else list(dict.fromkeys(body["mode"]))
    ax = _new_ax(ax)
    for (strategy, mode), group in body[body["mode"].isin(modes)].groupby(["strategy", "mode"], sort=False):
        group = group.sort_values("target")
        ax.plot(group["target"], group["speedup"], color=strategy_style(strategy)["color"],
                label=f"{strategy} ({mode})", **MODE_STYLES.get(mode, {}))
        if group["speedup_low"].notna().any():
            ax.errorbar(group["target"], group["speedup"], fmt="none", color=strategy_style(strategy)["color"],
                        yerr=[group["speedup"] - group["speedup_low"], group["speedup_high"] - group["speedup"]],
                        capsize=2, lw=0.8)
    _limit_line(ax, float(body["target"].min()), float(body["target"].max()))
    if "bytes_limit" in body:
        first = body[(body["mode"] == modes[0]) & (body["strategy"] != "dense-kernel")]  # not the k = d_in point
        first = first[first["strategy"] == first["strategy"].iloc[0]].sort_values("target")
        ax.plot(first["target"], first["bytes_limit"], color="0.6", ls=":", lw=1.2,
                label="weight-bytes limit (LM head dense)")
    ax.axhline(1.0, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("target sparsity (parameter-weighted)")
    ax.set_ylabel("speedup = tokens/s / dense tokens/s (x)")
    ax.set_title(title or _device_title(decode, "Batch-1 decoding speedup"), fontsize=9)
    legend_beside(ax, 8)  # outside: never over data
    return ax


def plot_tokens_per_s(decode: pd.DataFrame, ax: Axes | None = None, mode: str = "topk",
                      title: str | None = None) -> Axes:
    """Tokens/s per strategy against target sparsity (one mode), the dense model as a horizontal line.

    Returns the Axes: one line per strategy (x = target, y = tokens/s), then
    the dense line (label ``"dense"``) and the dense rate times the limit
    (dashed, ``"dense x 1/(1-s)"``).
    """
    body = decode[(decode["strategy"] != "dense") & (decode["mode"] == mode)]
    if body.empty:
        raise ValueError(f"No rows in mode {mode!r} (modes: {sorted(set(decode['mode']) - {'dense'})}).")
    dense = float(decode.loc[decode["strategy"] == "dense", "tokens_per_s"].iloc[0]) \
        if (decode["strategy"] == "dense").any() else float(body["dense_tokens_per_s"].median())
    ax = _new_ax(ax)
    for strategy, group in body.groupby("strategy", sort=False):
        group = group.sort_values("target")
        ax.plot(group["target"], group["tokens_per_s"], color=strategy_style(strategy)["color"],
                label=strategy, **MODE_STYLES.get(mode, {}))
    ax.axhline(dense, color=strategy_style("dense")["color"], lw=1.2, label="dense")
    s = np.linspace(float(body["target"].min()), float(body["target"].max()), 100)
    ax.plot(s, dense / (1.0 - s), color="0.45", ls="--", lw=1.2, label="dense x 1/(1-s)")
    ax.set_xlabel("target sparsity (parameter-weighted)")
    ax.set_ylabel("tokens / s (batch 1)")
    ax.set_title(title or _device_title(decode, f"Decoding throughput ({mode})"), fontsize=9)
    legend_beside(ax, 8)  # outside: never over data
    return ax


def plot_kind_speedups(kinds: pd.DataFrame, ax: Axes | None = None, target: float | None = None,
                       title: str | None = None) -> Axes:
    """Grouped bars: predicted GEMV speedup of each projection kind per strategy at one target.

    Args:
        kinds: output of ``speed_results.kind_speedups``.
        target: which target sparsity (default: the largest in the table).
    Returns:
        The Axes with one bar container per strategy (bars in ``PROJECTIONS``
        order, heights = speedup) and a short grey tick per kind at the
        limit of that kind's mean sparsity under the first strategy.
    """
    target = float(kinds["target"].max()) if target is None else float(target)
    rows = kinds[np.isclose(kinds["target"], target)]
    if rows.empty:
        raise ValueError(f"No rows at target {target} (targets: {sorted(set(kinds['target']))}).")
    present = [k for k in PROJECTIONS if k in set(rows["projection"])]
    strategies = list(dict.fromkeys(rows["strategy"]))
    ax = _new_ax(ax, figsize=(6.5, 4.0))
    width = 0.8 / len(strategies)
    x = np.arange(len(present))
    for i, strategy in enumerate(strategies):
        values = rows[rows["strategy"] == strategy].set_index("projection").reindex(present)
        ax.bar(x + (i - (len(strategies) - 1) / 2) * width, values["speedup"], width,
               color=strategy_style(strategy)["color"], label=strategy)
    ax.set_xticks(x, present)
    ax.axhline(1.0, color="0.7", lw=0.8, ls=":")
    ax.set_ylabel("predicted GEMV speedup (x)")
    ax.set_title(title or f"Per-kind speedup at target {target:g} (from the per-GEMV curves)", fontsize=9)
    ax.legend(fontsize=8)
    return ax
