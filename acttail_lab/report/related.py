"""Committed related-methods results (rotation, thresholds, CATS, FFN-only): loaders, comparisons, sentences.

Reads ``perplexity_related_<model>.csv``, ``<model>_threshold_spread.csv`` and
``<model>_active_sets.csv``. :func:`at_realised` interpolates every method to common realised
sparsities (the fair axis across methods), :func:`spread_by_kind` summarises per-token spread,
and :func:`conclusions` writes the findings from the numbers.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.paths import DEFAULT_MODEL, result_path
from ..core.results_io import load_table
from .results import load_results


def related_path(model: str = DEFAULT_MODEL, results_dir=None) -> Path:
    """``<results_dir>/perplexity_related_<model>.csv``."""
    return result_path("related", model, results_dir)


def load_related(model: str = DEFAULT_MODEL, results_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The committed related-methods perplexity grid (with its provenance in ``attrs``)."""
    return load_results(related_path(model, results_dir))


def load_spread(model: str = DEFAULT_MODEL, results_dir=None) -> pd.DataFrame:
    """Committed per-projection realised sparsity of the threshold methods (:func:`threshold_spread`)."""
    return load_table(result_path("threshold_spread", model, results_dir))


def load_active_sets(model: str = DEFAULT_MODEL, results_dir=None) -> pd.DataFrame:
    """Committed FFN active-set overlap table (:func:`acttail_lab.measure.active_sets.active_set_overlap`)."""
    return load_table(result_path("active_sets", model, results_dir))


def method_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (strategy, sparsity): method, kinds, perplexity, realised sparsity and its per-token spread."""
    cols = ["strategy", "method", "kinds", "sparsity", "perplexity", "realised_sparsity", "realised_std"]
    present = [c for c in cols if c in runs.columns]
    return runs.loc[runs["strategy"] != "dense", present].reset_index(drop=True)


def at_realised(runs: pd.DataFrame, levels=(0.3, 0.4, 0.5, 0.6), tolerance: float = 0.01) -> pd.DataFrame:
    """Perplexity of each strategy at common *realised* sparsities (log-linear interpolation).

    Input: a runs table. Output: one row per strategy, one column per level
    (perplexity, NaN more than ``tolerance`` outside the strategy's measured
    range; within it the end point is used, since rounding k makes e.g. a 30%
    target realise 30.05%), so methods whose knob covers only part of the model
    (FFN only, CATS) compare with the others at the same fraction of weights skipped.
    """
    rows = []
    for label, group in runs[runs["strategy"] != "dense"].groupby("strategy", sort=False):
        group = group.sort_values("realised_sparsity")
        x = group["realised_sparsity"].to_numpy(float)
        y = np.log(group["perplexity"].to_numpy(float))
        values = {f"{lvl:g}": float(np.exp(np.interp(lvl, x, y)))
                  if x.min() - tolerance <= lvl <= x.max() + tolerance else float("nan") for lvl in levels}
        rows.append({"strategy": label, **values})
    return pd.DataFrame(rows)


def spread_by_kind(spread: pd.DataFrame) -> pd.DataFrame:
    """Mean over layers, per (strategy, target, projection kind), of the realised sparsity and its spread."""
    cols = ["target_sparsity", "realised_sparsity", "realised_std", "realised_p05", "realised_p95"]
    live = spread[spread["target_sparsity"] > 0]
    return live.groupby(["strategy", "target", "projection"], sort=False)[cols].mean().reset_index()


def _ratio_sentence(runs: pd.DataFrame, label: str, reference: str, target: float) -> str | None:
    table = runs.set_index(["strategy", "sparsity"])["perplexity"]
    if (label, target) not in table.index or (reference, target) not in table.index:
        return None
    ratio = table[(label, target)] / table[(reference, target)]
    word = "lower" if ratio < 1 else "higher"
    return (f"At {target:.0%} target sparsity, {label} has perplexity {table[(label, target)]:.1f}, "
            f"{abs(1 - ratio):.0%} {word} than {reference} ({table[(reference, target)]:.1f}).")


def conclusions(runs: pd.DataFrame, spread: pd.DataFrame | None = None,
                overlap: pd.DataFrame | None = None, targets=(0.5, 0.8), realised_levels=(0.3, 0.5)) -> list[str]:
    """Plain sentences computed from the committed tables (nothing typed by hand).

    Compares methods at equal targets (rotation and thresholds against their TopK
    counterpart) and at equal realised sparsity (every strategy that reaches the level).
    """
    lines = []
    pairs = [("rotated-uniform", "uniform"), ("rotated-acttail", "acttail"), ("teal-threshold", "uniform"),
             ("acttail", "uniform")]
    for target in targets:
        lines += [s for s in (_ratio_sentence(runs, a, b, target) for a, b in pairs) if s]
    for level in realised_levels:
        fair = at_realised(runs, levels=(level,)).dropna().sort_values(f"{level:g}")
        if len(fair) > 1:
            ranking = ", ".join(f"{r.strategy} {getattr(r, '_2'):.1f}" for r in fair.itertuples())
            lines.append(f"At {level:.0%} of all projection weights skipped (interpolated), perplexity from best to "
                         f"worst: {ranking}.")
    if spread is not None and not spread.empty:
        live = spread[spread["target_sparsity"] > 0]
        for label, part in live.groupby("strategy", sort=False):
            lines.append(f"{label}: per-token sparsity varies with a mean standard deviation of "
                         f"{part['realised_std'].mean():.3f} across projections (5-95% range "
                         f"{(part['realised_p95'] - part['realised_p05']).mean():.2f}).")
    if overlap is not None and not overlap.empty:
        for row in overlap_summary_rows(overlap):
            lines.append(row)
    return lines


def overlap_summary_rows(overlap: pd.DataFrame, sparsity: float = 0.5) -> list[str]:
    """Sentences on FFN active-set predictability at one sparsity."""
    from ..measure.active_sets import overlap_summary

    summary = overlap_summary(overlap)
    summary = summary[np.isclose(summary["sparsity"], sparsity)]
    return [f"FFN {row.site} at {sparsity:.0%}: {row.token_hit:.0%} of the next token's active entries are already "
            f"active (chance {row.token_hit_chance:.0%}); next layer {row.layer_hit:.0%} (chance "
            f"{row.layer_hit_chance:.0%})." for row in summary.itertuples()]
