"""Figures of ActTail, AlphaPruning and TEAL redrawn from this project's committed data, laid out as the papers do.

Each builder takes the results folder (the committed CSVs of ``data/results``) and returns a matplotlib
Figure; the LLaMA numbers come from the package's published reference data (``core.reference``:
AlphaPruning's ``alpha_peak`` files, TEAL's shipped per-kind means), never from a model.
``PAPER_FIGURES`` maps a name to a :class:`PaperFigure`: the builder, the paper and figure it
corresponds to, what differs, and the notebook that explores it; ``plots.figures.FIGURES`` registers them.

Figure numbers are given only where the paper's caption was checked: AlphaPruning Figure 1 is its pipeline
diagram (i: ESD analysis of every weight matrix, ii: power-law fits give layer-wise metric values, iii: a
linear assignment turns them into layer-wise pruning ratios); TEAL Figure 4 plots perplexity against
sparsity for Llama-2-7B quantized to several bit-widths. The others are named by what they show only.

Not drawn: the ESD histogram with its power-law fit (one panel per projection kind). It needs the
eigenvalues of each weight matrix, which are not committed (only the fitted alphas are); notebook
``01_esd_and_powerlaw_fits`` draws it from the model.

Strategy labels are read from the data (only ``uniform`` and ``dense`` are named here) and styled by
``plots.style``, so a renamed strategy keeps being drawn.
"""
from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ..allocation import allocate, summary
from ..core.models import PROJECTIONS
from ..core.paths import DEFAULT_MODEL
from ..core.reference import TEAL_LLAMA2_7B_50, published_alphas
from ..report import headline
from ..report.results import LLAMA2_MODELS, load_perplexity, run_labels
from .style import kind_color, legend_beside, series_color, strategy_style

MODEL_LABEL = "SmolLM2-135M"
ALPHAPRUNING_TARGET = 0.7
"""AlphaPruning's worked example prunes LLaMA-2-7B to 70% (its README command)."""
ALPHAPRUNING_MODEL = "LLaMA-2-7B"
ACTTAIL_TARGET = 0.8
"""The sparsity of ActTail's headline claims (abstract: -21.8% / -40.1% / -9.4% perplexity vs uniform)."""
TEAL_TARGET = 0.5
"""TEAL's shipped per-kind allocation is at 50% model-wide sparsity."""
UNIFORM, DENSE = "uniform", "dense"
ALPHAPRUNING = "AlphaPruning (Lu et al., NeurIPS 2024, arXiv 2410.10912)"
ACTTAIL = "ActTail (Hou, Song, Liu, arXiv 2603.12272)"
TEAL = "TEAL (Liu et al., ICLR 2025, arXiv 2408.14690)"


@dataclass(frozen=True)
class PaperFigure:
    """One paper figure redrawn from our data.

    ``figure``: the paper's figure number when it was checked against the paper's caption, else None
    (then ``corresponds`` names the figure by what it shows). ``differs``: how our version differs
    (model, alphas, corpus, what is left out).
    """

    builder: Callable[[Path], Figure]
    paper: str
    figure: int | None
    corresponds: str
    differs: str
    notebook: str

    @property
    def reference(self) -> str:
        """``"<paper> Fig. N (<what>)"`` or ``"<paper>, <what> (figure number not checked)"``."""
        if self.figure is None:
            return f"{self.paper}, {self.corresponds} (figure number not checked)"
        return f"{self.paper} Fig. {self.figure} ({self.corresponds})"

    @property
    def caption(self) -> str:
        """One line for the gallery: what it corresponds to and how it differs."""
        return f"laid out as {self.reference}; differs: {self.differs}"


def _wrap(text: str, width: int = 100) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))


def _bars(ax, x: np.ndarray, groups: dict[str, np.ndarray], hatch_prefix: str = "TEAL") -> None:
    """Grouped bars: one series per ``groups`` key (label -> heights at ``x``), coloured by ``series_color``."""
    width = 0.8 / max(1, len(groups))
    for i, (label, heights) in enumerate(groups.items()):
        ax.bar(x - 0.4 + width * (i + 0.5), heights, width=width, color=series_color(label), label=label,
               hatch="//" if label.startswith(hatch_prefix) else None, edgecolor="white", linewidth=0.5)


