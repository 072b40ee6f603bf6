"""Allocations solved from measured cost curves (pure numpy/pandas: tables in, tables out).

A *cost table* is tidy, one row per (projection, sparsity level), with the
identity columns layer, projection, name, n_params, a ``sparsity`` column and
a cost column (``value``, by default ``rel_error`` from
:func:`acttail_lab.measure.sensitivity.cost_table`; any column works, e.g.
``loss_increase`` from :func:`acttail_lab.measure.sensitivity.loss_increase_table`).
All projections must share one sparsity grid.

:class:`CostCurves` turns it into one piecewise-linear curve per projection
on that grid, anchored at cost 0 for s = 0 (nothing is dropped) and, for the
relative errors ``rel_error``, ``rel_error_token`` and ``rel_input_error``, at 1 for s = 1
(everything is dropped, so the error equals the dense output). Other columns
have no known value at s = 1: beyond the last measured level their curves are
extrapolated linearly (the solver refuses ``s_max`` beyond the grid for them).

Objective, shared by :meth:`CostCurves.total` and the solvers: the weighted
mean ``sum_i w_i c_i(s_i) / sum_i w_i`` with ``weight="n_params"`` (w_i = P_i,
the default: every weight column counts the same, so a big matrix's error
weighs more) or ``weight="uniform"`` (w_i = 1: a plain mean over
projections).

:func:`optimal_allocation` minimises that objective on the *convexified*
curves (the lower convex envelope of each curve on [0, s_max]) subject to the
exact parameter-weighted mean sparsity ``sum_i P_i s_i / sum_i P_i = target``
and ``0 <= s_i <= s_max``. That separable convex problem is solved exactly by
the greedy / Lagrangian rule: take envelope segments in order of marginal
cost per unit of budget, ``w_i * slope / P_i``, until the budget is spent,
the last one fractionally. It is optimal for this *surrogate* (summed
per-projection output errors, each measured with every other projection
dense); it is not a perplexity optimum: errors interact through the
residual stream and the loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.errors import AllocationError
from ..core.models import PROJECTIONS
from .registry import CostStrategy, register_strategy
from .solver import solve_scale
from .strategies import acttail_ratios

WEIGHTS = ("n_params", "uniform")
"""How projections are weighted in the summed cost (see module doc)."""

KNOWN_AT_ONE = {"rel_error": 1.0, "rel_error_token": 1.0, "rel_input_error": 1.0}
"""Cost columns whose value at s = 1 is known exactly (all inputs dropped)."""

ID_COLUMNS = ("layer", "projection", "name", "n_params")
TOLERANCE = 1e-9
"""Largest accepted |parameter-weighted mean sparsity - target|."""


# --------------------------------------------------------------------------- curves
@dataclass(frozen=True)
class CostCurves:
    """One piecewise-linear cost curve per projection on a shared sparsity grid.

    Attributes:
        table: identity columns (layer, projection, name, n_params), one row per projection.
        grid: increasing sparsities, starting at 0 (and ending at 1 for relative errors).
        values: ``[n_projections, len(grid)]`` cost at each grid point.
        value: the name of the cost column the curves came from.
    """

    table: pd.DataFrame
    grid: np.ndarray
    values: np.ndarray
    value: str = "rel_error"

    @classmethod
    def from_table(cls, cost: pd.DataFrame, value: str = "rel_error") -> "CostCurves":
        """Build curves from a tidy cost table (see module doc); raises AllocationError if malformed."""
        _check_cost_table(cost, value)
        # levels sorted ascending whatever the row order; projections in (layer, kind) order, so a table with
        # shuffled rows gives the same curves (and the same tie-breaking in greedy_fill) as an ordered one
        wide = cost.pivot_table(index="name", columns="sparsity", values=value, aggfunc="first").sort_index(axis=1)
        ident = cost.drop_duplicates("name")[list(ID_COLUMNS)]
        kind_rank = ident["projection"].map({k: i for i, k in enumerate(PROJECTIONS)}).fillna(len(PROJECTIONS))
        ident = ident.assign(_kind=kind_rank).sort_values(["layer", "_kind", "name"], kind="stable")
        ident = ident.drop(columns="_kind").reset_index(drop=True)
        wide = wide.loc[ident["name"]]
        if wide.isna().any().any():
            bad = wide.index[wide.isna().any(axis=1)][:3].tolist()
            raise AllocationError(
                f"The cost table has no {value!r} value on some (projection, sparsity) pairs (e.g. {bad}): "
                "every projection must be measured on the same sparsity grid. Fix: re-run cost_table with one "
                "grid for all projections, or drop incomplete projections."
            )
        grid = wide.columns.to_numpy(dtype=float)
        values = wide.to_numpy(dtype=float)
        if grid[0] > 0:
            grid = np.concatenate([[0.0], grid])
            values = np.concatenate([np.zeros((len(values), 1)), values], axis=1)
        if value in KNOWN_AT_ONE and grid[-1] < 1.0:
            grid = np.concatenate([grid, [1.0]])
            values = np.concatenate([values, np.full((len(values), 1), KNOWN_AT_ONE[value])], axis=1)
        return cls(table=ident, grid=grid, values=values, value=value)

    @property
    def n_params(self) -> np.ndarray:
        return self.table["n_params"].to_numpy(dtype=float)

    def evaluate(self, sparsity) -> np.ndarray:
        """Cost of each projection at its own sparsity (array in table order), linear interpolation.

        Past the last grid point (only possible for columns without a known
        value at s = 1) the last segment is extrapolated linearly.
        """
        s = np.asarray(sparsity, dtype=float)
        if s.shape != (len(self.table),):
            raise AllocationError(f"Expected {len(self.table)} sparsities, got shape {s.shape}. "
                                  "Fix: pass one sparsity per projection, in the curves' order.")
        if np.any(s < 0) or not np.all(np.isfinite(s)):
            raise AllocationError("Sparsities must be finite and >= 0. Fix: check the allocation.")
        j = np.clip(np.searchsorted(self.grid, s, side="right") - 1, 0, len(self.grid) - 2)
        x0, x1 = self.grid[j], self.grid[j + 1]
        rows = np.arange(len(s))
        y0, y1 = self.values[rows, j], self.values[rows, j + 1]
        return y0 + (y1 - y0) * (s - x0) / (x1 - x0)

    def total(self, sparsity, weight: str = "n_params") -> float:
        """Weighted mean cost ``sum w_i c_i(s_i) / sum w_i`` (``weight``: "n_params" or "uniform")."""
        w = _weights(self.n_params, weight)
        return float(np.dot(w, self.evaluate(sparsity)) / w.sum())

    def align(self, allocation: pd.DataFrame) -> np.ndarray:
        """The sparsities of ``allocation`` (matched by name) in this curves' order."""
        for col in ("name", "sparsity"):
            if col not in allocation.columns:
                raise AllocationError(f"The allocation lacks column {col!r}. Fix: pass an allocate(...) / "
                                      "optimal_allocation(...) table with name and sparsity.")
        index = pd.Index(allocation["name"])
        pos = index.get_indexer(self.table["name"])
        if np.any(pos < 0):
            missing = self.table["name"][pos < 0].tolist()[:3]
            raise AllocationError(f"The allocation has no row for projection(s) {missing}. Fix: allocate "
                                  "for the same model the cost table was measured on.")
        return allocation["sparsity"].to_numpy(dtype=float)[pos]

    def convexified(self, s_max: float | None = None) -> "CostCurves":
        """Lower convex envelope of every curve, on the grid cut at ``s_max`` (which becomes a grid point).

        In 1-D the convex envelope at x is the lowest chord through two curve
        points a <= x <= b, computed here for all rows at once.
        """
        grid, values = self.grid, self.values
        if s_max is not None:
            if s_max > grid[-1] + 1e-12:
                raise AllocationError(
                    f"s_max={s_max} is beyond the largest sparsity with a known {self.value!r} "
                    f"({grid[-1]:g}). Fix: lower s_max to at most {grid[-1]:g}, or measure the cost up to s_max."
                )
            keep = grid < s_max - 1e-12
            at_max = self.evaluate_all(s_max)
            grid = np.concatenate([grid[keep], [s_max]])
            values = np.concatenate([values[:, keep], at_max[:, None]], axis=1)
        return CostCurves(table=self.table, grid=grid, values=_lower_envelope(grid, values), value=self.value)

    def evaluate_all(self, s: float) -> np.ndarray:
        """Every projection's cost at the same sparsity ``s``."""
        return self.evaluate(np.full(len(self.table), float(s)))


