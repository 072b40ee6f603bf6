"""The key figures of the project, rebuilt from the committed result tables only (no model, seconds).

``FIGURES`` maps a name to (builder, caption, notebook). A builder takes the results folder
and returns a matplotlib Figure whose title states its finding. :func:`write_figures` saves
each as ``<name>.png`` and the arrays it plots as ``<name>.json`` (:func:`figure_data`: every
line's x/y, image matrix, bar height, scatter point and title); :func:`stale_figures` rebuilds
the figures and names those whose plotted arrays differ from the committed JSON (arrays, not pixels).
"""
from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from ..core.paths import DEFAULT_MODEL, RESULTS_DIR, result_path
from ..report import headline
from ..report.explorer_sources import load_spectra
from ..report.related import load_related
from ..report.results import load_perplexity, reference_kind_budgets
from .esd import plot_alpha_heatmap
from .perplexity import plot_change_heatmap, plot_headline, plot_kind_budgets, plot_sparsity_maps
from .sensitivity import correlation_matrix, plot_correlation_table
from .paper_figures import PAPER_FIGURES

MODEL_LABEL = "SmolLM2-135M"
HEADLINE_STRATEGIES = ("uniform", "acttail", "acttail-ks", "acttail-block", "teal-greedy", "teal-greedy-fine",
                       "surrogate-optimal", "shuffled", "acttail-rev")
"""Strategies of the headline figure (those present in the committed grid are drawn)."""
MAP_STRATEGIES = ("acttail", "acttail-block", "teal-greedy", "surrogate-optimal")
"""Strategies of the sparsity maps (uniform would be one flat colour: white = its budget)."""
MAP_TARGET = 0.7
DPI = 150
"""Resolution of the saved PNGs: an 8 x 4.8 inch figure is 1200 x 720 px, sharp on a laptop screen (130 before:
561-1,271 px wide); saved as optimised palette-free PNG to stay under 200 KB."""
MAX_PIXELS = 1600
"""Longest side of a committed PNG in pixels: a figure larger than MAX_PIXELS / DPI inches is saved at a lower dpi,
so that the gallery's files stay small (tests/test_figures.py: under 200 KB) as panels are added."""


def _wrap(text: str, width: int = 70) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))


def headline_figure(results_dir: Path) -> Figure:
    """Perplexity against target sparsity, the strategies of ``HEADLINE_STRATEGIES``, collapses marked; the title
    names the lowest run per target among those drawn, with the paired-bootstrap verdict of its lead."""
    from ..report.bootstrap import load_windows

    runs = load_perplexity(DEFAULT_MODEL, results_dir)
    return plot_headline(runs, HEADLINE_STRATEGIES, what=MODEL_LABEL,
                         windows=load_windows("perplexity", DEFAULT_MODEL, results_dir)).figure


def change_figure(results_dir: Path) -> Figure:
    """Strategy x target heat map of the perplexity change against uniform; ``~`` = inside the noise, collapsed
    runs named instead of a percentage (``report.verdicts``)."""
    from ..report import perplexity_runs, verdicts
    from ..report.bootstrap import load_windows

    runs = load_perplexity(DEFAULT_MODEL, results_dir)
    table = verdicts.perplexity_verdicts(runs, load_windows("perplexity", DEFAULT_MODEL, results_dir))
    change = headline.change_matrix(runs)
    title = perplexity_runs.change_title(table, MODEL_LABEL) + f" ({verdicts.how_judged(table, short=True)})"
    return plot_change_heatmap(change, title=_wrap(title, 60), noise=perplexity_runs.noise_matrix(table),
                               collapsed=perplexity_runs.collapsed_matrix(table)).figure


def alpha_figure(results_dir: Path) -> Figure:
    """KS and peak alphas side by side on the one fixed alpha colour scale."""
    fig = Figure(figsize=(8.0, 5.2), layout="constrained")
    medians = {}
    for ax, rule in zip(fig.subplots(1, 2), ("ks", "peak")):
        table = load_spectra(DEFAULT_MODEL, rule, results_dir, compute=False)
        plot_alpha_heatmap(table, ax=ax)
        medians[rule] = float(table["alpha"].median())
        ax.set_title(f"xmin rule: {rule}", fontsize="medium")
    fig.suptitle(_wrap(f"{MODEL_LABEL}: the xmin rule moves alpha (median {medians['ks']:.1f} under ks, "
                       f"{medians['peak']:.1f} under peak)"), fontsize="medium")
    return fig