# --------------------------------------------------------------------------- AlphaPruning Fig. 1
def alphapruning_pipeline_figure(results_dir: Path) -> Figure:
    """AlphaPruning's pipeline, stages (ii)-(iii), on LLaMA-2-7B's published alphas.

    Left: the layer-wise metric, the plain mean of the 7 published alphas of each layer (AlphaPruning's
    block mode). Right: the layer-wise sparsity that the linear assignment (``acttail-block``: eps 0.3,
    higher alpha -> sparser) gives at ``ALPHAPRUNING_TARGET``, parameter-weighted per layer, and the
    uniform level. ``results_dir`` is not read (published data only).
    """
    table = published_alphas(LLAMA2_MODELS[ALPHAPRUNING_MODEL])
    metric = table.groupby("layer", sort=True)["alpha"].mean()
    layers = summary(allocate(table, "acttail-block", ALPHAPRUNING_TARGET), by="layer").sort_values("layer")
    color = series_color(ALPHAPRUNING_MODEL)
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax_metric, ax_ratio = fig.subplots(1, 2)
    ax_metric.bar(metric.index, metric.to_numpy(float), color=color, label="layer mean of alpha")
    ax_metric.set(xlabel="layer", ylabel="PL_Alpha_Hill (published, xmin_peak)",
                  title="(ii) layer-wise metric: mean alpha of 7 matrices")
    ax_ratio.bar(layers["layer"], layers["sparsity"].to_numpy(float), color=color, label="linear assignment")
    ax_ratio.axhline(ALPHAPRUNING_TARGET, color="black", ls="--", lw=1, label=f"uniform {ALPHAPRUNING_TARGET:.0%}")
    ax_ratio.set(xlabel="layer", ylabel="sparsity of the layer", ylim=(0, 1),
                 title=f"(iii) layer-wise sparsity at {ALPHAPRUNING_TARGET:.0%} (linear, eps 0.3)")
    for ax in (ax_metric, ax_ratio):
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    low, high = layers.loc[layers["sparsity"].idxmin()], layers.loc[layers["sparsity"].idxmax()]
    fig.suptitle(_wrap(
        f"Laid out as AlphaPruning Fig. 1 (its pipeline, stages ii-iii) on the published {ALPHAPRUNING_MODEL} "
        f"alphas: layer sparsity runs from {low['sparsity']:.2f} (layer {int(low['layer'])}) to "
        f"{high['sparsity']:.2f} (layer {int(high['layer'])}); stage (i), each ESD with its fit, needs "
        "eigenvalues that are not committed"), fontsize="medium")
    return fig


# --------------------------------------------------------------------------- ActTail per-kind budgets
def acttail_kind_table(target: float = ACTTAIL_TARGET) -> pd.DataFrame:
    """Per-kind rows of ActTail's rule (preset ``acttail``) on each LLaMA-2 model's published alphas.

    Columns: model, projection, sparsity (parameter-weighted mean over layers), sparsity_min,
    sparsity_max (over layers), n_params, alpha_mean (plain mean of the published alphas), target.
    """
    frames = [summary(allocate(published_alphas(key), "acttail", target, label=name)).assign(model=name)
              for name, key in LLAMA2_MODELS.items()]
    return pd.concat(frames, ignore_index=True)


def acttail_kind_budgets_figure(results_dir: Path) -> Figure:
    """Grouped bars per projection kind, one series per LLaMA-2 model: the mean published alpha (left)
    and ActTail's budget at ``ACTTAIL_TARGET`` (right, with the range over layers as markers)."""
    budgets = acttail_kind_table()
    kinds = [k for k in PROJECTIONS if k in set(budgets["projection"])]
    x = np.arange(len(kinds))
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    ax_alpha, ax_budget = fig.subplots(1, 2)
    by_model = {m: rows.set_index("projection").reindex(kinds) for m, rows in budgets.groupby("model", sort=False)}
    _bars(ax_alpha, x, {m: rows["alpha_mean"].to_numpy(float) for m, rows in by_model.items()})
    _bars(ax_budget, x, {m: rows["sparsity"].to_numpy(float) for m, rows in by_model.items()})
    width = 0.8 / len(by_model)
    for i, (model, rows) in enumerate(by_model.items()):
        at = x - 0.4 + width * (i + 0.5)
        for column in ("sparsity_min", "sparsity_max"):
            ax_budget.plot(at, rows[column].to_numpy(float), ls="none", marker="_", ms=9, color="black",
                           label="range over layers" if (i, column) == (0, "sparsity_min") else "_nolegend_")
    ax_budget.axhline(ACTTAIL_TARGET, color="black", ls="--", lw=1, label=f"uniform {ACTTAIL_TARGET:.0%}")
    ax_alpha.set(ylabel="mean published alpha (xmin_peak)", title="input: alpha per projection kind")
    ax_budget.set(ylabel="sparsity (weighted mean over layers)", ylim=(0, 1),
                  title=f"ActTail's budget per kind at {ACTTAIL_TARGET:.0%} (eps 0.3, per projection)")
    for ax in (ax_alpha, ax_budget):
        ax.set_xticks(x, kinds)
        ax.set_xlabel("projection kind")
        ax.grid(True, axis="y", alpha=0.3)
    ax_alpha.legend(fontsize="small", loc="upper left")
    ax_budget.legend(fontsize="small", loc="lower right", ncol=2)
    most = {m: rows["sparsity"].idxmax() for m, rows in by_model.items()}
    least = {m: rows["sparsity"].idxmin() for m, rows in by_model.items()}
    fig.suptitle(_wrap(
        f"Laid out as ActTail's per-projection budgets (figure number not checked), from AlphaPruning's published "
        f"LLaMA-2 alphas: at {ACTTAIL_TARGET:.0%} the sparsest kind is "
        + ", ".join(f"{k} ({m.removeprefix('LLaMA-2-')})" for m, k in most.items())
        + "; the densest is " + ", ".join(f"{k} ({m.removeprefix('LLaMA-2-')})" for m, k in least.items()), 120),
        fontsize="medium")
    return fig


