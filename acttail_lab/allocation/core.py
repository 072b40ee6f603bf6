"""``allocate``: a projection table in, an allocation table out."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.errors import AllocationError
from .presets import StrategySpec, make_spec
from .solver import solve_scale
from .strategies import get_strategy, option_columns, resolve_options
from .tables import IDENTITY_COLUMNS, validate_table


def _check_target(target) -> float:
    if isinstance(target, bool) or not isinstance(target, (int, float, np.number)) or not math.isfinite(target):
        raise AllocationError(f"target={target!r} must be a number in [0, 1). Fix: pass e.g. target=0.5.")
    if not 0.0 <= target < 1.0:
        raise AllocationError(f"target={target} is outside [0, 1): it is the mean fraction of inputs zeroed. "
                              "Fix: pass e.g. 0.5 for 50% sparsity.")
    return float(target)


def allocate(table: pd.DataFrame, strategy: str | StrategySpec, target: float, *,
             label: str | None = None, cost: pd.DataFrame | None = None,
             greedy_path: pd.DataFrame | None = None, **options) -> pd.DataFrame:
    """Per-projection sparsities whose parameter-weighted mean is exactly ``target``.

    Inputs: ``table`` with columns layer, projection, n_params (and alpha for
    alpha-based strategies); ``strategy``: a strategy name (uniform, acttail,
    shuffled, kind), a preset of ``STRATEGY_PRESETS``, ``NAME[k=v;...]`` text or
    a StrategySpec; ``target`` in [0, 1); ``options`` override the strategy's
    (e.g. ``epsilon=0.2, granularity="block"``). ``label`` names the result
    (default: the preset / strategy name, with the overrides in brackets).

    Output: one row per input row with the identity columns present (layer,
    projection, name, d_out, d_in, n_params, alpha, xmin_rule), ``ratio`` (the
    relative budget), ``sparsity``, then label, strategy, target and every
    option used. The weighted mean of sparsity by n_params equals ``target``
    within 1e-9, with no value above ``s_max``.

    ``cost``: the measured cost table (``sensitivity.cost_table``, calibration
    data) that the ``optimal`` and ``hybrid`` strategies are solved from.
    ``greedy_path``: the path of ``teal_greedy.greedy_path`` (calibration data)
    that the ``teal-greedy`` strategy reads its sparsities from.
    """
    target = _check_target(target)
    spec = make_spec(strategy, options, label)
    resolved = resolve_options(spec.strategy, spec.options)
    info = get_strategy(spec.strategy)
    validate_table(table, info.needs_alpha)
    if spec.kinds is not None and info.needs_cost:
        raise AllocationError(f"kinds= restricts ratio strategies only; {spec.strategy!r} is solved over every "
                              "projection. Fix: drop kinds=, or use uniform / acttail / shuffled / kind.")
    if spec.strategy == "teal-greedy":
        return _allocate_from_path(table, spec, target, resolved, greedy_path)
    if info.needs_cost:
        return _allocate_from_cost(table, spec, target, resolved, cost)
    ratio_options = {k: v for k, v in resolved.items() if k != "s_max"}
    selected = _selected_rows(table, spec.kinds)
    ratios = np.zeros(len(table))
    sparsity = np.zeros(len(table))
    part = table[selected].reset_index(drop=True)
    ratios[selected] = info.ratios(part, **ratio_options)
    sparsity[selected] = solve_scale(ratios[selected], part["n_params"].to_numpy(dtype=float), target,
                                     resolved.get("s_max", 1.0))
    return _allocation_frame(table, ratios, sparsity, spec, target, resolved)


def _selected_rows(table: pd.DataFrame, kinds) -> np.ndarray:
    """Boolean mask of the rows whose projection kind gets a budget (all rows when ``kinds`` is None)."""
    if kinds is None:
        return np.ones(len(table), dtype=bool)
    mask = table["projection"].isin(kinds).to_numpy()
    if not mask.any():
        raise AllocationError(f"No projection of kinds {list(kinds)} in the table. Fix: list kinds the model has.")
    return mask


def _allocation_frame(table: pd.DataFrame, ratios: np.ndarray, sparsity: np.ndarray, spec: StrategySpec,
                      target: float, resolved: dict) -> pd.DataFrame:
    out = table[[c for c in IDENTITY_COLUMNS if c in table.columns]].reset_index(drop=True).copy()
    if "xmin_rule" not in out and "xmin_rule" in table.attrs:
        out["xmin_rule"] = table.attrs["xmin_rule"]
    out["ratio"] = ratios
    out["sparsity"] = sparsity
    out["label"] = spec.label
    out["strategy"] = spec.strategy
    out["target"] = target
    for name, value in option_columns(resolved).items():
        out[name] = value
    if spec.method != "topk":
        out["method"] = spec.method
    if spec.kinds is not None:
        out["kinds"] = "+".join(spec.kinds)
    out.attrs = {k: v for k, v in table.attrs.items() if isinstance(v, (str, int, float))}
    return out


def _allocate_from_cost(table: pd.DataFrame, spec: StrategySpec, target: float, resolved: dict,
                        cost: pd.DataFrame | None) -> pd.DataFrame:
    """``optimal`` / ``hybrid``: solved from a measured cost table (see ``acttail_lab.allocation.cost_solvers``)."""
    from . import cost_solvers as optimal

    if cost is None:
        raise AllocationError(
            f"Strategy {spec.strategy!r} is solved from measured costs, and no cost table was given. "
            "Fix: pass cost=acttail_lab.measure.sensitivity.cost_table(model) (calibration data)."
        )
    if spec.strategy == "optimal":
        out = optimal.optimal_allocation(cost, target, label=spec.label, **resolved)
    else:
        out = optimal.hybrid_allocation(table, cost, target, label=spec.label, **resolved)
    if "name" in table.columns:  # same row order as the input table
        out = out.set_index("name").loc[table["name"]].reset_index()
    return out


def _allocate_from_path(table: pd.DataFrame, spec: StrategySpec, target: float, resolved: dict,
                        path: pd.DataFrame | None) -> pd.DataFrame:
    """``teal-greedy``: read off TEAL's greedy path (see ``acttail_lab.measure.teal_greedy``)."""
    from . import greedy_path as teal_greedy

    if path is None:
        raise AllocationError(
            "Strategy 'teal-greedy' is read off a measured greedy path, and no path was given. "
            "Fix: pass greedy_path=acttail_lab.measure.teal_greedy.greedy_path(model) (calibration data)."
        )
    if float(path["sparsity"].max()) > resolved["s_max"] + 1e-12:
        raise AllocationError(f"The greedy path goes above s_max={resolved['s_max']}. "
                              "Fix: recompute it with greedy_path(model, s_max=...) at the same s_max.")
    out = teal_greedy.teal_greedy_allocation(path, target, label=spec.label)
    for name, value in option_columns(resolved).items():
        out[name] = value
    if "name" in table.columns:  # same row order as the input table
        missing = sorted(set(table["name"]) - set(out["name"]))
        if missing:
            raise AllocationError(f"The greedy path has no rows for {missing[:3]}. "
                                  "Fix: compute greedy_path on the same model as the table.")
        out = out.set_index("name").loc[table["name"]].reset_index()
    return out
