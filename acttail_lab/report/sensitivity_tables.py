"""Notebook 07's tables and printed lines: loading the committed results and reshaping them for display.

The analysis proper (allocations, proxy agreement, baselines, estimated costs,
conclusion sentences) is in :mod:`acttail_lab.report.sensitivity`; this module
holds the DataFrame wrangling around it, so the notebook only calls and shows:

- :func:`load_results` and :func:`provenance_lines`: the committed tables;
- :func:`live_cost_table` and :func:`live_agreement`: the live re-measurement
  against the committed cost table;
- :func:`measured_summaries`, :func:`kind_means`, :func:`loss_noise`: the
  per-projection and per-kind sensitivity tables;
- :func:`significance_counts`, :func:`per_kind_rho`: reading the correlation table;
- :func:`kind_sparsity_table`, :func:`kind_budget_line`: allocations per kind;
- :func:`perplexity_by_strategy`, :func:`change_vs_uniform`: measured perplexity;
- :func:`cost_shift`, :func:`cost_shift_lines`, :func:`perplexity_lines`: the
  closing lines of the conclusion.

Units: sparsities and targets are fractions in [0, 1]; ``rel_error`` is a
relative Frobenius error (0 = exact, 1 = everything dropped); ``loss_increase``
is in nats per token; perplexity changes are in percent.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from scipy.stats import spearmanr

from ..allocation import summary
from ..allocation.cost_solvers import CostCurves, kind_budgets
from ..core.corpus import DEFAULT_CORPUS
from ..core.errors import CorpusError
from ..core.models import PROJECTIONS
from ..core.reference import DATA_DIR
from ..core.results_io import load_table
from .correlations import correlation_overview, sensitivity_summary


class SensitivityResults(NamedTuple):
    """The committed tables of notebook 07 (each with ``attrs["provenance"]`` from its JSON sidecar)."""

    cost: pd.DataFrame  # sensitivity.cost_table: one row per (projection, level)
    loss: pd.DataFrame  # sensitivity.loss_increase_table: a subset of projections
    corr: pd.DataFrame  # sensitivity.spectral_correlations
    spectra: dict[str, pd.DataFrame]  # {xmin rule: spectra.analyze table}


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """``path`` as a Path, or ``<repo>/data/results`` when None."""
    return Path(path) if path else DATA_DIR / "results"


def load_results(model: str, rules: Iterable[str], path: str | os.PathLike | None = None) -> SensitivityResults:
    """Load ``{model}_cost_table.csv``, ``_loss_increase.csv``, ``_correlations.csv`` and one
    ``_spectra_{rule}.csv`` per xmin rule from :func:`results_dir` (``path``)."""
    folder = results_dir(path)
    return SensitivityResults(
        cost=load_table(folder / f"{model}_cost_table.csv"), loss=load_table(folder / f"{model}_loss_increase.csv"),
        corr=load_table(folder / f"{model}_correlations.csv"),
        spectra={rule: load_table(folder / f"{model}_spectra_{rule}.csv") for rule in rules})


def provenance_lines(cost: pd.DataFrame, loss: pd.DataFrame) -> list[str]:
    """Two lines describing how the cost and loss tables were made (sizes, tokens, split, commit, dense NLL),
    read from the tables and their ``attrs["provenance"]`` (timestamp, git_sha, settings)."""
    cost_info, loss_info = cost.attrs["provenance"], loss.attrs["provenance"]
    settings = cost_info["settings"]
    first = (f"cost table: {cost.name.nunique()} projections x {cost.sparsity.nunique()} levels, "
             f"{int(cost.n_tokens.iloc[0])} {settings['split']} tokens ({settings['corpus']}), "
             f"made {cost_info['timestamp']} at commit {str(cost_info['git_sha'])[:8]}")
    settings = loss_info["settings"]
    second = (f"loss increase: {loss.name.nunique()} projections ({settings['subset']}) x levels "
              f"{settings['sparsities']}, {int(loss.n_tokens.iloc[0])} {settings['split']} tokens in windows of "
              f"{settings['window']}; dense calibration NLL {loss.dense_loss.iloc[0]:.4f} nats")
    return [first, second]


def live_cost_table(lm, window: int, n_tokens: int, levels: Iterable[float] | None = None,
                    cache: bool = True, skip_tokens: int = 0, progress: bool = True) -> pd.DataFrame:
    """Re-measure ``sensitivity.cost_table`` on the calibration split: ``n_tokens`` tokens in windows of
    ``window``, starting after the first ``skip_tokens`` tokens (pass the committed table's token count,
    :func:`committed_tokens`, so the check runs on tokens the committed table never saw), at ``levels``
    (None: ``sensitivity.DEFAULT_SPARSITIES``); a tqdm bar when ``progress``."""
    from ..core.corpus import corpus_text, token_windows
    from ..measure import sensitivity

    skip = -(-int(skip_tokens) // window) * window  # whole windows, at least skip_tokens
    text = corpus_text(DEFAULT_CORPUS, split="calibration")
    windows = token_windows(lm.tokenizer, text, window=window, n_tokens=skip + n_tokens)[skip // window:]
    if len(windows) == 0:
        raise CorpusError(f"The calibration text has no {n_tokens} tokens after the first {skip}. "
                          "Fix: pass fewer tokens or a smaller skip_tokens.")
    return sensitivity.cost_table(lm, windows, sparsities=tuple(levels) if levels else sensitivity.DEFAULT_SPARSITIES,
                                  max_tokens=n_tokens, cache=cache, progress=progress)


def committed_tokens(cost: pd.DataFrame) -> int:
    """Calibration tokens behind a committed cost table (its ``n_tokens`` column), i.e. the first tokens
    of the calibration split; a live re-run that skips them measures on fresh text."""
    return int(cost["n_tokens"].max())


def live_agreement(live: pd.DataFrame, committed: pd.DataFrame, value: str = "rel_error") -> pd.DataFrame:
    """Per sparsity level present in both cost tables: tokens_live, spearman_rho (live vs committed
    ``value`` over the projections), median_ratio (live / committed) and max_abs_diff."""
    both = live.merge(committed, on=["name", "sparsity"], suffixes=("_live", "_committed"))
    a, b = f"{value}_live", f"{value}_committed"
    return pd.DataFrame([
        dict(sparsity=s, tokens_live=int(part.n_tokens_live.iloc[0]),
             spearman_rho=spearmanr(part[a], part[b]).statistic, median_ratio=(part[a] / part[b]).median(),
             max_abs_diff=(part[a] - part[b]).abs().max())
        for s, part in both.groupby("sparsity")])


def measured_summaries(cost: pd.DataFrame, loss: pd.DataFrame,
                       levels: Iterable[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(measured, loss_summary)``: ``sensitivity_summary`` of the cost table for rel_error merged with the one
    for rel_error_token (one row per projection), and the summary of the loss table (loss_increase, nats)."""
    levels = tuple(levels)
    token = sensitivity_summary(cost, at=levels, value="rel_error_token")
    measured = sensitivity_summary(cost, at=levels).merge(
        token.drop(columns=["layer", "projection", "n_params"]), on="name")
    return measured, sensitivity_summary(loss, at=levels, value="loss_increase")