def sparsity_maps_figure(results_dir: Path) -> Figure:
    """Where ActTail (per projection / per layer), TEAL's greedy path and the cost optimum put the sparsity."""
    allocations = headline.committed_allocations(DEFAULT_MODEL, MAP_STRATEGIES, MAP_TARGET, "peak", results_dir)  # the labels' own rule
    return plot_sparsity_maps(allocations, ncols=len(allocations),
                              title=headline.spread_title(allocations, MODEL_LABEL))


def related_figure(results_dir: Path) -> Figure:
    """Related methods (thresholds, CATS, rotation, FFN-only) against the fraction of weights skipped."""
    runs = load_related(DEFAULT_MODEL, results_dir)
    return plot_headline(runs, what=f"{MODEL_LABEL}, related methods (alpha rows on KS alphas)",
                         x="realised_sparsity", reached_only=True).figure


def correlation_figure(results_dir: Path) -> Figure:
    """Spearman rho of spectral metrics against measured sensitivity."""
    corr = pd.read_csv(result_path("correlations", DEFAULT_MODEL, results_dir))
    shown = ["rel_error@0.8", "loss_increase@0.8"]
    ax = plot_correlation_table(corr, sensitivities=shown)
    matrix = correlation_matrix(corr, shown)
    overall, in_kind = (float(matrix.loc["alpha (ks)", f"rel_error@0.8 | {g}"]) for g in ("all", "projection"))
    sign = "high alpha = more sensitive, against ActTail's premise" if overall > 0 else "as ActTail's premise predicts"
    ax.set_title(_wrap(f"{MODEL_LABEL}: alpha (ks) vs output error at 0.8: rho {overall:+.2f} over all projections "
                       f"({sign}), {in_kind:+.2f} within a kind", 62), fontsize="medium", pad=22)
    return ax.figure


def kind_budgets_figure(results_dir: Path) -> Figure:
    """ActTail's per-kind budgets for LLaMA-2 from the published alphas, beside TEAL's published means."""
    budgets = reference_kind_budgets(target=0.5)
    return plot_kind_budgets(budgets, title=headline.kind_rank_title(budgets)).figure


def downstream_figure(results_dir: Path) -> Figure:
    """Zero-shot accuracy per task against target sparsity (standard-error bars, dense band, chance); the title
    counts the verdicts against uniform (``report.verdicts``) and gives the within-level rank correlations."""
    from ..report import zeroshot
    from ..report.verdicts import BETTER, BOTH_ZERO, WORSE
    from .zeroshot import plot_accuracy_grid

    zs = zeroshot.load_zeroshot(DEFAULT_MODEL, result_path("zeroshot", DEFAULT_MODEL, results_dir))
    fig = plot_accuracy_grid(zs)[0].figure
    table = zeroshot.verdict_table(zs)
    compared = table[table["verdict"] != BOTH_ZERO]
    beyond = int(compared["verdict"].isin([BETTER, WORSE]).sum())
    agree = zeroshot.rank_agreement(zs, zeroshot.committed_perplexity(DEFAULT_MODEL, results_dir))
    within = "; ".join(f"within {s:.0%}: {c.text()}" for s, c in agree["by_level"].items())
    zero = len(table) - len(compared)
    fig.suptitle(_wrap(f"{MODEL_LABEL}: {beyond} of {len(compared)} differences to uniform lie outside their 95% "
                       f"interval (+-1.96 se)" + (f", {zero} pairs at 0 vs 0 not compared" if zero else "")
                       + f". Does perplexity rank the runs as accuracy does? {within}", 120), fontsize="medium")
    return fig


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _count(n: int, noun: str) -> str:
    """``"two models"``, ``"one text"``, ``"12 models"``."""
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {noun}{'' if n == 1 else 's'}"


