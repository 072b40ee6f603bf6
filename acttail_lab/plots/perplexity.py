"""Matplotlib figures of perplexity by allocation strategy, and of the allocations themselves.

Every ``plot_*`` helper takes ``ax=None`` and returns the Axes it drew on (a new
``matplotlib.figure.Figure`` when none is given: no pyplot state, nothing shown;
in a notebook display ``ax.figure``). Inputs are the tidy tables of
``acttail_lab.report.results`` (runs: one row per strategy x sparsity plus a dense row)
and of ``acttail_lab.allocation`` (one row per projection, or ``summary`` rows).
Each strategy keeps one colour across figures (:func:`strategy_style`).
"""
from __future__ import annotations

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

STRATEGY_STYLES: dict[str, dict] = {
    "uniform": dict(color="black", marker="o"),
    "acttail": dict(color="tab:blue", marker="s"),
    "acttail-block": dict(color="tab:orange", marker="D"),
    "acttail-rev": dict(color="tab:red", marker="v", ls="--"),
    "acttail-eps0.1": dict(color="tab:cyan", marker="^"),
    "acttail-eps0.5": dict(color="tab:purple", marker="^"),
    "acttail-rank": dict(color="tab:green", marker="P"),
    "acttail-power": dict(color="tab:olive", marker="X"),
    "shuffled": dict(color="tab:gray", marker="x", ls="--"),
    "teal-kind": dict(color="tab:brown", marker="*"),
    "rotated-uniform": dict(color="0.35", marker="o", ls="-."),
    "rotated-acttail": dict(color="tab:blue", marker="s", ls="-.", mfc="white"),
    "teal-threshold": dict(color="tab:brown", marker="d"),
    "acttail-threshold": dict(color="tab:cyan", marker="d", ls="--"),
    "cats": dict(color="tab:pink", marker="h"),
    "ffn-threshold": dict(color="tab:olive", marker="p"),
    "ffn-topk": dict(color="tab:olive", marker="p", ls=":", mfc="white"),
}
"""Colour, marker and line style of the preset strategies (controls are dashed)."""
_SPARE_COLORS = ("tab:pink", "#17becf", "#bcbd22", "#8c564b", "#1f77b4", "#ff7f0e")


_RULE_LINESTYLES = {"ks": None, "peak": "-.", "median": ":"}


def strategy_style(label: str, index: int = 0) -> dict:
    """Line style of a strategy label: the preset's colour and marker (``STRATEGY_STYLES``), else a
    spare colour chosen by ``index``. A label with an xmin suffix other than ``ks``
    (``"acttail (xmin=peak)"``) gets open markers and a dash-dot (peak) or dotted (other) line."""
    base, _, rule = label.partition(" (xmin=")
    style = dict(STRATEGY_STYLES.get(base) or dict(color=_SPARE_COLORS[index % len(_SPARE_COLORS)], marker="o", ls=":"))
    rule = rule.rstrip(")")
    if rule and rule != "ks":
        style.update(ls=_RULE_LINESTYLES.get(rule) or ":", mfc="white")
    return style


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
                                x: str = "sparsity") -> Axes:
    """Perplexity against target sparsity, one line per strategy (ActTail's headline figure).

    Args:
        runs: a runs table of one setting (``results.load_perplexity`` / ``evaluate_grid``).
        strategies: labels to draw, in order (default: all, in table order).
        dense: draw the dense perplexity as a dotted horizontal line.
        logy: log-scale perplexity axis (errors grow multiplicatively with sparsity).
        x: ``"sparsity"`` (each strategy's target) or ``"realised_sparsity"`` (fraction of all
            projection weights skipped: the fair axis when some methods cover only the FFN).
    Returns:
        The Axes: one line per strategy (x = the ``x`` column ascending, y = perplexity,
        label = strategy), then the dense line when drawn (label ``"dense"``).
    """
    check_runs(runs)
    check_one_setting(runs, "plot_perplexity_vs_sparsity")
    runs, labels = _labelled(runs, strategies)
    ax = _new_ax(ax, figsize=(6.5, 4.5))
    for i, label in enumerate(labels):
        rows = runs[runs["label"] == label].sort_values(x)
        ax.plot(rows[x].to_numpy(float), rows["perplexity"].to_numpy(float), lw=1.8, ms=6,
                label=label, **strategy_style(label, i))
    dense_rows = runs[runs["strategy"] == DENSE]
    if dense and not dense_rows.empty:
        ax.axhline(float(dense_rows["perplexity"].iloc[0]), color="0.45", ls=":", lw=1.5, label=DENSE)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("target sparsity (parameter-weighted mean)" if x == "sparsity"
                  else "realised sparsity (fraction of all projection weights skipped)")
    ax.set_ylabel("perplexity" + (" (log scale)" if logy else ""))
    ax.set_title(title if title is not None else _setting_title(runs))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


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
        style = strategy_style(label, i)
        hatch = {"--": "//", "-.": "..", ":": ".."}.get(style.get("ls"))  # controls //, other xmin rules ..
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
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


