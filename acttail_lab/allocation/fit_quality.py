"""Quality of each alpha fit beside its budget, and keeping unreliable fits from driving the min-max mapping.

ActTail's mapping is a min-max normalisation of alpha, so the largest and smallest alphas set every
budget. On small models the largest alphas often come from the shortest tails (e.g. alpha ~22 from
9-10 eigenvalues on SmolLM2), the fits least worth trusting. Inputs: an alpha table (one row per
projection, from ``spectral.spectra.analyze``: ``alpha, n_tail, tail_ok, sigma`` and, with
``robust=True``, ``alpha_lo, alpha_hi, fragile``). Outputs:

- :func:`unreliable` -- one flag per row: ``tail_ok`` False, ``n_tail < min_tail``, ``fragile``
  (when present) or a non-finite alpha;
- :func:`effective_alphas` -- the alphas the mapping sees under the ``fit`` option (``FIT_MODES``):
  ``all`` (every alpha as fitted), ``winsorise`` (flagged alphas clipped to the range of the reliable
  ones) or ``block-mean`` (flagged alphas replaced by the mean reliable alpha of their layer, or of all
  reliable fits when the layer has none). Reliable rows are never changed. A table without fit details
  (published alphas) has nothing to flag: its alphas are used as given, with a warning;
- :func:`fit_quality_table` -- the allocation joined with each fit's ``n_tail, tail_ok``, a 90%
  interval (``alpha_lo, alpha_hi``: the bootstrap interval when the table has one, else
  ``alpha -/+ 1.645 sigma``, the Hill estimator's asymptotic standard error; column ``interval``
  says which) and the flag: one row per projection.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..core.errors import AllocationError

FIT_MODES = ("all", "winsorise", "block-mean")
DEFAULT_MIN_TAIL = 20
"""A fit is reliable only with at least this many tail eigenvalues (52 of SmolLM2's 210 KS fits have fewer)."""
Z90 = 1.6448536269514722
"""Two-sided 90% normal quantile, for the ``alpha -/+ z sigma`` interval."""
_NEEDED = ("n_tail", "tail_ok")


def _check_columns(table: pd.DataFrame) -> None:
    missing = [c for c in ("alpha", *_NEEDED) if c not in table.columns]
    if missing:
        raise AllocationError(f"Fit quality needs the columns {missing} of an alpha table from spectral.spectra.analyze "
                              "(published alphas have no fit details). Fix: compute the alphas with "
                              "spectra.analyze(model), or use fit=all.")


def unreliable(table: pd.DataFrame, min_tail: int = DEFAULT_MIN_TAIL) -> np.ndarray:
    """Boolean per row: True where the alpha fit is not to be trusted (see module doc)."""
    _check_columns(table)
    alpha = table["alpha"].to_numpy(dtype=float)
    flag = ~table["tail_ok"].astype(bool).to_numpy() | (table["n_tail"].to_numpy() < min_tail) | ~np.isfinite(alpha)
    if "fragile" in table.columns:
        flag |= table["fragile"].fillna(False).astype(bool).to_numpy()
    return flag


def effective_alphas(table: pd.DataFrame, fit: str = "all", min_tail: int = DEFAULT_MIN_TAIL) -> np.ndarray:
    """The alphas the min-max mapping sees under ``fit`` (one of :data:`FIT_MODES`); reliable rows unchanged."""
    if fit not in FIT_MODES:
        raise AllocationError(f"fit={fit!r} is not one of {list(FIT_MODES)}. Fix: pick one of those.")
    alpha = table["alpha"].to_numpy(dtype=float).copy()
    if fit == "all":
        return alpha
    if not set(_NEEDED) <= set(table.columns):
        warnings.warn(f"fit={fit}: this alpha table has no fit details ({', '.join(_NEEDED)}; e.g. published alphas), "
                      "so no fit can be flagged and every alpha is used as given. Fix: compute the alphas with "
                      "spectra.analyze(model) to use the fit option.", stacklevel=3)
        return alpha
    flag = unreliable(table, min_tail)
    if flag.all():
        raise AllocationError(f"All {len(table)} alpha fits are unreliable (n_tail < {min_tail}, tail_ok False or "
                              "fragile), so none can anchor the mapping. Fix: lower min_tail, or use fit=all.")
    good = alpha[~flag]
    if fit == "winsorise":
        alpha[flag] = np.clip(np.nan_to_num(alpha[flag], nan=float(np.median(good))), good.min(), good.max())
        return alpha
    reliable = pd.Series(np.where(flag, np.nan, alpha), index=table.index)
    layer_mean = reliable.groupby(table["layer"]).transform("mean").to_numpy()
    fallback = np.where(np.isfinite(layer_mean), layer_mean, float(good.mean()))
    alpha[flag] = fallback[flag]
    return alpha


def fit_quality_table(alphas: pd.DataFrame, allocation: pd.DataFrame | None = None,
                      min_tail: int = DEFAULT_MIN_TAIL) -> pd.DataFrame:
    """One row per projection: its budget (when ``allocation`` is given) beside its fit's quality.

    Args:
        alphas: an alpha table from ``spectral.spectra.analyze`` (``robust=True`` adds bootstrap intervals).
        allocation: an allocation table from ``allocate`` (joined on ``name``), or None.
        min_tail: tail length below which a fit is flagged.
    Returns:
        DataFrame: ``layer, projection, name, alpha, n_tail, tail_ok, alpha_lo, alpha_hi, interval,
        unreliable`` and, with an allocation, ``sparsity`` (0..1) and ``strategy``.
    """
    _check_columns(alphas)
    out = alphas[["layer", "projection", "name", "alpha", "n_tail", "tail_ok"]].copy()
    if {"alpha_lo", "alpha_hi"} <= set(alphas.columns):
        out["alpha_lo"], out["alpha_hi"], out["interval"] = alphas["alpha_lo"], alphas["alpha_hi"], "bootstrap 90%"
    elif "sigma" in alphas.columns:
        half = Z90 * alphas["sigma"].astype(float)
        out["alpha_lo"], out["alpha_hi"], out["interval"] = alphas["alpha"] - half, alphas["alpha"] + half, "hill-se 90%"
    else:
        out["alpha_lo"], out["alpha_hi"], out["interval"] = np.nan, np.nan, "none"
    out["unreliable"] = unreliable(alphas, min_tail)
    if allocation is not None:
        budget = allocation.set_index("name")
        missing = sorted(set(out["name"]) - set(budget.index))
        if missing:
            raise AllocationError(f"The allocation has no budget for {len(missing)} projections (e.g. {missing[0]}). "
                                  "Fix: allocate from the same alpha table.")
        out["sparsity"] = budget.loc[out["name"], "sparsity"].to_numpy()
        if "strategy" in budget.columns:
            out["strategy"] = budget.loc[out["name"], "strategy"].to_numpy()
    return out.reset_index(drop=True)
