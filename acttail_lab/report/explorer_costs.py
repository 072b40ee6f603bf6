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
from typing import Callable, Mapping

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
from .rank_correlation import LEVEL


class SlicePerplexity:
    """Perplexity of an allocation on a small slice of the evaluation text, one window at a time.

    Args:
        n_tokens: tokens evaluated (``n_tokens // window`` windows of the evaluation split).
        window: tokens per window.
        corpus: corpus name for ``corpus.corpus_text``.
        protocol: TopK protocol passed to ``measure.perplexity.perplexity`` ("all": every token sparsified).
    Called as ``(state, allocation, progress)`` with ``state`` anything that has ``sources`` (key ->
    AlphaSource) and ``settings.source`` (e.g. ``report.explorer.ExplorerState``; not imported here,
    so this module does not import ``report.explorer``, which imports it); loads the source's model once
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

    def __call__(self, state, allocation: pd.DataFrame,
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


NOT_TOPK = "method {method!r}: the cost table measures plain TopK on unrotated inputs, so it does not estimate this run"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _input_mismatch(spec, inputs: Mapping[str, pd.DataFrame]) -> str:
    """Why ``spec`` cannot be rebuilt from ``inputs`` ("" when it can): a measured table it reads is absent,
    or was made with other settings than the strategy asks for (e.g. a block-step greedy path for
    ``teal-greedy-fine``). A table's settings are its sidecar's (``attrs["provenance"]["settings"]``);
    a setting the sidecar does not name is taken at its default (``steps``: block)."""
    entry = spec.entry
    for name, wanted in entry.inputs(spec.resolved).items() if entry.needs_cost else ():
        table = inputs.get(name)
        if table is None:
            return f"needs the measured {name} table, which is not committed"
        settings = (table.attrs.get("provenance") or {}).get("settings", {})
        for key, value in wanted.items():
            have = settings.get(key, "block" if key == "steps" else None)
            if have is not None and have != value:
                return f"needs a {name} with {key}={value}; the committed one has {key}={have}"
    return ""


def strategy_costs(runs: pd.DataFrame, tables, cost, default_rule: str = "ks",
                   inputs: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Estimated cost of each measured run's allocation, next to its measured perplexity.

    Inputs: ``runs`` with columns strategy (a preset name or ``NAME[k=v;...]``),
    sparsity (the target), perplexity and optionally xmin_rule and method, e.g.
    ``data/results/perplexity_<model>.csv`` (``measure.grid.evaluate_grid`` output);
    ``tables``: the alpha table the runs were allocated from, or rule -> table
    (a mapping or a callable such as ``AlphaSource.table``), picked by each
    run's xmin_rule (``default_rule`` when absent); ``cost``: a cost table or
    ``sensitivity.cost_curves``; ``inputs``: the measured tables the cost-solved and path strategies
    read (``{"cost": cost table, "greedy_path": greedy path}``, as ``allocation.allocate``'s ``inputs``).
    Output: the kept rows of ``runs`` plus ``estimated_cost``; ``attrs["left_out"]``: one row per run
    not estimated (strategy, sparsity, reason): "dense", a method other than TopK, a strategy whose
    measured input is missing or made with other settings, an impossible target.
    """
    from ..allocation.cost_model import cost_curves, estimate_cost

    curves = cost_curves(cost) if isinstance(cost, pd.DataFrame) else cost
    inputs = dict(inputs or {})
    runs = runs.reset_index(drop=True)
    estimates, keep, left_out = [], [], []
    for i, run in runs.iterrows():
        rule = run.get("xmin_rule")
        rule = default_rule if _missing(rule) else str(rule)
        method = run.get("method")
        reason = ""
        if str(run["strategy"]) == "dense":
            reason = "the dense model: no allocation"
        elif not _missing(method) and str(method) != "topk":
            reason = NOT_TOPK.format(method=str(method))
        else:
            try:
                spec = parse_strategy(str(run["strategy"]))
                reason = _input_mismatch(spec, inputs)
                if not reason:
                    table = tables if isinstance(tables, pd.DataFrame) else (
                        tables(rule) if callable(tables) else tables[rule])
                    allocation = allocate(table, spec, float(run["sparsity"]), inputs=inputs)
            except AllocationError as exc:
                reason = str(exc).split(". Fix")[0]
        if reason:
            left_out.append(dict(strategy=str(run["strategy"]), sparsity=float(run["sparsity"]), reason=reason))
            continue
        keep.append(i)
        estimates.append(estimate_cost(allocation, curves))
    out = runs.iloc[keep].reset_index(drop=True)
    out["estimated_cost"] = estimates
    out.attrs["left_out"] = pd.DataFrame(left_out, columns=["strategy", "sparsity", "reason"])
    return out


def measured_rank_agreement(source: AlphaSource, runs_path: str | Path | None = None,
                            greedy_path_file: str | Path | None = None) -> pd.DataFrame:
    """:func:`rank_agreement` of the cost estimate against the measured perplexity of ``source``'s model.

    Every run is rebuilt from the committed inputs: the alphas of its xmin rule, the cost table
    (``surrogate-optimal``, ``hybrid``) and TEAL's greedy path (``teal-greedy``; ``greedy_path_file``
    defaults to the committed ``<model>_teal_greedy_path.csv``). ``runs_path`` defaults to
    ``perplexity_csv_path(source.model)``. ``attrs["left_out"]`` lists the runs not compared and why
    (:func:`strategy_costs`). Raises ModelNotFoundError (with the fix) when the runs file or the cost
    table is missing.
    """
    from ..core.paths import result_path
    from ..core.results_io import load_table

    model = source.model or source.name
    path = Path(runs_path) if runs_path is not None else perplexity_csv_path(model)
    if not path.exists():
        raise ModelNotFoundError(f"No measured perplexity at {path} yet, so there is nothing to rank against. "
                                 "Fix: run measure.grid.evaluate_grid(...) over the allocation presets and "
                                 f"core.results_io.write_results(frame, {str(path)!r}).")
    curves = source.curves()
    if curves is None:
        raise ModelNotFoundError(f"{source.label} has no cost table. Fix: commit {cost_csv_path(source.name)}.")
    inputs = {"cost": source.cost_table()}
    greedy = Path(greedy_path_file) if greedy_path_file is not None else result_path("teal_greedy_path", model)
    if greedy.exists():
        inputs["greedy_path"] = load_table(greedy)
    costs = strategy_costs(pd.read_csv(path), source.table, curves, inputs=inputs)
    out = rank_agreement(costs)
    out.attrs["left_out"] = costs.attrs["left_out"]
    return out


