"""The headline result in words: which strategy wins at each target, which runs collapsed, and how
the measured change against uniform compares with the paper's claimed numbers.

Inputs: a runs table of one setting (``results.load_perplexity``: one row per strategy x target,
plus a dense row). Outputs: small tidy tables and plain sentences (no figures, no model).

A run has *collapsed* when its perplexity reaches a quarter of the vocabulary size: a model
that spreads its probability evenly over the vocabulary scores exactly the vocabulary size, so
such a run has lost nearly all of what it predicted (SmolLM2-135M: vocabulary 49152, threshold 12288).
"""
from __future__ import annotations

import math

import pandas as pd

from ..core.errors import ActTailError
from ..core.paths import RESULTS_DIR, result_path
from .results import DENSE, UNIFORM, best_per_sparsity, check_one_setting, headline_table, relative_to_uniform, run_labels

VOCAB_SIZES = {"smollm2-135m": 49152, "gemma3-270m": 262144, "qwen2.5-coder-1.5b": 151936, "llama2-7b": 32000,
               "llama2-13b": 32000, "mistral-7b": 32000}
"""Vocabulary size of the models with committed runs (from their configs)."""
COLLAPSE_FRACTION = 0.25
"""A run whose perplexity is at least this fraction of the vocabulary size counts as collapsed."""

PAPER_CLAIMS = pd.DataFrame([
    dict(model="LLaMA-2-7B", sparsity=0.8, change_pct=-21.8),
    dict(model="LLaMA-2-13B", sparsity=0.8, change_pct=-40.1),
    dict(model="Mistral-7B", sparsity=0.8, change_pct=-9.4),
])
"""ActTail's claimed perplexity change against uniform at 80% sparsity (its abstract; docs/method.md)."""


def plain_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without its ``xmin_rule`` column when every strategy was run under one rule only
    (then ``results.run_labels`` gives plain strategy names, e.g. ``acttail`` and ``acttail-ks``
    rather than ``acttail (xmin=ks)``); otherwise ``runs`` unchanged."""
    if "xmin_rule" in runs.columns and runs.groupby("strategy")["xmin_rule"].nunique().max() <= 1:
        return runs.drop(columns="xmin_rule")
    return runs


def collapse_threshold(runs: pd.DataFrame, vocab_size: int | None = None) -> float:
    """Perplexity at and above which a run counts as collapsed: ``COLLAPSE_FRACTION`` x vocabulary size.

    ``vocab_size`` defaults to ``VOCAB_SIZES[model]`` for the table's model; an unknown model
    without ``vocab_size`` raises ActTailError naming the fix.
    """
    if vocab_size is None:
        model = str(runs["model"].iloc[0]) if "model" in runs.columns and len(runs) else "?"
        if model not in VOCAB_SIZES:
            raise ActTailError(f"Vocabulary size of model {model!r} is not known. Fix: pass vocab_size=... "
                               f"(known: {sorted(VOCAB_SIZES)}).")
        vocab_size = VOCAB_SIZES[model]
    return COLLAPSE_FRACTION * float(vocab_size)


def collapsed(runs: pd.DataFrame, vocab_size: int | None = None) -> pd.Series:
    """Boolean per row: perplexity >= :func:`collapse_threshold` (dense rows never)."""
    limit = collapse_threshold(runs, vocab_size)
    return (runs["perplexity"] >= limit) & (runs["strategy"] != DENSE)


def first_collapse(runs: pd.DataFrame, vocab_size: int | None = None) -> pd.Series:
    """Label -> the lowest target at which that run collapsed (:func:`collapsed`), earliest first; an empty
    Series when nothing collapsed. Labels are computed on the whole table before selecting: assigning a
    Series to an empty selection would give it the Series' index and rows of NaN."""
    labelled = runs.assign(label=run_labels(runs))
    gone = labelled.loc[collapsed(labelled, vocab_size)]
    return gone.groupby("label")["sparsity"].min().sort_values()


def change_matrix(runs: pd.DataFrame, strategies=None) -> pd.DataFrame:
    """Strategy (rows, in the order given or of the table) x target (columns) of
    ``change_pct`` = 100 (ppl / ppl_uniform - 1); uniform itself is left out."""
    runs = plain_labels(runs)
    table = headline_table(relative_to_uniform(runs), value="change_pct", include_dense=False)
    if strategies is not None:
        missing = [s for s in strategies if s not in table.index]
        if missing:
            raise ActTailError(f"No runs of {missing} in this table (it has {list(table.index)}). "
                               "Fix: pick strategies from results.labels(runs).")
        table = table.loc[list(strategies)]
    return table


