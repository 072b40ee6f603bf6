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
from .labels import relabel_sentence
from .results import load_results, run_labels


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
    """One row per (label, sparsity): the label (``report.labels``: by settings, so the KS ``acttail`` rows read
    ``acttail-ks``), xmin rule, method, kinds, perplexity, realised sparsity and its per-token spread."""
    cols = ["label", "xmin_rule", "method", "kinds", "sparsity", "perplexity", "realised_sparsity", "realised_std"]
    labelled = runs.assign(label=run_labels(runs))
    present = [c for c in cols if c in labelled.columns]
    return labelled.loc[labelled["strategy"] != "dense", present].reset_index(drop=True)


def at_realised(runs: pd.DataFrame, levels=(0.3, 0.4, 0.5, 0.6), tolerance: float = 0.01) -> pd.DataFrame:
    """Perplexity of each strategy at common *realised* sparsities (log-linear interpolation).

    Input: a runs table. Output: one row per strategy, one column per level
    (perplexity, NaN more than ``tolerance`` outside the strategy's measured
    range; within it the end point is used, since rounding k makes e.g. a 30%
    target realise 30.05%), so methods whose knob covers only part of the model
    (FFN only, CATS) compare with the others at the same fraction of weights skipped.
    """
    rows = []
    labelled = runs.assign(label=run_labels(runs))
    for label, group in labelled[labelled["strategy"] != "dense"].groupby("label", sort=False):
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


PAIRS = (("rotated-uniform", "uniform"), ("rotated-acttail[xmin=ks]", "acttail-ks"), ("teal-threshold", "uniform"),
         ("acttail-threshold[xmin=ks]", "acttail-ks"), ("acttail-ks", "uniform"))
"""(run, baseline) labels compared at equal targets: each method against its TopK counterpart with the same budgets."""


def comparisons(runs: pd.DataFrame, pairs=PAIRS, targets=(0.5, 0.8), windows: pd.DataFrame | None = None) -> list:
    """``report.verdicts.Verdict`` of each present (run, baseline) pair at each target (collapsed sides named,
    never compared as a percentage; "no interval" without per-window losses)."""
    from .verdicts import compare

    present = set(run_labels(runs))
    out = []
    for run, baseline in pairs:
        if run not in present or baseline not in present:
            continue
        for target in targets:
            try:
                out.append(compare(runs, run, baseline=baseline, sparsity=target, windows=windows))
            except Exception:  # not run at this target
                continue
    return out


def reference_noise(model: str = DEFAULT_MODEL, sparsity: float = 0.5, results_dir=None) -> float | None:
    """Median half-width (percent) of the 95% paired-bootstrap intervals against uniform at ``sparsity`` on the
    main perplexity grid of ``model`` (same text, windows and protocol as the related grid, which kept no
    per-window losses): how large a difference the evaluation text resolves there. None without that grid."""
    from .bootstrap import committed_intervals

    try:
        ci = committed_intervals("perplexity", model, results_dir)
    except Exception:
        return None
    at = ci[(ci["sparsity"] - sparsity).abs() < 1e-9]
    return float(((at["ci_high_pct"] - at["ci_low_pct"]) / 2).median()) if len(at) else None


def realised_ranking(runs: pd.DataFrame, level: float, noise_pct: float | None = None) -> str | None:
    """One sentence ranking every label that reaches ``level`` of all projection weights skipped (interpolated),
    saying that these interpolated values have no interval; with ``noise_pct`` (:func:`reference_noise`), the
    neighbours closer than that are named as not resolved."""
    fair = at_realised(runs, levels=(level,)).dropna().sort_values(f"{level:g}")
    if len(fair) < 2:
        return None
    values = fair[f"{level:g}"].to_numpy(float)
    ranking = ", ".join(f"{r.strategy} {getattr(r, '_2'):.1f}" for r in fair.itertuples())
    line = (f"At {level:.0%} of all projection weights skipped (interpolated along each curve, so no interval), "
            f"perplexity from lowest to highest over all {len(fair)} runs that reach it: {ranking}.")
    if noise_pct is not None:
        close = [f"{a} and {b}" for a, b, x, y in zip(fair["strategy"], fair["strategy"][1:], values, values[1:])
                 if 100.0 * (y / x - 1.0) < noise_pct]
        line += (f" Neighbours closer than {noise_pct:.1f}% (the median half-width of the paired intervals at this "
                 "target on notebook 02's grid, same windows) are not told apart: "
                 + ("; ".join(close) if close else "none") + ".")
    return line


def conclusions(runs: pd.DataFrame, spread: pd.DataFrame | None = None,
                overlap: pd.DataFrame | None = None, targets=(0.5, 0.8), realised_levels=(0.3, 0.5),
                windows: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences computed from the committed tables (nothing typed by hand), through ``report.verdicts``.

    Says which rows were relabelled by their settings, compares methods at equal targets (rotation and
    thresholds against their TopK counterpart with the same budgets) and at equal realised sparsity (every label
    that reaches the level). Without ``windows`` (this grid kept no per-window losses) each comparison says it
    has no interval; collapsed runs are named, never compared as a percentage.
    """
    lines = [s for s in [relabel_sentence(runs)] if s]
    lines += [v.sentence() for v in comparisons(runs, targets=targets, windows=windows)]
    model = str(runs["model"].iloc[0]) if "model" in runs.columns and len(runs) else DEFAULT_MODEL
    for level in realised_levels:
        line = realised_ranking(runs, level, reference_noise(model, level))
        if line:
            lines.append(line)
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