def rank_agreement(frame: pd.DataFrame, estimate: str = "estimated_cost", measured: str = "perplexity",
                   by: tuple[str, ...] | None = None, level: float = LEVEL) -> pd.DataFrame:
    """How well ``estimate`` ranks runs the way ``measured`` does, within each group.

    ``by`` defaults to whichever of sparsity and protocol ``frame`` has (the
    strategies compared are then at one target under one protocol). Output: one
    row per group: the group keys, n, spearman_rho, rho_low, rho_high (its ``level``
    Fisher-z interval, ``report.rank_correlation.fisher_interval``), spearman_p, kendall_tau,
    kendall_p (NaN when n < 3 or a column is constant), and the strategies in
    measured order. +1 means the estimate orders the strategies exactly as the
    measured perplexity does.
    """
    from scipy.stats import kendalltau

    from .rank_correlation import rank_correlation

    by = tuple(c for c in ("sparsity", "protocol") if c in frame.columns) if by is None else tuple(by)
    groups = frame.groupby(list(by), sort=True) if by else [((), frame)]
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        x, y = part[estimate].to_numpy(float), part[measured].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            corr = rank_correlation(x, y, level=level)  # the verdict engine's: rho, Fisher-z interval, p
            rho, rho_p, low, high = corr.rho, corr.p, corr.low, corr.high
            tau, tau_p = kendalltau(x, y)
        else:
            rho = rho_p = tau = tau_p = low = high = math.nan
        ordered = part.loc[ok].sort_values(measured)
        strategies = ", ".join(ordered["strategy"].astype(str)) if "strategy" in part else ""
        rows.append(dict(zip(by, key), n=int(len(x)), spearman_rho=float(rho), rho_low=low, rho_high=high,
                         spearman_p=float(rho_p), kendall_tau=float(tau), kendall_p=float(tau_p),
                         strategies=strategies))
    return pd.DataFrame(rows)


def agreement_sentence(agreement: pd.DataFrame, level: float = LEVEL) -> str:
    """One sentence reading a :func:`rank_agreement` table: Spearman's rho per target with its interval,
    at which targets the interval lies above 0 (the estimate orders the strategies in the direction of
    measured perplexity) and at which it contains 0 (no reliable agreement), and what that means for
    using the estimate. Works without the interval columns (then p < 1 - ``level`` decides)."""
    rows = agreement.dropna(subset=["spearman_rho"]).sort_values("sparsity")
    if rows.empty:
        return "Too few measured strategies per target to compare the orderings."
    if "rho_low" not in rows:
        rows = rows.assign(rho_low=np.where(rows["spearman_p"] < 1 - level, np.sign(rows["spearman_rho"]), -1.0),
                           rho_high=math.nan)

    def one(r) -> str:
        interval = (f" [{r.rho_low:+.2f}, {r.rho_high:+.2f}]" if np.isfinite(r.rho_high) else "")
        n = f", n = {int(r.n)}" if "n" in rows else ""
        return f"{r.sparsity:g}: rho {r.spearman_rho:+.2f}{interval}{n}"

    above = rows[rows["rho_low"] > 0]
    other = rows[~(rows["rho_low"] > 0)]
    targets = lambda part: ", ".join(f"{t:g}" for t in part["sparsity"])  # noqa: E731
    if other.empty:
        weakest = rows.loc[rows["rho_low"].idxmin()]
        verdict = (f"every interval lies above 0, so the estimate orders the strategies in the direction of measured "
                   f"perplexity at every target, but loosely (the lowest bound is {weakest.rho_low:+.2f}, at "
                   f"{weakest.sparsity:g}): it can swap strategies whose perplexities are close, so use it to screen "
                   "settings and measure perplexity to rank them")
    elif above.empty:
        verdict = "every interval contains 0: the estimate does not reliably order the strategies; measure perplexity"
    else:
        verdict = (f"the interval lies above 0 at {targets(above)} (the estimate orders the strategies in the direction "
                   f"of measured perplexity there, loosely) and contains 0 at {targets(other)} (no reliable agreement: "
                   "measure perplexity there)")
    return (f"Rank agreement of the estimated cost with measured perplexity, Spearman rho with its {level:.0%} "
            f"Fisher-z interval ({'; '.join(one(r) for r in rows.itertuples())}): {verdict}.")


def left_out_sentence(left_out: pd.DataFrame) -> str:
    """The runs :func:`strategy_costs` could not estimate, grouped by strategy and reason, as one sentence."""
    if left_out is None or left_out.empty:
        return "Every measured run is compared."
    parts = []
    for (strategy, reason), part in left_out.groupby(["strategy", "reason"], sort=False):
        levels = sorted(set(part["sparsity"]))
        at = "" if levels == [0.0] else " at " + ", ".join(f"{t:g}" for t in levels)
        parts.append(f"{strategy}{at} ({reason})")
    return "Left out of the comparison: " + "; ".join(parts) + "."
