"""Scale relative budgets so the parameter-weighted mean sparsity hits a target exactly.

Given ratios r_i >= 0 (relative budgets) and weights P_i (number of weights of
projection i), find c with

    sum_i P_i * min(c * r_i, s_max) / sum_i P_i == target.

The left side is continuous, piecewise linear and non-decreasing in c, with a
breakpoint where each c * r_i reaches s_max. The solver walks the breakpoints
(largest ratio first) and solves the linear piece that contains the target, so
the answer is exact up to floating-point rounding: whatever a clipped
projection cannot take is spread over the unclipped ones in proportion to r_i.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..core.errors import AllocationError

TOLERANCE = 1e-9
"""Largest accepted |weighted mean - target| (sparsity units)."""


def check_fraction(value, name: str = "target") -> float:
    """``value`` as a float if it is a finite real number in [0, 1) (a mean sparsity); else AllocationError.

    ``name`` is how the error message calls it (``target`` for allocate, ``sparsity`` for a grid).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise AllocationError(f"{name}={value!r} is not a finite number; it must be a number in [0, 1). "
                              f"Fix: pass e.g. {name}=0.5.")
    if not 0.0 <= value < 1.0:
        raise AllocationError(f"{name}={value!r} is outside [0, 1): it is the mean fraction of inputs zeroed. "
                              "Fix: pass e.g. 0.5 for 50% sparsity, not 50 or 1.")
    return float(value)


def weighted_mean(sparsity, n_params) -> float:
    """Parameter-weighted mean of ``sparsity`` (the fraction of weight columns skipped)."""
    sparsity = np.asarray(sparsity, dtype=float)
    n_params = np.asarray(n_params, dtype=float)
    return float(np.sum(sparsity * n_params) / np.sum(n_params))


def max_achievable(ratios, n_params, s_max: float) -> float:
    """Highest weighted mean reachable: every projection with r_i > 0 at s_max."""
    ratios = np.asarray(ratios, dtype=float)
    n_params = np.asarray(n_params, dtype=float)
    return float(s_max * n_params[ratios > 0].sum() / n_params.sum())


def _check_inputs(ratios: np.ndarray, n_params: np.ndarray, target: float, s_max: float) -> None:
    if ratios.shape != n_params.shape or ratios.ndim != 1 or ratios.size == 0:
        raise AllocationError(
            f"ratios {ratios.shape} and n_params {n_params.shape} must be non-empty 1-D arrays of one length. "
            "Fix: pass one ratio and one parameter count per projection."
        )
    if not np.all(np.isfinite(ratios)) or np.any(ratios < 0):
        raise AllocationError("Ratios must be finite and >= 0. Fix: check the alphas / budgets they came from.")
    if not np.all(np.isfinite(n_params)) or np.any(n_params <= 0):
        raise AllocationError("n_params must be finite and > 0 for every projection. Fix: check the shape table.")
    if not 0.0 < s_max <= 1.0:
        raise AllocationError(f"s_max={s_max} must lie in (0, 1]. Fix: pass e.g. s_max=0.99.")
    if not 0.0 <= target < 1.0:
        raise AllocationError(f"target={target} must lie in [0, 1). Fix: pass a sparsity such as 0.5.")
    limit = max_achievable(ratios, n_params, s_max)
    if target > limit + TOLERANCE:
        raise AllocationError(
            f"target={target} cannot be met: with s_max={s_max} the weighted mean sparsity is at most "
            f"{limit:.6f} (projections with ratio 0 stay dense). Fix: lower the target or raise s_max."
        )


def solve_scale(ratios, n_params, target: float, s_max: float = 1.0) -> np.ndarray:
    """Sparsities ``min(c * r_i, s_max)`` whose parameter-weighted mean equals ``target``.

    Inputs: ``ratios`` (relative budgets, >= 0), ``n_params`` (weights per
    projection, > 0), ``target`` in [0, 1) and ``s_max`` in (0, 1]. Output: a
    float array of sparsities in [0, s_max], weighted mean within 1e-9 of
    ``target``. Raises AllocationError when the target is out of reach.
    """
    r = np.asarray(ratios, dtype=float)
    p = np.asarray(n_params, dtype=float)
    _check_inputs(r, p, target, s_max)
    target = min(target, max_achievable(r, p, s_max))
    if not np.any(r > 0):  # only reachable with target 0 (checked above)
        return np.zeros_like(r)
    order = np.argsort(-r, kind="stable")  # largest ratio clips first
    r_sorted, p_sorted = r[order], p[order]
    positive = r_sorted > 0
    r_pos, p_pos = r_sorted[positive], p_sorted[positive]
    goal = target * p.sum()  # weighted sum of sparsities to reach
    clipped_before = np.concatenate([[0.0], np.cumsum(p_pos)[:-1]])  # sum P_j, j < k (clipped)
    free_from = np.cumsum((p_pos * r_pos)[::-1])[::-1]  # sum P_j r_j, j >= k (free)
    breakpoints = s_max / r_pos  # c at which item k reaches s_max
    value_at_break = s_max * clipped_before + breakpoints * free_from  # weighted sum at c = breakpoint k
    k = int(np.searchsorted(value_at_break, goal, side="left"))
    k = min(k, r_pos.size - 1)
    scale = (goal - s_max * clipped_before[k]) / free_from[k]
    sparsity = np.minimum(scale * r, s_max)
    error = abs(weighted_mean(sparsity, p) - target)
    if error > TOLERANCE:  # pragma: no cover - would be a solver bug
        raise AllocationError(f"Internal error: solved weighted mean misses target by {error:.3g}. Please report.")
    return sparsity