# --------------------------------------------------------------------------- TEAL greedy allocation
def teal_greedy_allocation_figure(results_dir: Path) -> Figure:
    """TEAL's block-wise greedy allocation at 50%: our greedy path on the default model per layer and kind
    (left), and its per-kind means beside TEAL's shipped LLaMA-2-7B means (right, hatched)."""
    (ours,) = headline.committed_allocations(DEFAULT_MODEL, ["teal-greedy"], TEAL_TARGET, "ks", results_dir)
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    ax_layers, ax_kinds = fig.subplots(1, 2)
    for kind in PROJECTIONS:
        rows = ours[ours["projection"] == kind].sort_values("layer")
        ax_layers.plot(rows["layer"], rows["sparsity"], color=kind_color(kind), marker="o", ms=3, lw=1.2, label=kind)
    ax_layers.axhline(TEAL_TARGET, color="black", ls="--", lw=1, label=f"target {TEAL_TARGET:.0%}")
    ax_layers.set(xlabel="layer", ylabel="sparsity", ylim=(0, 1),
                  title=f"our greedy path on {MODEL_LABEL} at {TEAL_TARGET:.0%}, per layer and kind")
    ax_layers.legend(fontsize="x-small", ncol=4, loc="upper left")
    mine = summary(ours).set_index("projection")["sparsity"].reindex(PROJECTIONS)
    teal = pd.Series(TEAL_LLAMA2_7B_50).reindex(PROJECTIONS)
    groups = {"TEAL greedy, LLaMA-2-7B (shipped)": teal.to_numpy(float),
              f"our greedy, {MODEL_LABEL}": mine.to_numpy(float)}
    x = np.arange(len(PROJECTIONS))
    _bars(ax_kinds, x, groups)
    ax_kinds.axhline(TEAL_TARGET, color="black", ls="--", lw=1, label=f"target {TEAL_TARGET:.0%}")
    ax_kinds.set_xticks(x, PROJECTIONS)
    ax_kinds.set(xlabel="projection kind", ylabel="mean sparsity over layers", ylim=(0, 1),
                 title="per-kind means: TEAL's shipped allocation vs ours")
    ax_kinds.legend(fontsize="small", loc="upper left")
    for ax in (ax_layers, ax_kinds):
        ax.grid(True, axis="y", alpha=0.3)
    rho = float(mine.corr(teal, method="spearman"))
    fig.suptitle(_wrap(
        f"Laid out as TEAL's greedy per-layer sparsities (figure number not checked): at {TEAL_TARGET:.0%} "
        f"TEAL's shipped LLaMA-2-7B allocation gives {teal.idxmin()} the least sparsity, our greedy search on "
        f"{MODEL_LABEL} gives {mine.idxmin()} the least; the two rank the 7 kinds with Spearman rho {rho:+.2f}"),
        fontsize="medium")
    return fig


# --------------------------------------------------------------------------- TEAL Fig. 4 layout
def perplexity_lines(runs: pd.DataFrame) -> dict[str, tuple[list[float], list[float]]]:
    """label -> (sparsities, perplexities) of every non-dense strategy in ``runs`` except variants whose label
    adds options in brackets (``acttail-block[xmin=ks]``; one line per named strategy), each line starting at
    the dense model (sparsity 0) when ``runs`` has a dense row; ``uniform`` first, then table order."""
    runs = headline.plain_labels(runs)
    runs = runs.assign(label=run_labels(runs))
    dense = runs.loc[runs["strategy"] == DENSE, "perplexity"]
    start = ([0.0], [float(dense.iloc[0])]) if len(dense) else ([], [])
    body = runs[(runs["strategy"] != DENSE) & ~runs["label"].str.contains("[", regex=False)]
    order = sorted(dict.fromkeys(body["label"]), key=lambda label: label != UNIFORM)
    lines = {}
    for label in order:
        rows = body[body["label"] == label].sort_values("sparsity")
        lines[label] = (start[0] + rows["sparsity"].astype(float).tolist(),
                        start[1] + rows["perplexity"].astype(float).tolist())
    return lines