def _lower_envelope(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Lower convex envelope of each row of ``values`` (points on ``grid``), evaluated on ``grid``."""
    x = grid
    a, j, b = np.meshgrid(np.arange(len(x)), np.arange(len(x)), np.arange(len(x)), indexing="ij")
    valid = (a <= j) & (j <= b)
    span = np.where(b > a, x[b] - x[a], 1.0)
    t = np.where(b > a, (x[j] - x[a]) / span, 0.0)  # chord weight of point b at x_j
    out = np.empty_like(values, dtype=float)
    step = max(1, 2_000_000 // len(x) ** 3)  # rows per chunk: bounded memory for fine grids
    for start in range(0, len(values), step):
        ya, yb = values[start:start + step, a], values[start:start + step, b]  # [rows, g, g, g]
        chords = np.where(valid, ya + t * (yb - ya), np.inf)
        out[start:start + step] = chords.min(axis=(1, 3))  # min over a and b, for each x_j
    return out


def _weights(n_params: np.ndarray, weight: str) -> np.ndarray:
    if weight not in WEIGHTS:
        raise AllocationError(f"weight={weight!r} is not one of {list(WEIGHTS)}. Fix: pick one of those.")
    return n_params.astype(float) if weight == "n_params" else np.ones(len(n_params))


def _check_cost_table(cost, value: str) -> None:
    if not isinstance(cost, pd.DataFrame) or cost.empty:
        raise AllocationError("The cost table is empty or not a DataFrame. Fix: pass sensitivity.cost_table(model).")
    missing = [c for c in ID_COLUMNS + ("sparsity", value) if c not in cost.columns]
    if missing:
        raise AllocationError(
            f"The cost table lacks column(s) {missing} (has {list(cost.columns)}). Fix: pass the output of "
            "sensitivity.cost_table(...) (or loss_increase_table(...) with value='loss_increase')."
        )
    s = cost["sparsity"].to_numpy(dtype=float)
    if np.any(s < 0) or np.any(s >= 1.0 + 1e-12) or not np.all(np.isfinite(s)):
        raise AllocationError("Cost-table sparsities must lie in [0, 1]. Fix: check the sparsity column.")
    if not np.all(np.isfinite(cost[value].to_numpy(dtype=float))):
        raise AllocationError(f"The cost column {value!r} has NaN or inf values. Fix: re-measure those rows.")


def as_curves(cost, value: str = "rel_error") -> CostCurves:
    """``cost`` as CostCurves (a CostCurves passes through; a DataFrame is converted)."""
    return cost if isinstance(cost, CostCurves) else CostCurves.from_table(cost, value)


# --------------------------------------------------------------------------- optimal
def _check_target(target, s_max: float) -> float:
    if isinstance(target, bool) or not isinstance(target, (int, float, np.number)) or not np.isfinite(target):
        raise AllocationError(f"target={target!r} must be a number in [0, 1). Fix: pass e.g. target=0.5.")
    if not 0.0 < s_max <= 1.0:
        raise AllocationError(f"s_max={s_max} must lie in (0, 1]. Fix: pass e.g. s_max=0.95.")
    if not 0.0 <= target <= s_max:
        raise AllocationError(
            f"target={target} cannot be met with every projection at most s_max={s_max} (and at least 0): "
            "the parameter-weighted mean sparsity can only lie in [0, s_max]. "
            "Fix: lower the target or raise s_max."
        )
    return float(target)


def greedy_fill(curves: CostCurves, target: float, weight: str = "n_params") -> np.ndarray:
    """Minimise the weighted summed cost of *convex* curves at exact weighted-mean sparsity ``target``.

    ``curves`` must already be convex on its grid (see :meth:`CostCurves.convexified`),
    whose last point is the cap. Segments are taken in order of
    ``w_i * slope / P_i`` (cost per unit of parameter-weighted sparsity);
    the segment that crosses the budget is taken fractionally.
    Returns one sparsity per projection.
    """
    p = curves.n_params
    w = _weights(p, weight)
    dx = np.diff(curves.grid)  # [g-1]
    slopes = np.diff(curves.values, axis=1) / dx  # [n, g-1], non-decreasing along a row
    key = (w / p)[:, None] * slopes
    budget = p[:, None] * dx[None, :]  # parameter-weighted sparsity each segment adds
    n, m = slopes.shape
    rows, segs = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    order = np.lexsort((segs.ravel(), rows.ravel(), key.ravel()))  # by key, then row, then segment
    taken = np.cumsum(budget.ravel()[order])
    goal = target * p.sum()
    stop = int(np.searchsorted(taken, goal, side="left"))
    fraction = np.zeros(n * m)
    fraction[order[:stop]] = 1.0
    if stop < len(order):
        before = taken[stop - 1] if stop > 0 else 0.0
        fraction[order[stop]] = (goal - before) / budget.ravel()[order[stop]]
    sparsity = (fraction.reshape(n, m) * dx[None, :]).sum(axis=1)
    return np.clip(sparsity, 0.0, curves.grid[-1])


def optimal_allocation(cost, target: float, *, s_max: float = 0.95, value: str = "rel_error",
                       weight: str = "n_params", label: str = "surrogate-optimal") -> pd.DataFrame:
    """The allocation minimising the convexified summed cost at an exact weighted-mean sparsity.

    Inputs: ``cost``, a tidy cost table (or CostCurves); ``target`` in
    [0, s_max]; ``s_max`` the cap on any projection (must not exceed the
    largest sparsity whose cost is known: 1 for relative errors, else the grid's
    last level); ``value`` the cost column; ``weight`` "n_params" or "uniform".

    Output: the schema of ``allocation.allocate``: layer, projection, name,
    n_params, ratio (sparsity / target), sparsity, label, strategy="surrogate-optimal",
    target, s_max, value, weight, plus ``cost`` (the projection's convexified
    cost at its sparsity). The parameter-weighted mean sparsity equals
    ``target`` within 1e-9. Optimal for the convexified separable surrogate
    (see module doc), not for perplexity. Solves 560 x 12 levels in milliseconds.
    """
    target = _check_target(target, s_max)
    curves = as_curves(cost, value).convexified(s_max)
    sparsity = greedy_fill(curves, target, weight)
    mean = float(np.dot(sparsity, curves.n_params) / curves.n_params.sum())
    if abs(mean - target) > TOLERANCE:  # pragma: no cover - would be a solver bug
        raise AllocationError(f"Internal error: weighted mean {mean} misses target {target}. Please report.")
    out = curves.table.copy()
    out["ratio"] = sparsity / target if target > 0 else 1.0
    out["sparsity"] = sparsity
    out["label"] = label
    out["strategy"] = "surrogate-optimal"
    out["target"] = target
    out["s_max"] = s_max
    out["value"] = curves.value
    out["weight"] = weight
    out["cost"] = curves.evaluate(sparsity)
    return out


# --------------------------------------------------------------------------- hybrid
def kind_budgets(cost, target: float, *, s_max: float = 0.95, value: str = "rel_error",
                 weight: str = "n_params") -> dict[str, float]:
    """Parameter-weighted mean sparsity per projection kind of the optimal allocation, divided by target."""
    opt = optimal_allocation(cost, target, s_max=s_max, value=value, weight=weight)
    weighted = (opt["sparsity"] * opt["n_params"]).groupby(opt["projection"]).sum()
    per_kind = weighted / opt.groupby("projection")["n_params"].sum()
    return {kind: float(per_kind[kind] / target) for kind in PROJECTIONS if kind in per_kind.index}


def hybrid_allocation(alpha_table: pd.DataFrame, cost, target: float, *, epsilon: float = 0.3,
                      s_max: float = 0.95, value: str = "rel_error", weight: str = "n_params",
                      label: str = "hybrid") -> pd.DataFrame:
    """Alpha across layers, measured cost within a layer: r_i = a_layer(i) * b_kind(i), scaled to ``target``.

    - ``a_layer``: AlphaPruning's block-wise ratio from ``alpha_table.alpha``
      (layer-mean alpha mapped onto [1 - eps, 1 + eps], higher alpha -> more
      sparsity; ``allocation.acttail_ratios(granularity="block")``).
    - ``b_kind``: the kind-level budget of :func:`optimal_allocation` at the same
      target (:func:`kind_budgets`), i.e. FITTED ON THE CALIBRATION DATA the
      cost table was measured on (Sense and Sensibility by default).

    The product is scaled by ``allocation.solve_scale`` (clipping at s_max,
    exact weighted mean). Output: the allocation schema with label, strategy
    "hybrid", target, epsilon, s_max, value, weight. Whether alpha deserves the
    across-layer role is an empirical question: compare with
    ``sensitivity.spectral_correlations`` (grouped by projection kind). On
    SmolLM2-135M the data did NOT support it: within a projection kind, alpha
    and the measured error were uncorrelated across layers (median Spearman
    rho 0.04-0.13, xmin "ks" and "peak"), and the hybrid scored between uniform
    and optimal on the surrogate cost, nearer uniform.
    """
    target = _check_target(target, s_max)
    missing = [c for c in ("layer", "projection", "name", "n_params", "alpha") if c not in alpha_table.columns]
    if missing:
        raise AllocationError(f"alpha_table lacks column(s) {missing}. Fix: pass spectra.analyze(model) "
                              "(or any projection table with an alpha column).")
    table = alpha_table.reset_index(drop=True)
    budgets = kind_budgets(cost, target, s_max=s_max, value=value, weight=weight)
    unknown = sorted(set(table["projection"]) - set(budgets))
    if unknown:
        raise AllocationError(f"The cost table has no projection kind(s) {unknown}. Fix: measure every kind.")
    ratios = acttail_ratios(table, epsilon=epsilon, granularity="block") * table["projection"].map(budgets).to_numpy()
    sparsity = solve_scale(ratios, table["n_params"].to_numpy(dtype=float), target, s_max)
    out = table[[c for c in ("layer", "projection", "name", "d_out", "d_in", "n_params", "alpha") if c in table]].copy()
    out["ratio"] = ratios
    out["sparsity"] = sparsity
    out["label"] = label
    out["strategy"] = "hybrid"
    out["target"] = target
    out["epsilon"] = epsilon
    out["s_max"] = s_max
    out["value"] = value
    out["weight"] = weight
    return out


# --------------------------------------------------------------------------- registration
def _solve_optimal(table: pd.DataFrame, cost, target: float, **options) -> pd.DataFrame:
    return optimal_allocation(cost, target, **options)


_COST_FIX = ("Strategy {!r} is solved from measured costs, and no cost table was given. "
             "Fix: pass cost=acttail_lab.measure.sensitivity.cost_table(model) (calibration data).")
register_strategy(CostStrategy("surrogate-optimal", {"s_max": 0.95, "value": "rel_error", "weight": "n_params"},
                               solve=_solve_optimal, missing_fix=_COST_FIX.format("surrogate-optimal")))
register_strategy(CostStrategy("hybrid", {"epsilon": 0.3, "s_max": 0.95, "value": "rel_error", "weight": "n_params"},
                               needs_alpha=True, solve=hybrid_allocation, missing_fix=_COST_FIX.format("hybrid")))
