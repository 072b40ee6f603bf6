"""Does a spectral metric predict measured sensitivity? Spearman correlations, pure tables in and out.

Inputs: spectra tables (``analyze`` output per xmin rule) and a cost or loss-increase table.
:func:`sensitivity_summary` picks the sensitivity at chosen levels (and the curve mean);
:func:`spectral_correlations` gives rho, p and n per metric (alpha, alpha_weighted,
stable_rank, lambda_max) overall, within each projection kind and within each layer;
:func:`correlation_overview` counts the significant ones.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..allocation.cost_solvers import as_curves
from ..core.errors import AllocationError

SPECTRAL_METRICS = ("alpha", "alpha_weighted", "stable_rank", "lambda_max")


GROUPINGS = ("all", "projection", "layer")


def sensitivity_summary(cost, at=(0.5, 0.8), value: str = "rel_error") -> pd.DataFrame:
    """One row per projection: layer, projection, name, n_params, ``{value}@{s}`` for s in ``at``
    (interpolated on the grid), and ``{value}_auc``: the mean of the curve over
    [0, largest measured level] (trapezoid, with cost 0 at s = 0)."""
    curves = as_curves(cost, value)
    out = curves.table.copy()
    for s in at:
        out[f"{value}@{s:g}"] = curves.evaluate_all(s)
    measured = cost["sparsity"].max() if isinstance(cost, pd.DataFrame) else curves.grid[curves.grid < 1].max()
    keep = curves.grid <= measured + 1e-12
    x, y = curves.grid[keep], curves.values[:, keep]
    out[f"{value}_auc"] = (np.diff(x) * (y[:, 1:] + y[:, :-1]) / 2).sum(axis=1) / x[-1]
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan"), float("nan"), n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = spearmanr(a[ok], b[ok])
    return float(result.statistic), float(result.pvalue), n


def spectral_correlations(spectra, cost, metrics=SPECTRAL_METRICS, *, at=(0.5, 0.8), auc: bool = True,
                          by=GROUPINGS, value: str = "rel_error") -> pd.DataFrame:
    """Spearman rank correlation between spectral metrics and measured sensitivity.

    Args:
        spectra: a ``spectra.analyze(model, xmin=rule)`` table, or a dict
            ``{rule: table}`` to compare xmin rules (a lone table is labelled by
            its ``xmin_rule`` column / attr, else "default").
        cost: a :func:`cost_table` (or any tidy table with ``value``, e.g.
            loss_increase_table with ``value="loss_increase"``).
        metrics: spectral columns to test (missing ones are skipped).
        at: sparsities at which the sensitivity is read; ``auc`` adds the
            curve mean (see :func:`sensitivity_summary`).
        by: any of "all" (every projection), "projection" (within each kind,
            across layers) and "layer" (within each layer, across kinds; n = 7).
    Returns:
        One row per (rule, metric, sensitivity, group_by, group): rho, p_value,
        n. ActTail's premise (higher alpha tolerates more sparsity) predicts
        rho(alpha, error) < 0.
    """
    tables = dict(spectra) if isinstance(spectra, Mapping) else {_rule_of(spectra): spectra}
    summary = sensitivity_summary(cost, at=at, value=value)
    targets = [c for c in summary.columns if c.startswith(f"{value}@")] + ([f"{value}_auc"] if auc else [])
    groupings = (by,) if isinstance(by, str) or by is None else tuple(by)
    rows = []
    for rule, table in tables.items():
        keys = ["name"] if "name" in table.columns else ["layer", "projection"]
        cols = keys + [m for m in metrics if m in table.columns and m not in keys]
        merged = summary.merge(table[cols], on=keys, how="inner")
        for grouping in groupings:
            grouping = grouping or "all"
            if grouping not in GROUPINGS:
                raise AllocationError(f"by={grouping!r} is not one of {GROUPINGS}. Fix: pick from those.")
            parts = [("all", merged)] if grouping == "all" else merged.groupby(grouping, sort=False)
            for group, part in parts:
                for metric in cols[len(keys):]:
                    for target in targets:
                        rho, p, n = _spearman(part[metric].to_numpy(float), part[target].to_numpy(float))
                        rows.append(dict(rule=rule, metric=metric, sensitivity=target, group_by=grouping,
                                         group=str(group), rho=rho, p_value=p, n=n))
    return pd.DataFrame(rows)


def _rule_of(table: pd.DataFrame) -> str:
    if "xmin_rule" in table.columns and table["xmin_rule"].nunique() == 1:
        return str(table["xmin_rule"].iloc[0])
    return str(table.attrs.get("xmin_rule", "default"))


def correlation_overview(correlations: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (rule, metric, sensitivity, group_by): median and mean rho over groups, number of groups,
    and how many groups are significantly negative / positive at level ``alpha``."""
    df = correlations.assign(neg=(correlations["rho"] < 0) & (correlations["p_value"] < alpha),
                             pos=(correlations["rho"] > 0) & (correlations["p_value"] < alpha))
    keys = ["rule", "metric", "sensitivity", "group_by"]
    return df.groupby(keys, sort=False).agg(rho_median=("rho", "median"), rho_mean=("rho", "mean"),
                                            n_groups=("rho", "size"), n_sig_negative=("neg", "sum"),
                                            n_sig_positive=("pos", "sum")).reset_index()


