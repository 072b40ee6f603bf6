"""The explorer's cost estimates and their check against measured perplexity.

:class:`SlicePerplexity` measures the perplexity of the explorer's current allocation on a
small evaluation slice. :func:`strategy_costs` estimates each committed grid row's cost from
the calibration cost table (:func:`acttail_lab.allocation.cost_model.estimate_cost`), and
:func:`rank_agreement` / :func:`measured_rank_agreement` say how well that estimate ranks the
rows the way measured perplexity does (Spearman and Kendall per target).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from ..allocation import allocate, parse_strategy
from ..core.corpus import DEFAULT_CORPUS
from ..core.errors import AllocationError, ModelNotFoundError
from .explorer_sources import (
    AlphaSource,
    _loaded_model,
    cost_csv_path,
    perplexity_csv_path,
)

if TYPE_CHECKING:  # annotation only; explorer imports this module
    from .explorer import ExplorerState


class SlicePerplexity:
    """Perplexity of an allocation on a small slice of the evaluation text, one window at a time.

    Args:
        n_tokens: tokens evaluated (``n_tokens // window`` windows of the evaluation split).
        window: tokens per window.
        corpus: corpus name for ``corpus.corpus_text``.
        protocol: TopK protocol passed to ``measure.perplexity.perplexity`` ("all": every token sparsified).
    Called as ``(state, allocation, progress)``; loads the source's model once
    (``models.load_model``), runs ``measure.perplexity.perplexity`` window by window (so
    ``progress(done, total)`` can report) and returns dict(perplexity, n_tokens
    (scored tokens), realised_sparsity, protocol, seconds). The slice
    perplexity is ``exp`` of the token-weighted mean NLL over the windows: the
    same number one call on all windows gives.
    """

    def __init__(self, n_tokens: int = 1024, window: int = 256, corpus: str = DEFAULT_CORPUS, protocol: str = "all"):
        self.n_tokens, self.window, self.corpus, self.protocol = n_tokens, window, corpus, protocol
        self._windows = {}

    def windows(self, loaded) -> "object":
        from ..core.corpus import corpus_text, token_windows

        if loaded.name not in self._windows:
            text = corpus_text(self.corpus, split="evaluation")
            self._windows[loaded.name] = token_windows(loaded.tokenizer, text, window=self.window,
                                                       n_tokens=self.n_tokens)
        return self._windows[loaded.name]

    def __call__(self, state: ExplorerState, allocation: pd.DataFrame,
                 progress: Callable[[int, int], None] | None = None) -> dict:
        from ..measure.perplexity import perplexity

        source = state.sources[state.settings.source]
        if source.model is None:
            raise ModelNotFoundError(f"{source.label}: there is no model to run for these alphas (only published "
                                     "numbers). Fix: pick a model source to evaluate perplexity.")
        loaded = _loaded_model(source.model)
        windows = self.windows(loaded)
        start, nll, tokens, realised = time.perf_counter(), 0.0, 0, []
        for i in range(len(windows)):
            result = perplexity(loaded, windows[i:i + 1], allocation=allocation, protocol=self.protocol,
                                progress=False)
            nll += result.nll * result.tokens
            tokens += result.tokens
            realised.append(result.realised_sparsity)
            if progress is not None:
                progress(i + 1, len(windows))
        return dict(perplexity=float(math.exp(nll / tokens)), n_tokens=int(tokens),
                    realised_sparsity=float(np.mean(realised)), protocol=self.protocol,
                    seconds=time.perf_counter() - start)


def strategy_costs(runs: pd.DataFrame, tables, cost, default_rule: str = "ks") -> pd.DataFrame:
    """Estimated cost of each measured run's allocation, next to its measured perplexity.

    Inputs: ``runs`` with columns strategy (a preset name or ``NAME[k=v;...]``),
    sparsity (the target), perplexity and optionally xmin_rule, e.g.
    ``data/results/perplexity_<model>.csv`` (``measure.grid.evaluate_grid`` output);
    ``tables``: the alpha table the runs were allocated from, or rule -> table
    (a mapping or a callable such as ``AlphaSource.table``), picked by each
    run's xmin_rule (``default_rule`` when absent); ``cost``: a cost table or
    ``sensitivity.cost_curves``. Rows whose strategy is not an allocation
    (e.g. "dense") or whose target is impossible are dropped.
    Output: the kept rows of ``runs`` plus ``estimated_cost``.
    """
    from ..allocation.cost_model import cost_curves, estimate_cost

    curves = cost_curves(cost) if isinstance(cost, pd.DataFrame) else cost
    runs = runs.reset_index(drop=True)
    estimates, keep = [], []
    for i, run in runs.iterrows():
        rule = run.get("xmin_rule")
        rule = default_rule if rule is None or (isinstance(rule, float) and math.isnan(rule)) else str(rule)
        try:
            spec = parse_strategy(str(run["strategy"]))
            table = tables if isinstance(tables, pd.DataFrame) else (
                tables(rule) if callable(tables) else tables[rule])
            allocation = allocate(table, spec, float(run["sparsity"]))
        except AllocationError:
            continue
        keep.append(i)
        estimates.append(estimate_cost(allocation, curves))
    out = runs.iloc[keep].reset_index(drop=True)
    out["estimated_cost"] = estimates
    return out


def measured_rank_agreement(source: AlphaSource, runs_path: str | Path | None = None) -> pd.DataFrame:
    """:func:`rank_agreement` of the cost estimate against the measured perplexity of ``source``'s model.

    ``runs_path`` defaults to ``perplexity_csv_path(source.model)``. Raises
    ModelNotFoundError (with the fix) when the runs file or the cost table is missing.
    """
    path = Path(runs_path) if runs_path is not None else perplexity_csv_path(source.model or source.name)
    if not path.exists():
        raise ModelNotFoundError(f"No measured perplexity at {path} yet, so there is nothing to rank against. "
                                 "Fix: run measure.grid.evaluate_grid(...) over the allocation presets and "
                                 f"core.results_io.write_results(frame, {str(path)!r}).")
    curves = source.curves()
    if curves is None:
        raise ModelNotFoundError(f"{source.label} has no cost table. Fix: commit {cost_csv_path(source.name)}.")
    return rank_agreement(strategy_costs(pd.read_csv(path), source.table, curves))


def rank_agreement(frame: pd.DataFrame, estimate: str = "estimated_cost", measured: str = "perplexity",
                   by: tuple[str, ...] | None = None) -> pd.DataFrame:
    """How well ``estimate`` ranks runs the way ``measured`` does, within each group.

    ``by`` defaults to whichever of sparsity and protocol ``frame`` has (the
    strategies compared are then at one target under one protocol). Output: one
    row per group: the group keys, n, spearman_rho, spearman_p, kendall_tau,
    kendall_p (NaN when n < 3 or a column is constant), and the strategies in
    measured order. +1 means the estimate orders the strategies exactly as the
    measured perplexity does.
    """
    from scipy.stats import kendalltau, spearmanr

    by = tuple(c for c in ("sparsity", "protocol") if c in frame.columns) if by is None else tuple(by)
    groups = frame.groupby(list(by), sort=True) if by else [((), frame)]
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        x, y = part[estimate].to_numpy(float), part[measured].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho, rho_p = spearmanr(x, y)
            tau, tau_p = kendalltau(x, y)
        else:
            rho = rho_p = tau = tau_p = math.nan
        ordered = part.loc[ok].sort_values(measured)
        strategies = ", ".join(ordered["strategy"].astype(str)) if "strategy" in part else ""
        rows.append(dict(zip(by, key), n=int(len(x)), spearman_rho=float(rho), spearman_p=float(rho_p),
                         kendall_tau=float(tau), kendall_p=float(tau_p), strategies=strategies))
    return pd.DataFrame(rows)


def agreement_sentence(agreement: pd.DataFrame, level: float = 0.05) -> str:
    """One sentence reading a :func:`rank_agreement` table: Spearman's rho per target, which are
    significant at ``level``, and what that means for using the estimate."""
    rows = agreement.dropna(subset=["spearman_rho"]).sort_values("sparsity")
    if rows.empty:
        return "Too few measured strategies per target to compare the orderings."
    parts = [f"{r.sparsity:g}: rho {r.spearman_rho:+.2f}" + ("" if r.spearman_p < level else " (not significant)")
             for r in rows.itertuples()]
    good = rows[(rows["spearman_p"] < level) & (rows["spearman_rho"] > 0)]
    if len(good) == len(rows):
        verdict = "the estimate orders the strategies like measured perplexity at every target"
    elif len(good):
        verdict = (f"the estimate orders the strategies like measured perplexity up to {good['sparsity'].max():g}, "
                   "not reliably beyond: measure perplexity there")
    else:
        verdict = "the estimate does not reliably order the strategies: measure perplexity instead"
    return f"Rank agreement of the estimated cost with measured perplexity ({'; '.join(parts)}): {verdict}."