def teal_perplexity_figure(results_dir: Path) -> Figure:
    """Perplexity against sparsity, one line per allocation strategy from the dense model at 0% (TEAL's
    layout), log scale, cut at the collapse level (``report.headline.collapse_threshold``)."""
    runs = load_perplexity(DEFAULT_MODEL, results_dir)
    lines = perplexity_lines(runs)
    top = headline.collapse_threshold(runs)
    fig = Figure(figsize=(9.0, 5.4), layout="constrained")
    ax = fig.subplots()
    for label, (x, y) in lines.items():
        ax.plot(x, y, label=label, lw=2.4 if label == UNIFORM else 1.2, ms=4 if label != UNIFORM else 6,
                **strategy_style(label))
    dense = runs.loc[runs["strategy"] == DENSE, "perplexity"]
    if len(dense):
        ax.plot([0.0], [float(dense.iloc[0])], ls="none", marker="*", ms=12, color="black",
                label=f"dense {float(dense.iloc[0]):.1f}")
    ax.set_yscale("log")
    ax.set_ylim(top=top)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel="sparsity (model-wide target)", ylabel="perplexity (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    legend_beside(ax, "x-small")
    body = runs[runs["strategy"] != DENSE]
    highest = float(body["sparsity"].max())
    at = {label: y[x.index(highest)] for label, (x, y) in lines.items() if highest in x}
    best = min(at, key=at.get)
    versus = (f"; uniform {at[UNIFORM]:.1f}, {best} {100 * (at[best] / at[UNIFORM] - 1):+.1f}%"
              if UNIFORM in at and best != UNIFORM else "")
    above = int((body["perplexity"] >= top).sum())
    corpus = str(runs["corpus"].iloc[0]) if "corpus" in runs.columns else "?"
    ax.set_title(_wrap(
        f"Laid out as TEAL Fig. 4 (perplexity vs. sparsity, there Llama-2-7B at several weight bit-widths): "
        f"{MODEL_LABEL} on the {corpus} corpus, one line per allocation strategy; at {highest:.0%} the lowest is "
        f"{best} ({at[best]:.1f}){versus}; {above} run(s) above {top:,.0f} (collapsed) are off the top", 90),
        fontsize="medium")
    return fig


PAPER_FIGURES: dict[str, PaperFigure] = {
    "paper_alphapruning_pipeline": PaperFigure(
        alphapruning_pipeline_figure, ALPHAPRUNING, 1,
        "the pipeline: ESD analysis, power-law fits -> layer-wise metric, linear assignment -> layer-wise ratios",
        "the paper draws the pipeline as a schematic; here stages (ii) and (iii) are LLaMA-2-7B's published "
        "alphas and the sparsities this package's linear assignment gives them at 70% (read as activation "
        "sparsity, as ActTail does); stage (i), an ESD with its fit, is left out (eigenvalues not committed)",
        "03_alpha_to_sparsity_explorer"),
    "paper_acttail_kind_budgets": PaperFigure(
        acttail_kind_budgets_figure, ACTTAIL, None,
        "per-projection sparsity budgets from alpha for LLaMA-2-7B/13B/70B",
        "ActTail's own alphas are not public: these are AlphaPruning's published alpha_peak values through "
        "this package's reading of ActTail's rule (eps 0.3, per projection, clipped at s_max), at 80%",
        "02_perplexity_by_allocation"),
    "paper_teal_greedy_allocation": PaperFigure(
        teal_greedy_allocation_figure, TEAL, None,
        "the sparsities its block-wise greedy search gives each layer and projection at 50%",
        "the per-layer lines are our greedy path on SmolLM2-135M (calibrated on Austen text), not TEAL's "
        "LLaMA runs; TEAL's shipped LLaMA-2-7B allocation enters only as its per-kind means",
        "02_perplexity_by_allocation"),
    "paper_teal_perplexity": PaperFigure(
        teal_perplexity_figure, TEAL, 4,
        "perplexity vs. sparsity for Llama-2-7B quantized to various bitwidths",
        "our lines are allocation strategies (all TopK), not weight bit-widths; SmolLM2-135M on Austen text "
        "instead of Llama-2-7B; log scale, and collapsed runs are cut off at a quarter of the vocabulary",
        "02_perplexity_by_allocation"),
}
"""name -> PaperFigure; registered in ``plots.figures.FIGURES`` (``make figures`` writes them)."""

__all__ = [
    "PAPER_FIGURES",
    "PaperFigure",
    "acttail_kind_budgets_figure",
    "acttail_kind_table",
    "alphapruning_pipeline_figure",
    "perplexity_lines",
    "teal_greedy_allocation_figure",
    "teal_perplexity_figure",
]
