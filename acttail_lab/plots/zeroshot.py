"""Notebook 08's figures: zero-shot accuracy against sparsity per strategy (error bars = one standard error),
and average accuracy against perplexity (does perplexity rank the runs as accuracy does?).

Every helper takes ``ax=None`` and returns the Axes it drew on (a new Figure when none is given; nothing
shown). Inputs: the tables of :mod:`acttail_lab.report.zeroshot`. Strategy styles: ``plots.style``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from ..report.zeroshot import CHANCE, DENSE, PAPER_METRIC, main_metric_rows, perplexity_join
from .esd import _new_ax
from .style import legend_beside, strategy_style


def plot_accuracy_vs_sparsity(df: pd.DataFrame, task: str, ax: Axes | None = None, strategies=None,
                              chance: bool = True, legend: bool = True) -> Axes:
    """Accuracy (%) of ``task`` (its reported metric) against target sparsity, one line per strategy with
    +-1 standard error bars at the exact targets (no sideways offsets on the numeric axis); dense as a dotted line
    with a +-1 se band; guessing as a thin grey line. ``legend``: draw a legend outside the axes (right)."""
    ax = _new_ax(ax)
    rows = main_metric_rows(df)
    rows = rows[rows["task"] == task]
    if rows.empty:
        raise ValueError(f"Task {task!r} is not in the table (it has {sorted(set(df['task']))}).")
    dense = rows[rows["strategy"] == DENSE]
    body = rows[rows["strategy"] != DENSE]
    names = strategies or list(dict.fromkeys(body["strategy"]))
    for name in names:
        part = body[body["strategy"] == name].sort_values("sparsity")
        style = strategy_style(name)
        ax.errorbar(part["sparsity"], part["value"] * 100, yerr=part["stderr"] * 100, capsize=3, label=name,
                    color=style["color"], marker=style["marker"] or "o", linestyle=style["linestyle"])
    if not dense.empty:
        value, err = dense["value"].iloc[0] * 100, dense["stderr"].iloc[0] * 100
        ax.axhline(value, color=strategy_style(DENSE)["color"], linestyle=":", label="dense")
        ax.axhspan(value - err, value + err, color="0.85", alpha=0.5, linewidth=0)
    if chance and task in CHANCE and CHANCE[task] > 0:
        ax.axhline(CHANCE[task] * 100, color="0.6", linewidth=0.8, label="chance")
    ax.set(xlabel="target sparsity", ylabel=f"{PAPER_METRIC.get(task, 'acc')} (%)", title=task)
    if legend:
        legend_beside(ax)
    return ax


def plot_accuracy_grid(df: pd.DataFrame, axes=None, strategies=None):
    """:func:`plot_accuracy_vs_sparsity` for every task of the table, side by side, with ONE legend for the
    figure, outside the panels on the right (it never covers data); returns the axes array."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(df["task"]))
    if axes is None:
        fig = Figure(figsize=(4.0 * len(tasks) + 2.4, 3.8), layout="constrained")
        axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for task, ax in zip(tasks, np.ravel(axes)):
        plot_accuracy_vs_sparsity(df, task, ax=ax, strategies=strategies, legend=False)
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    first = np.ravel(axes)[0]
    first.figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small",
                        frameon=False)
    return axes


def plot_accuracy_vs_perplexity(df: pd.DataFrame, perplexity: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Average accuracy (%) against perplexity (log x) for the runs both tables hold, one marker per
    strategy, each point labelled with its sparsity."""
    ax = _new_ax(ax)
    rows = perplexity_join(df, perplexity)
    for name, part in rows.groupby("strategy", sort=False):
        style = strategy_style(name)
        ax.scatter(part["perplexity"], part["accuracy"], color=style["color"], marker=style["marker"] or "o",
                   label=name)
        for _, r in part.iterrows():
            ax.annotate(f"{r['sparsity']:g}", (r["perplexity"], r["accuracy"]), fontsize="x-small",
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="perplexity (Austen evaluation text)", ylabel="average accuracy (%)",
           title="accuracy vs perplexity, per run (numbers: target sparsity)")
    legend_beside(ax)
    return ax