def _rank_rows(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank), as floats."""
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two ``[k, n]`` arrays (NaN for a constant row)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=-1) / denom


def spearman_interval(x, y, groups=None, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Spearman rho of ``x`` and ``y`` with a percentile-bootstrap interval over the pairs (e.g. projections).

    Args:
        x, y: paired values (NaN pairs dropped).
        groups: optional group label per pair (e.g. the projection kind). Then rho is the MEAN of the
            Spearman rhos within each group (the "within a kind, across layers" signal, free of differences
            between groups), and each replicate resamples pairs within each group (stratified).
        n_boot, level, seed: bootstrap replicates, two-sided level, resampling seed.
    Returns:
        ``dict(rho, low, high, n, n_groups)``; ``low``/``high`` bound the central ``level`` of the replicates.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels = np.zeros(x.size, dtype=int) if groups is None else pd.factorize(np.asarray(groups))[0]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, labels = x[ok], y[ok], labels[ok]
    rng = np.random.default_rng(seed)
    point, boots = [], []
    for g in np.unique(labels):
        gx, gy = x[labels == g], y[labels == g]
        if gx.size < 3:
            continue
        point.append(_row_pearson(_rank_rows(gx[None]), _rank_rows(gy[None]))[0])
        idx = rng.integers(0, gx.size, size=(n_boot, gx.size))
        boots.append(_row_pearson(_rank_rows(gx[idx]), _rank_rows(gy[idx])))
    if not point:
        return dict(rho=float("nan"), low=float("nan"), high=float("nan"), n=int(x.size), n_groups=0)
    replicate = np.nanmean(np.vstack(boots), axis=0) if len(boots) > 1 else boots[0]
    low, high = np.nanpercentile(replicate, [50 * (1 - level), 50 * (1 + level)])
    return dict(rho=float(np.nanmean(point)), low=float(low), high=float(high), n=int(x.size), n_groups=len(point))


def interval_text(result: dict, digits: int = 2) -> str:
    """``"+0.49 [+0.38, +0.59]"`` from :func:`spearman_interval`."""
    return f"{result['rho']:+.{digits}f} [{result['low']:+.{digits}f}, {result['high']:+.{digits}f}]"


def interval_sign(result: dict) -> str:
    """``"positive"`` / ``"negative"`` when the interval excludes 0, else ``"indistinguishable from 0"``."""
    if result["low"] > 0:
        return "positive"
    if result["high"] < 0:
        return "negative"
    return "indistinguishable from 0"


# --------------------------------------------------------------------------- the committed correlation tables
SENSITIVITY_VALUES = ("rel_error", "rel_error_token")
"""The cost-table columns every committed ``<model>_correlations.csv`` correlates (TopK output error, pooled and
per token)."""
COST_SETTINGS = dict(sparsities=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95), max_tokens=2048,
                     window=512, n_tokens=2048)
"""The cost table of the committed tables and of a report (``measure.sensitivity.cost_table`` keywords: its
defaults, which ``measure.grid.evaluate_grid`` also uses for surrogate-optimal / hybrid)."""
LOSS_EVERY = 3
LOSS_SETTINGS = dict(sparsities=(0.5, 0.8), window=256, n_tokens=512)
"""The loss-increase subset of the committed tables (``measure.sensitivity.loss_increase_table`` keywords): every
:data:`LOSS_EVERY`-th layer, all kinds, two levels, 512 calibration tokens."""


def loss_subset(table: pd.DataFrame, every: int = LOSS_EVERY) -> list[str]:
    """Names of the projections of ``table`` (``core.models.projection_table``) in layers 0, every, 2 every, ..."""
    return table.loc[table["layer"] % every == 0, "name"].tolist()


def sensitivity_correlations(spectra: Mapping, cost: pd.DataFrame, loss: pd.DataFrame | None = None,
                             loss_at=LOSS_SETTINGS["sparsities"]) -> pd.DataFrame:
    """The rows of a ``<model>_correlations.csv``: :func:`spectral_correlations` of ``spectra`` (one table per xmin
    rule) with each of :data:`SENSITIVITY_VALUES` of ``cost``, then with the loss increase at ``loss_at`` when a
    ``loss`` table is given."""
    parts = [spectral_correlations(spectra, cost, value=value) for value in SENSITIVITY_VALUES]
    if loss is not None:
        parts.append(spectral_correlations(spectra, loss, value="loss_increase", at=loss_at, auc=False))
    return pd.concat(parts, ignore_index=True)
