"""Notebook 10's figures: perplexity relative to uniform per model x text, with paired 95% intervals.

Every helper takes ``ax=None`` / ``axes=None`` and returns what it drew on (a new Figure when none is
given; nothing shown). Input: :func:`acttail_lab.report.cross_model.cross_model_table`. Styles by name
from ``plots.style``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from .esd import _new_ax
from .style import strategy_style


def _panel_axes(axes, rows: int, columns: int, panel_size: tuple[float, float], sharey: bool = False):
    """``axes`` as a ``rows x columns`` array, or a new constrained-layout Figure's (``panel_size`` inches each)."""
    if axes is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False, sharey=sharey)
    return np.asarray(axes).reshape(rows, columns)


GROUP_WIDTH = 0.6
"""Width of one target's group on the categorical target axis (1 = the distance between two targets)."""


def plot_relative_perplexity(table: pd.DataFrame, model: str, text: str, ax: Axes | None = None,
                             strategies=None) -> Axes:
    """Perplexity / uniform's (log y; 1 = uniform) per target sparsity for one model and text: one marker per
    strategy and target with its 95% paired-bootstrap interval as an error bar.

    The target axis is CATEGORICAL: target ``i`` (sorted) is the group at position ``i``, ticked with the target
    itself (``0.5``); the strategies of one group stand side by side, in a fixed order, inside ``GROUP_WIDTH``
    (light bands separate the groups). No point is drawn at a sparsity it was not measured at, since the axis is
    not a sparsity scale; points are not joined by lines. The y range holds every point and interval. Returns
    the Axes."""
    ax = _new_ax(ax)
    rows = table[(table["model"] == model) & (table["text"] == text)]
    if rows.empty:
        raise ValueError(f"No rows for {model}/{text} (the table has "
                         f"{sorted(set(zip(table['model'], table['text'])))}).")
    names = [s for s in (strategies or dict.fromkeys(rows["strategy"])) if s in set(rows["strategy"])]
    targets = sorted(rows["sparsity"].unique())
    group = {t: i for i, t in enumerate(targets)}
    slot = GROUP_WIDTH / max(len(names), 1)
    for n, name in enumerate(names):
        part = rows[rows["strategy"] == name].sort_values("sparsity")
        ratio = 1 + part["change_pct"].to_numpy() / 100
        low, high = 1 + part["ci_low_pct"].to_numpy() / 100, 1 + part["ci_high_pct"].to_numpy() / 100
        x = np.array([group[t] for t in part["sparsity"]], float) + (n - (len(names) - 1) / 2) * slot
        style = strategy_style(name)
        ax.errorbar(x, ratio, yerr=[ratio - low, high - ratio], capsize=2, label=name, color=style["color"],
                    marker=style["marker"] or "o", linestyle="none", markersize=5)
    for i in range(0, len(targets), 2):
        ax.axvspan(i - 0.5, i + 0.5, color="0.95", zorder=0)
    ax.axhline(1.0, color=strategy_style("uniform")["color"], linewidth=1, label="uniform")
    ax.set_yscale("log")
    ax.set_xticks(range(len(targets)), [f"{t:g}" for t in targets])
    ax.set(xlabel="target sparsity (one group per target)", ylabel="perplexity / uniform's",
           title=f"{model}, {text}", xlim=(-0.5, len(targets) - 0.5))
    return ax


def plot_cross_model(table: pd.DataFrame, axes=None, strategies=None):
    """:func:`plot_relative_perplexity` for every (model, text) of the table, models as rows, texts as
    columns, one legend; returns the 2-D axes array."""
    models = list(dict.fromkeys(table["model"]))
    texts = list(dict.fromkeys(table["text"]))
    axes = _panel_axes(axes, len(models), len(texts), (5.2, 3.9), sharey=True)
    for i, model in enumerate(models):
        for j, text in enumerate(texts):
            if ((table["model"] == model) & (table["text"] == text)).any():
                plot_relative_perplexity(table, model, text, ax=axes[i, j], strategies=strategies)
            else:
                axes[i, j].set_axis_off()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), fontsize="small")
    return axes


def plot_headlines(grids, strategies=None, axes=None):
    """``plots.perplexity.plot_headline`` of every grid (``report.cross_model.load_grids``), models as rows
    and texts as columns, each title's lead judged on the grid's per-window losses (paired intervals); one legend
    below the panels (the panels keep their whole width); returns the 2-D axes array."""
    from .perplexity import plot_headline

    models = list(dict.fromkeys(model for model, _ in grids))
    texts = list(dict.fromkeys(text for _, text in grids))
    axes = _panel_axes(axes, len(models), len(texts), (6.0, 4.4))
    handles = {}
    for i, model in enumerate(models):
        for j, text in enumerate(texts):
            if (model, text) in grids:
                runs, windows = grids[(model, text)]
                present = [s for s in (strategies or dict.fromkeys(runs["strategy"])) if s in set(runs["strategy"])]
                ax = plot_headline(runs, present, ax=axes[i, j], what=f"{model}, {text}", windows=windows)
                ax.set_xticks(sorted(runs.loc[runs["sparsity"] > 0, "sparsity"].unique()))  # the measured targets
                for handle, label in zip(*ax.get_legend_handles_labels()):
                    handles.setdefault(label, handle)
                if ax.get_legend() is not None:
                    ax.get_legend().remove()  # one legend for the whole figure, below the panels
            else:
                axes[i, j].set_axis_off()
    if handles:
        axes[0, 0].figure.legend(list(handles.values()), list(handles), loc="outside lower center",
                                 ncols=min(len(handles), 4), fontsize="small")
    return axes