def reached(runs: pd.DataFrame, tolerance: float = 0.02) -> pd.DataFrame:
    """The rows whose realised sparsity is within ``tolerance`` of their target (dense kept): methods
    that cover only some projections (FFN-only, CATS) skip fewer weights than their target says."""
    if "realised_sparsity" not in runs.columns:
        return runs
    ok = (runs["realised_sparsity"] - runs["sparsity"]).abs() <= tolerance
    return runs[ok | (runs["strategy"] == DENSE)]


def winners(runs: pd.DataFrame, reached_only: bool = False, method: str | None = "topk") -> pd.DataFrame:
    """The lowest-perplexity run at each target (uniform included, dense left out): one row per
    target with columns sparsity, best, perplexity, uniform_perplexity, change_pct. With
    ``reached_only``, only runs that reach their target (:func:`reached`) compete. Only allocations applied
    with ``method`` compete when the table has a ``method`` column (default TopK: the allocation question;
    rotation and thresholds are compared in notebook 05); None: every run."""
    runs = plain_labels(runs)
    check_one_setting(runs, "winners")
    if method is not None and "method" in runs.columns:
        runs = runs[(runs["method"] == method) | (runs["strategy"] == DENSE) | runs["method"].isna()]
    rel = relative_to_uniform(reached(runs) if reached_only else runs, include_uniform=True)
    best = rel.loc[rel.groupby("sparsity", sort=True)["perplexity"].idxmin()]
    return best.rename(columns={"label": "best"})[
        ["sparsity", "best", "perplexity", "uniform_perplexity", "change_pct"]].reset_index(drop=True)


def _span(values: list, order: list) -> str:
    """"0.2-0.8" when ``values`` are three or more consecutive entries of ``order``, else "0.5, 0.6"."""
    first = order.index(values[0])
    if len(values) > 2 and order[first:first + len(values)] == values:
        return f"{values[0]:g}-{values[-1]:g}"
    return ", ".join(f"{v:g}" for v in values)


def finding_title(runs: pd.DataFrame, vocab_size: int | None = None, focus: str = "acttail",
                  reached_only: bool = False) -> str:
    """One line for a figure title: the winner at each target, and from where ``focus`` collapses
    (or which strategy does, or how many), e.g. "lowest perplexity: teal-kind (0.5, 0.6), surrogate-optimal
    (0.8); acttail collapses from 0.7"). ``reached_only``: see :func:`winners`."""
    runs = plain_labels(runs)
    win = winners(runs, reached_only)
    order = list(win["sparsity"])
    groups = win.groupby("best", sort=False)["sparsity"].apply(lambda s: _span(list(s), order))
    text = "lowest perplexity: " + ", ".join(f"{label} ({at})" for label, at in groups.items())
    first = first_collapse(runs, vocab_size)
    if focus in first.index:
        text += f"; {focus} collapses from {first[focus]:g}"
    elif len(first) == 1:
        text += f"; {first.index[0]} collapses from {first.iloc[0]:g}"
    elif len(first):
        text += f"; {len(first)} strategies collapse ({first.index[0]} first, from {first.iloc[0]:g})"
    return text


def claims_table(runs: pd.DataFrame, model_label: str, strategies=("acttail", "acttail-block", "teal-greedy"),
                 sparsity: float = 0.8) -> pd.DataFrame:
    """Measured change against uniform at ``sparsity`` beside the paper's claims: one row per
    (model, strategy); ``source`` says "measured" or "ActTail abstract". The best ActTail variant
    (an oracle pick on the evaluation text) is added as its own row."""
    runs = plain_labels(runs)
    rel = relative_to_uniform(runs)
    at = rel[(rel["sparsity"] - sparsity).abs() < 1e-9]
    rows = [dict(model=model_label, strategy=s, sparsity=sparsity, change_pct=float(at.loc[at["label"] == s,
             "change_pct"].iloc[0]), source="measured") for s in strategies if (at["label"] == s).any()]
    best = best_per_sparsity(runs)
    best = best[(best["sparsity"] - sparsity).abs() < 1e-9]
    if len(best):
        rows.append(dict(model=model_label, strategy=f"best ActTail variant ({best['best'].iloc[0]}, oracle)",
                         sparsity=sparsity, change_pct=float(best["change_pct"].iloc[0]), source="measured"))
    claims = PAPER_CLAIMS.assign(strategy="acttail", source="ActTail abstract")
    return pd.concat([pd.DataFrame(rows), claims], ignore_index=True)[
        ["model", "strategy", "sparsity", "change_pct", "source"]]


def _pct(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.1f}%" if abs(value) < 1000 else f"x{1 + value / 100:.0f}"


