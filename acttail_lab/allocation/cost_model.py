"""The additive cost model: an allocation's estimated cost from a measured cost table (pure).

Input: a cost table (one row per projection x sparsity level with a cost such as ``rel_error``,
the TopK relative output error on calibration text). :func:`cost_curves` turns it into
per-projection curves; :func:`estimate_cost` interpolates each projection's curve at its
sparsity and sums, weighted by ``n_params``. The explorer and the cost-solved strategies use it.
"""
from __future__ import annotations

import pandas as pd

from .cost_solvers import CostCurves, as_curves


def cost_curves(cost: pd.DataFrame, value: str = "rel_error") -> CostCurves:
    """Pre-built curves for :func:`estimate_cost` (build once, then score many allocations)."""
    return CostCurves.from_table(cost, value)


def estimate_cost(allocation: pd.DataFrame, cost, weight: str = "n_params", value: str = "rel_error") -> float:
    """Model-level cost of an allocation on the measured curves.

    ``sum_i w_i c_i(s_i) / sum_i w_i`` with ``c_i`` the projection's measured
    curve (``value``, default rel_error) linearly interpolated on the grid,
    anchored at c(0) = 0 and, for relative errors, c(1) = 1 (so nothing is
    extrapolated); ``w_i = n_params`` (default: a parameter-weighted mean
    relative output error) or 1 (``weight="uniform"``: plain mean).
    Matching is by projection name. Pass ``cost_curves(cost)`` instead of the
    table for interactive use: then a call takes ~0.1 ms for 560 projections.
    """
    curves = as_curves(cost, value)
    return curves.total(curves.align(allocation), weight)