def cross_model_figure(results_dir: Path) -> Figure:
    """Perplexity / uniform's per model x text with paired 95% intervals (``report.cross_model``)."""
    from ..report import cross_model
    from .cross_model import plot_cross_model

    table = cross_model.cross_model_table(cross_model.load_grids(results_dir=results_dir))
    fig = plot_cross_model(table)[0, 0].figure
    counts = cross_model.verdict_counts(table)
    alpha = counts.loc[[s for s in cross_model.ALPHA_GUIDED if s in counts.index]]
    fine = counts.loc["teal-greedy-fine"] if "teal-greedy-fine" in counts.index else None
    settings = f"{_count(table['model'].nunique(), 'model')} x {_count(table['text'].nunique(), 'text')}"
    fig.suptitle(_wrap(f"{settings[0].upper()}{settings[1:]}: alpha-guided budgets beat uniform in "
                       f"{int(alpha['better'].sum())} of {int(alpha['cells'].sum())} cells beyond the noise"
                       + (f"; the upper reference (teal-greedy-fine) in {int(fine['better'])} of {int(fine['cells'])}"
                          if fine is not None else ""), 110), fontsize="medium")
    return fig


def size_figure(results_dir: Path) -> Figure:
    """Perplexity change against uniform per built-in model against its parameter count (log x), one panel per
    target, ActTail's claimed points at 80% beside them; models without a committed grid read "not yet measured"
    (``report.size``)."""
    from ..report import size
    from .size import plot_size

    return plot_size(size.size_table(size.load_size_grids(results_dir)), size.claimed_points())[0].figure


def speed_quality_figure(results_dir: Path) -> Figure:
    """Tokens/s against perplexity of the default model on this CPU, one point per strategy x sparsity, with the
    Pareto front; the title names the front and the fastest strategy at uniform@50%'s perplexity
    (``report.speed_cpu``)."""
    from ..report import speed_cpu
    from .speed_cpu import plot_speed_quality

    decode = speed_cpu.load_decode(model=DEFAULT_MODEL, results_dir=results_dir)
    table = speed_cpu.speed_quality(decode, speed_cpu.quality_runs(DEFAULT_MODEL, results_dir))
    lines = speed_cpu.equal_quality_sentences(table)
    title = speed_cpu.pareto_title(table, decode["model"].iloc[0]) + (f". {lines[0]}" if lines else "")
    return plot_speed_quality(table, title=_wrap(title, 95)).figure


FIGURES: dict[str, tuple[Callable[[Path], Figure], str, str]] = {
    "headline": (headline_figure, "perplexity against target sparsity per allocation strategy; collapsed runs "
                 "marked at the top", "02_perplexity_by_allocation"),
    "cross_model": (cross_model_figure, "perplexity relative to uniform per built-in model with committed grids x text "
                    "(novel, encyclopedic), with 95% paired-bootstrap intervals", "10_is_the_answer_general"),
    "size": (size_figure, "perplexity change against uniform by model size (parameters, log scale) per strategy and "
             "target, with 95% paired-bootstrap intervals and ActTail's claimed points at 80%",
             "10_is_the_answer_general"),
    "change_vs_uniform": (change_figure, "perplexity change against uniform, strategy x target",
                          "02_perplexity_by_allocation"),
    "alpha_heatmaps": (alpha_figure, "alpha of every projection (layer x kind) under two xmin rules, one colour "
                       "scale", "01_esd_and_powerlaw_fits"),
    "sparsity_maps": (sparsity_maps_figure, "where each strategy puts the sparsity (layer x kind) at target 0.7",
                      "02_perplexity_by_allocation"),
    "related_methods": (related_figure, "related methods (thresholds, CATS, rotation, FFN-only) against the "
                        "fraction of weights skipped", "05_rotation_and_thresholds"),
    "sensitivity_correlations": (correlation_figure, "Spearman rho of spectral metrics against measured "
                                 "sensitivity", "07_does_alpha_predict_sensitivity"),
    "kind_budgets": (kind_budgets_figure, "ActTail's per-kind budgets for LLaMA-2-7B/13B/70B beside TEAL's "
                     "per-kind means at 50%", "02_perplexity_by_allocation"),
    "speed_quality": (speed_quality_figure, "tokens/s of batch-1 CPU decoding (numba sparse GEMV) against "
                      "perplexity on the default model, one point per strategy x sparsity, with the Pareto front",
                      "04_decode_speed"),
    "downstream_accuracy": (downstream_figure, "zero-shot accuracy per task against target sparsity, with "
                            "standard errors, the dense band and chance", "08_downstream_accuracy"),
}
"""name -> (builder, one-line caption, notebook that explores it)."""
FIGURES.update({name: (paper.builder, paper.caption, paper.notebook) for name, paper in PAPER_FIGURES.items()})
"""Then the papers' figures redrawn from our data (plots/paper_figures.py)."""