def headline_sentences(runs: pd.DataFrame, model_label: str, vocab_size: int | None = None,
                       sparsity: float = 0.8) -> list[str]:
    """Plain sentences stating the result: the winner at each target, the collapses, and ActTail's
    change against uniform at ``sparsity`` next to the paper's claims."""
    runs = plain_labels(runs)
    check_one_setting(runs, "headline_sentences")
    win = winners(runs)
    out = ["Lowest perplexity per target: " + "; ".join(
        f"{r.sparsity:g}: {r.best} ({r.perplexity:.1f}, {_pct(r.change_pct)} vs uniform)" for r in win.itertuples())
        + "."]
    limit = collapse_threshold(runs, vocab_size)
    first = first_collapse(runs, vocab_size)
    if len(first):
        out.append(f"Collapsed (perplexity >= {limit:.0f}, a quarter of the vocabulary): "
                   + ", ".join(f"{label} from {s:g}" for label, s in first.items()) + ".")
    claims = claims_table(runs, model_label, sparsity=sparsity)
    ours = claims[claims["source"] == "measured"]
    paper = claims[claims["source"] != "measured"]
    mine = ", ".join(f"{r.strategy} {_pct(r.change_pct)}" for r in ours.itertuples())
    theirs = ", ".join(f"{r.model} {_pct(r.change_pct)}" for r in paper.itertuples())
    out.append(f"At {sparsity:.0%} sparsity on {model_label}, against uniform: {mine}. "
               f"The paper claims for acttail: {theirs}.")
    uniform = runs[(runs["strategy"] == UNIFORM)]
    if len(uniform) and (uniform["perplexity"] >= limit).any():
        out.append("Uniform itself collapses there, so a percentage against it says little.")
    return out


# --------------------------------------------------------------------------- titles of the other figures
def change_title(change: pd.DataFrame, model_label: str) -> str:
    """Title of the strategy x target change heat map: how many runs beat uniform."""
    better = int((change < 0).to_numpy().sum())
    total = int(change.notna().to_numpy().sum())
    return f"{model_label}: {better} of {total} runs beat uniform (blue); red = worse"


def committed_allocations(model: str, strategies, target: float, rule: str = "ks",
                          results_dir=None) -> list[pd.DataFrame]:
    """Allocations of ``strategies`` at ``target`` from the committed tables only: the spectra of
    ``rule`` (alphas; a strategy that names its own rule, e.g. ``acttail-ks``, reads that rule's spectra), the
    cost table (``surrogate-optimal``, ``hybrid``) and TEAL's greedy path (``teal-greedy``). A table that is not
    committed is only an error for a strategy that reads it."""
    from ..allocation import allocate
    from ..allocation.options import XMIN_OPTION
    from ..allocation.presets import make_spec
    from .explorer_sources import load_spectra

    spectra = {}

    def alphas(rule_of_spec: str) -> pd.DataFrame:
        if rule_of_spec not in spectra:
            spectra[rule_of_spec] = load_spectra(model, rule_of_spec, results_dir or RESULTS_DIR, compute=False)
        return spectra[rule_of_spec]

    inputs = {}
    for key, table in (("cost", "cost_table"), ("greedy_path", "teal_greedy_path")):
        path = result_path(table, model, results_dir)
        if path.exists():
            inputs[key] = pd.read_csv(path)
    specs = [make_spec(s) for s in strategies]
    return [allocate(alphas(spec.resolved.get(XMIN_OPTION) or rule), spec, target, **inputs) for spec in specs]


def spread_title(allocations, model_label: str) -> str:
    """Title of the sparsity maps: the range of per-projection budgets of each allocation."""
    target = float(allocations[0]["target"].iloc[0])
    text = ", ".join(f"{a['label'].iloc[0]} {a['sparsity'].min():.2f}-{a['sparsity'].max():.2f}" for a in allocations)
    return f"Budgets at target {target:g} on {model_label}, white = uniform's (range per projection: {text})"


def kind_rank_title(budgets: pd.DataFrame, model: str = "ActTail LLaMA-2-7B") -> str:
    """Title of the per-kind budget bars: how alike ActTail's and TEAL's per-kind budgets rank the kinds."""
    means = budgets.pivot_table(index="projection", columns="label", values="sparsity", sort=False)
    teal = [c for c in means.columns if str(c).startswith("TEAL")]
    if not teal or model not in means.columns:
        return "Mean sparsity per projection kind"
    rho = float(means[model].corr(means[teal[0]], method="spearman"))
    target = float(budgets["target"].iloc[0]) if "target" in budgets.columns else float("nan")
    return (f"LLaMA-2-7B at {target:.0%}: ActTail's rule (published alphas) and TEAL's greedy search rank the "
            f"{len(means)} kinds with Spearman rho {rho:+.2f}")