# --------------------------------------------------------------------------- allocations
def _centred_range(values, center: float) -> tuple[float, float]:
    """Symmetric colour range around ``center`` covering every value (half-width at least 0.05)."""
    values = np.asarray(values, dtype=float)
    half = max(0.05, float(np.nanmax(np.abs(values - center))))
    return center - half, center + half


def plot_sparsity_map(allocation: pd.DataFrame, ax: Axes | None = None, vmin: float = 0.0, vmax: float = 1.0,
                      cmap: str | None = None, center: float | None = None, colorbar: bool = True,
                      title: str | None = None) -> Axes:
    """Heat map of one allocation: layers as rows (layer 0 on top), projection kinds as columns.

    Args:
        allocation: ``allocation.allocate`` output (columns layer, projection, sparsity).
        vmin, vmax: colour range (default [0, 1], sequential ``magma_r``: darker = sparser).
        center: if given (e.g. the target), a diverging map instead (``RdBu_r``: red = sparser
            than ``center``, blue = denser, white = equal) over a range symmetric around it that
            covers every value; vmin / vmax are then ignored.
        title: default ``"<label> @ <target>"`` when those columns exist.
    Returns:
        The Axes; ``ax.images[0].get_array()`` is ``plots.esd.alpha_matrix(allocation, "sparsity")``.
    """
    matrix = alpha_matrix(allocation, "sparsity")
    if center is not None:
        vmin, vmax = _centred_range(matrix.to_numpy(), center)
    cmap = cmap or ("RdBu_r" if center is not None else "magma_r")
    ax = _new_ax(ax, figsize=(3.8, max(3.0, 0.14 * len(matrix) + 1.2)))
    image = ax.imshow(matrix.to_numpy(dtype=float), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
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
                       vmin: float = 0.0, vmax: float = 1.0) -> Figure:
    """:func:`plot_sparsity_map` side by side with one shared colour scale (e.g. four strategies at one target).

    Args:
        center: ``"target"`` (default): a diverging scale around the allocations' common
            target (white = the target; falls back to [vmin, vmax] if targets differ);
            a number: around that value; None: the sequential [vmin, vmax] scale.
    Returns:
        A new Figure; ``fig.axes[i]`` is allocation i's map (the colour bar axes comes last).
    """
    allocations = list(allocations)
    if isinstance(center, str):
        targets = {float(a["target"].iloc[0]) for a in allocations if "target" in a.columns}
        center = targets.pop() if len(targets) == 1 and all("target" in a for a in allocations) else None
    if center is not None:
        vmin, vmax = _centred_range(np.concatenate([a["sparsity"].to_numpy(float) for a in allocations]), center)
    cmap = "RdBu_r" if center is not None else "magma_r"
    nrows = int(np.ceil(len(allocations) / ncols))
    n_layers = max(a["layer"].nunique() for a in allocations)
    fig = Figure(figsize=(2.6 * ncols + 1.2, max(3.0, 0.12 * n_layers + 1.4) * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, allocation in zip(axes, allocations):
        plot_sparsity_map(allocation, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, colorbar=False)
    for ax in axes[len(allocations):]:
        fig.delaxes(ax)
    label = "sparsity" + (f" (white = {center:g})" if center is not None else "")
    fig.colorbar(axes[0].images[0], ax=list(axes[:len(allocations)]), label=label, shrink=0.9)
    return fig


def plot_kind_budgets(budgets: pd.DataFrame, ax: Axes | None = None, labels: Sequence[str] | None = None,
                      target_line: bool = True) -> Axes:
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
    colors = ("tab:blue", "#4a90d9", "#9cc3eb", "tab:brown", "tab:green", "tab:purple")
    for i, label in enumerate(labels):
        rows = budgets[budgets["label"] == label].set_index("projection")["sparsity"].reindex(kinds)
        hatch = "//" if str(label).startswith("TEAL") else None
        ax.bar(np.arange(len(kinds)) - 0.4 + width * (i + 0.5), rows.to_numpy(float), width=width,
               color=colors[i % len(colors)], hatch=hatch, edgecolor="white", linewidth=0.5, label=label)
    if target_line and "target" in budgets.columns and budgets["target"].nunique() == 1:
        target = float(budgets["target"].iloc[0])
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_xlabel("projection kind")
    ax.set_ylabel("mean sparsity over layers")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


__all__ = ["STRATEGY_STYLES", "strategy_style", "plot_perplexity_vs_sparsity", "plot_relative_change",
           "plot_sparsity_map", "plot_sparsity_maps", "plot_kind_budgets"]
