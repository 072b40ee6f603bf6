"""Measured sensitivity: how much does TopK at sparsity s hurt each projection?

Two measures, both on CALIBRATION text (``corpus_text(split="calibration")``,
Sense and Sensibility for the default corpus; the evaluation split is never
touched here):

- :func:`cost_table` (cheap): for every projection and sparsity level, the
  relative output error of TopK on its own input,
  ``rel_error = ||W (x - topk_s(x))||_F / ||W x||_F`` over the captured tokens
  (every other projection dense), and ``rel_input_error = ||x - topk_s(x)||_F
  / ||x||_F``. One dense forward, then matrix products only.
- :func:`loss_increase_table` (expensive): mean NLL with ONLY that projection
  sparsified minus the dense mean NLL; one forward per (projection, level).

Then :func:`spectral_correlations` asks whether spectral metrics (alpha under
several xmin rules, alpha_weighted, stable rank, lambda_max) rank projections
the way the measured sensitivity does (Spearman), overall, within each
projection kind (across layers) and within each layer (across kinds), and
:func:`estimate_cost` scores any allocation on the measured curves (fast
enough for a slider). Solvers that use the curves live in
:mod:`acttail_lab.allocation.cost_solvers`.

Results are cached under ``cache_dir("sensitivity")``, keyed by the model's
weights, the token ids and the options, written atomically.
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