def kind_means(measured: pd.DataFrame, loss_summary: pd.DataFrame, alphas: pd.DataFrame,
               levels: Iterable[float]) -> pd.DataFrame:
    """Mean per projection kind (rows in order of appearance) of alpha, stable_rank, ``rel_error@{s}``,
    ``rel_error_token@{s}`` and ``loss_increase@{s}`` (the loss mean over the measured subset only)."""
    levels = tuple(levels)
    loss_cols = [f"loss_increase@{s:g}" for s in levels]
    columns = (["alpha", "stable_rank"] + [f"rel_error@{s:g}" for s in levels]
               + [f"rel_error_token@{s:g}" for s in levels] + loss_cols)
    merged = (measured.merge(alphas[["name", "alpha", "stable_rank"]], on="name")
              .merge(loss_summary[["name"] + loss_cols], on="name", how="left"))
    return merged.groupby("projection", sort=False)[columns].mean()


def loss_noise(loss: pd.DataFrame) -> pd.DataFrame:
    """Per sparsity: median loss increase (nats) and share_negative (fraction of projections below 0: noise)."""
    return loss.groupby("sparsity").loss_increase.agg(median="median", share_negative=lambda v: (v < 0).mean())


def significance_counts(corr: pd.DataFrame, sensitivities: list[str], alpha_rule: str = "ks",
                        p: float = 0.05) -> pd.DataFrame:
    """Groups with a significant rho (p < ``p``) as ``"{neg} neg / {pos} pos of {n}"``, one row per (metric, rule,
    grouping other than "all"), one column per sensitivity; alpha under every rule, other metrics under
    ``alpha_rule`` only."""
    overview = correlation_overview(corr, alpha=p)
    keep = overview.sensitivity.isin(sensitivities) & ((overview.metric == "alpha") | (overview.rule == alpha_rule))
    counts = overview[keep & (overview.group_by != "all")]
    counts = counts.assign(significant=counts.n_sig_negative.astype(str) + " neg / "
                           + counts.n_sig_positive.astype(str) + " pos of " + counts.n_groups.astype(str))
    return counts.pivot_table(index=["metric", "rule", "group_by"], columns="sensitivity", values="significant",
                              aggfunc="first", sort=False)[list(sensitivities)]