# --------------------------------------------------------------------------- plotted data
def _floats(values) -> list:
    array = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan).ravel()
    return [None if not math.isfinite(v) else float(v) for v in array]


def figure_data(fig: Figure) -> dict:
    """The arrays a figure plots, per panel: titles, line x/y, image matrices, bar heights, scatter points.

    Colour-bar panels are left out. Non-finite values become None (JSON null).
    """
    panels = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        panel = dict(title=ax.get_title(), lines=[], images=[], bars=[], points=[])
        for line in ax.lines:
            panel["lines"].append(dict(label=str(line.get_label()), x=_floats(line.get_xdata()),
                                       y=_floats(line.get_ydata())))
        for image in ax.images:
            array = np.ma.asarray(image.get_array())
            panel["images"].append(dict(shape=list(array.shape), values=_floats(array)))
        for container in ax.containers:
            if isinstance(container, BarContainer):
                panel["bars"].append(dict(label=str(container.get_label()),
                                          heights=_floats([p.get_height() for p in container.patches])))
        for collection in ax.collections:
            offsets = collection.get_offsets()
            if len(offsets):
                panel["points"].append(dict(label=str(collection.get_label()), xy=_floats(offsets)))
        panels.append(panel)
    return dict(suptitle=fig._suptitle.get_text() if fig._suptitle else "", panels=panels)


def same_data(a, b, rtol: float = 1e-9) -> bool:
    """Equal structure and text, numbers equal within ``rtol`` (None = NaN on both sides)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k], rtol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_data(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
    return a == b


def build(name: str, results_dir: str | os.PathLike | None = None) -> Figure:
    """Figure ``name`` of ``FIGURES`` from the tables in ``results_dir`` (default: the committed ones)."""
    if name not in FIGURES:
        raise KeyError(f"No figure {name!r}. Fix: pick one of {list(FIGURES)}.")
    return FIGURES[name][0](Path(results_dir or RESULTS_DIR))


def write_figures(out_dir: str | os.PathLike, results_dir: str | os.PathLike | None = None,
                  names=None) -> list[Path]:
    """Save each figure as ``<out_dir>/<name>.png`` (``DPI``, lower where the longest side would pass
    ``MAX_PIXELS``) and its plotted arrays as ``<name>.json``. Returns the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or FIGURES:
        fig = build(name, results_dir)
        dpi = min(DPI, MAX_PIXELS / max(fig.get_size_inches()))
        fig.savefig(out / f"{name}.png", dpi=dpi, metadata={"Software": None}, pil_kwargs={"optimize": True})
        (out / f"{name}.json").write_text(json.dumps(figure_data(fig), indent=0) + "\n", encoding="utf-8")
        written.append(out / f"{name}.png")
    return written


def stale_figures(out_dir: str | os.PathLike, results_dir: str | os.PathLike | None = None) -> list[str]:
    """Names whose committed ``<name>.json`` is missing or differs from a rebuild from the tables."""
    stale = []
    for name in FIGURES:
        path = Path(out_dir) / f"{name}.json"
        if not path.exists() or not same_data(json.loads(path.read_text(encoding="utf-8")),
                                              json.loads(json.dumps(figure_data(build(name, results_dir))))):
            stale.append(name)
    return stale