def per_kind_rho(corr: pd.DataFrame, sensitivity: str,
                 metrics: Iterable[str] = ("alpha", "stable_rank")) -> pd.DataFrame:
    """rho within each kind (across layers) for ``sensitivity``: rows (metric, rule), columns the kinds
    in ``PROJECTIONS`` order."""
    rows = corr[(corr.group_by == "projection") & (corr.sensitivity == sensitivity) & corr.metric.isin(list(metrics))]
    table = rows.pivot_table(index=["metric", "rule"], columns="group", values="rho", sort=False)
    return table[[k for k in PROJECTIONS if k in table.columns]]


def kind_sparsity_table(allocations: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Parameter-weighted mean sparsity per kind: one row per allocation label, columns the kinds."""
    kinds = pd.concat([summary(a, "projection").assign(label=label) for label, a in allocations.items()])
    table = kinds.pivot_table(index="label", columns="projection", values="sparsity", sort=False)
    return table[[k for k in PROJECTIONS if k in table.columns]]


def kind_budget_line(cost: pd.DataFrame, target: float) -> str:
    """``hybrid``'s kind budgets (ratio of each kind's optimal mean sparsity to ``target``) as one line."""
    return ("hybrid's kind budgets (ratio to the target, fitted on the calibration cost table): "
            + ", ".join(f"{k} {v:.3f}" for k, v in kind_budgets(cost, target).items()))


def perplexity_by_strategy(model: str, path: str | os.PathLike | None = None) -> tuple[pd.DataFrame | None, str]:
    """``(table, note)`` from ``perplexity_{model}.csv`` in :func:`results_dir`: perplexity per strategy (rows)
    and target sparsity (columns) under protocol "all" (else the first protocol), and a line describing the
    setting; ``(None, how to regenerate it)`` when the file is missing."""
    ppl_path = results_dir(path) / f"perplexity_{model}.csv"
    if not ppl_path.exists():
        return None, (f"{ppl_path} is missing. Regenerate it (an hour or more on one CPU thread; rows are cached) "
                      "with\n  python scripts/reproduce_perplexity.py\nor, for the strategies compared here only,\n"
                      "  acttail-lab evaluate --strategies uniform,acttail,acttail-block,acttail-rev,shuffled,"
                      f"teal-kind,surrogate-optimal,hybrid --sparsities 0.5,0.6,0.7,0.8 --tokens 16384 --out {ppl_path}")
    ppl = pd.read_csv(ppl_path)
    protocol = "all" if "all" in set(ppl.protocol) else ppl.protocol.iloc[0]
    ppl = ppl[ppl.protocol == protocol]
    dense, runs = ppl[ppl.strategy == "dense"], ppl[ppl.strategy != "dense"]
    note = (f"protocol {protocol!r}, {int(runs.tokens.iloc[0])} scored tokens, split {runs.split.iloc[0]!r}, "
            f"window {int(runs.window.iloc[0])}; dense perplexity "
            + (f"{dense.perplexity.iloc[0]:.3f}" if len(dense) else "not measured"))
    return runs.pivot_table(index="strategy", columns="sparsity", values="perplexity", sort=False), note


def change_vs_uniform(ppl_table: pd.DataFrame | None) -> pd.DataFrame | None:
    """Perplexity change against the uniform row at the same target, in percent (negative = better);
    None when there is no table or no "uniform" row."""
    if ppl_table is None or "uniform" not in ppl_table.index:
        return None
    return (ppl_table / ppl_table.loc["uniform"] - 1) * 100


def cost_shift(allocation: pd.DataFrame, reference: pd.DataFrame, curve: CostCurves) -> pd.DataFrame:
    """Per projection (``curve.table`` plus ``delta``): the change of its share of the model-level estimated cost
    (its curve value times its parameter share) from ``reference`` to ``allocation``; deltas sum to the change
    of ``sensitivity.estimate_cost``."""
    change = curve.evaluate(curve.align(allocation)) - curve.evaluate(curve.align(reference))
    return curve.table.assign(delta=change * curve.n_params / curve.n_params.sum())


def cost_shift_lines(allocations: Mapping[str, pd.DataFrame], curve: CostCurves, target: float,
                     label: str = "acttail", reference: str = "uniform", n: int = 3) -> list[str]:
    """Where ``label`` moves the estimated cost relative to ``reference`` (:func:`cost_shift`): the total, per kind,
    and the ``n`` layers where it helps (delta < 0) and hurts (delta > 0) most."""
    delta = cost_shift(allocations[label], allocations[reference], curve)
    by_kind = delta.groupby("projection", sort=False)["delta"].sum()
    by_layer = delta.groupby("layer")["delta"].sum()
    helps, hurts = by_layer.nsmallest(n), by_layer.nlargest(n)
    return [f"{label} vs {reference} at {target:g}, change of the estimated cost: total {by_kind.sum():+.4f}",
            "  by kind:  " + ", ".join(f"{k} {v:+.4f}" for k, v in by_kind.items()),
            "  layers where it helps most: " + ", ".join(f"{l} ({v:+.4f})" for l, v in helps.items() if v < 0),
            "  layers where it hurts most: " + ", ".join(f"{l} ({v:+.4f})" for l, v in hurts.items() if v > 0)]


def perplexity_lines(change: pd.DataFrame | None, ppl_table: pd.DataFrame | None,
                     measured: pd.DataFrame | None = None) -> list[str]:
    """One line per strategy with its change vs uniform per target (%), with its 95% paired-bootstrap interval
    when ``measured`` (the verdict engine's ``report.verdicts.perplexity_verdicts``: label, sparsity, low, high,
    note) has the run (a collapsed run is named instead of given an interval); a single "not available" line
    when ``change`` is None. No "lowest perplexity" is named here: ``report.winners.lowest`` computes it over
    every row, with its lead's interval."""
    if change is None or ppl_table is None:
        return ["measured perplexity: not available (see section 7)"]
    known = ({} if measured is None else
             {(r.label, round(float(r.sparsity), 6)): r for r in measured.itertuples()})
    lines = []
    for label in change.index.drop("uniform"):
        parts = []
        for t, v in change.loc[label].items():
            if pd.notna(v):
                r = known.get((label, round(float(t), 6)))
                if r is not None and isinstance(r.note, str) and r.note:  # collapsed: no percentage
                    parts.append(f"{t:g}: {r.note.replace(f'{label} ', '', 1)}")
                    continue
                extra = f" [{r.low:+.1f}, {r.high:+.1f}]" if r is not None and pd.notna(r.low) else ""
                parts.append(f"{t:g}: {v:+.1f}%{extra}")
        lines.append(f"measured perplexity, {label} vs uniform: " + ", ".join(parts))
    return lines
