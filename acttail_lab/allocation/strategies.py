"""Relative budgets ("ratios") of each allocation strategy, and their options.

Every strategy is one plain function ``table -> ratios`` (one non-negative
float per row). The shared last step, ``solver.solve_scale``, multiplies the
ratios by the one constant that makes the parameter-weighted mean sparsity
equal the target (clipping at ``s_max``). So strategies differ only in the
*shape* of the budget, never in its total.

- ``uniform``: r_i = 1.
- ``acttail``: AlphaPruning's ``ww_sparsity`` form,
  r_i = (m_i - m_min) / (m_max - m_min) * 2 eps + (1 - eps), with m_i = mapping(alpha_i):
  higher alpha (lighter tail, less trained) -> more sparsity (``direction="alpha_up"``).
- ``shuffled``: the acttail ratios in a random order (a control: same spread, no alpha signal).
- ``kind``: a fixed budget per projection kind (default: TEAL's LLaMA-2-7B means at 50%).
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..core.errors import AllocationError
from ..core.models import PROJECTIONS
from ..core.reference import TEAL_LLAMA2_7B_50

DEFAULT_S_MAX = 0.99
"""Default cap on any one projection's sparsity. 0.99 changes AlphaPruning's
(unclipped) formula only where it would exceed 1, and still keeps 1% of each
projection's inputs (e.g. 41 of 4096 channels). Lower it to be more cautious."""

GRANULARITIES = ("projection", "block")
DIRECTIONS = ("alpha_up", "alpha_down")
MAPPINGS = ("linear", "rank", "power", "log")


# --------------------------------------------------------------------------- ratio functions
def uniform_ratios(table: pd.DataFrame) -> np.ndarray:
    """Every projection gets the same budget: r_i = 1."""
    return np.ones(len(table))


def alpha_scores(table: pd.DataFrame, granularity: str = "projection", mapping: str = "linear",
                 power: float = 2.0) -> np.ndarray:
    """The quantity acttail ranks projections by: ``mapping(alpha)``, per row.

    ``granularity="block"`` first replaces each alpha by the plain (unweighted)
    mean alpha of its layer's projections, as AlphaPruning's ``block_wise``
    mapping does. Mappings: ``linear`` (alpha), ``rank`` (average rank of alpha,
    1 = smallest), ``power`` (alpha ** power), ``log`` (ln alpha).
    """
    alpha = table["alpha"].astype(float)
    if granularity == "block":
        alpha = alpha.groupby(table["layer"]).transform("mean")
    alpha = alpha.to_numpy()
    if mapping in ("power", "log") and np.any(alpha <= 0):
        raise AllocationError(f"mapping={mapping!r} needs alpha > 0 everywhere. Fix: use mapping='linear' or 'rank'.")
    if mapping == "linear":
        return alpha
    if mapping == "rank":
        return rankdata(alpha, method="average")
    if mapping == "power":
        return alpha ** power
    return np.log(alpha)


def spread_ratios(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """Min-max normalise ``scores`` onto [1 - eps, 1 + eps]; all-equal scores give 1."""
    lo, hi = float(np.min(scores)), float(np.max(scores))
    unit = (scores - lo) / (hi - lo) if hi > lo else np.full(len(scores), 0.5)
    return unit * 2.0 * epsilon + (1.0 - epsilon)


def acttail_ratios(table: pd.DataFrame, epsilon: float = 0.3, granularity: str = "projection",
                   direction: str = "alpha_up", mapping: str = "linear", power: float = 2.0) -> np.ndarray:
    """AlphaPruning's ratios r_i in [1 - eps, 1 + eps] from ``table.alpha``.

    ``direction="alpha_down"`` reverses the order (lowest alpha gets the most
    sparsity): the ablation that tests whether the paper's direction matters.
    """
    scores = alpha_scores(table, granularity, mapping, power)
    if direction == "alpha_down":
        scores = -scores
    return spread_ratios(scores, epsilon)


def shuffled_ratios(table: pd.DataFrame, seed: int = 0, **acttail_options) -> np.ndarray:
    """The acttail ratios randomly permuted (seeded), a no-information control.

    Per projection, the ratios are permuted across all rows; with
    ``granularity="block"`` whole layers are permuted, so a layer still shares
    one ratio. Because n_params differ between rows, the permuted ratios no
    longer have the same weighted mean: the solver re-scales them, so the
    target is still met exactly.
    """
    ratios = acttail_ratios(table, **acttail_options)
    rng = np.random.default_rng(seed)
    if acttail_options.get("granularity", "projection") == "block":
        per_layer = pd.Series(ratios, index=table["layer"].to_numpy()).groupby(level=0).first()
        shuffled = pd.Series(rng.permutation(per_layer.to_numpy()), index=per_layer.index)
        return shuffled.loc[table["layer"].to_numpy()].to_numpy()
    return ratios[rng.permutation(len(ratios))]


def kind_ratios(table: pd.DataFrame, budgets: Mapping[str, float] | None = None) -> np.ndarray:
    """A fixed budget per projection kind (default ``reference.TEAL_LLAMA2_7B_50``).

    Budgets are relative: only their proportions matter, as the solver scales
    them to the target (so TEAL's 50% budgets also serve at 80%).
    """
    budgets = dict(TEAL_LLAMA2_7B_50 if budgets is None else budgets)
    missing = sorted(set(table["projection"]) - set(budgets))
    if missing:
        raise AllocationError(
            f"budgets has no value for projection kind(s) {missing}. Fix: give a budget for each of "
            f"{sorted(set(table['projection']))}, e.g. kind[q=0.5;k=0.5;...]."
        )
    return table["projection"].map(budgets).to_numpy(dtype=float)


# --------------------------------------------------------------------------- options
def _choice(name: str, allowed: tuple[str, ...]) -> Callable[[object], str]:
    def check(value):
        if value not in allowed:
            raise AllocationError(f"{name}={value!r} is not one of {list(allowed)}. Fix: pick one of those.")
        return value
    return check


def _number(name: str, low: float, high: float, low_open: bool = False, high_open: bool = False):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
            raise AllocationError(f"{name}={value!r} must be a finite number. Fix: pass e.g. {name}={low + (high - low) / 2:g}.")
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if below or above:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise AllocationError(f"{name}={value} is outside {interval}. Fix: pass a value in {interval}.")
        return float(value)
    return check


def _seed(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise AllocationError(f"seed={value!r} must be a non-negative integer. Fix: pass e.g. seed=0.")
    return int(value)


def _budgets(value):
    if value is None:
        return dict(TEAL_LLAMA2_7B_50)
    if not isinstance(value, Mapping) or not value:
        raise AllocationError("budgets must be a non-empty dict kind -> sparsity. Fix: e.g. {'q': 0.5, 'up': 0.4, ...}.")
    unknown = sorted(set(value) - set(PROJECTIONS))
    if unknown:
        raise AllocationError(f"budgets has unknown projection kind(s) {unknown}. Fix: use kinds from {list(PROJECTIONS)}.")
    clean = {k: _number(f"budgets[{k}]", 0.0, math.inf)(v) for k, v in value.items()}  # relative: rescaled
    if not any(clean.values()):
        raise AllocationError("budgets are all zero, so no target > 0 can be met. Fix: give positive budgets.")
    return clean


_VALIDATORS: dict[str, Callable] = {
    "epsilon": _number("epsilon", 0.0, 1.0, high_open=True),
    "granularity": _choice("granularity", GRANULARITIES),
    "direction": _choice("direction", DIRECTIONS),
    "mapping": _choice("mapping", MAPPINGS),
    "power": _number("power", 0.0, 1e3, low_open=True),
    "s_max": _number("s_max", 0.0, 1.0, low_open=True, high_open=True),
    "seed": _seed,
    "budgets": _budgets,
    "value": _choice("value", ("rel_error", "rel_error_token")),
    "weight": _choice("weight", ("n_params", "uniform")),
}

_ACTTAIL_DEFAULTS = dict(epsilon=0.3, granularity="projection", direction="alpha_up", mapping="linear",
                         power=2.0, s_max=DEFAULT_S_MAX)


@dataclass(frozen=True)
class Strategy:
    """A strategy's ratio function, its options with defaults, and what it reads.

    ``needs_cost`` strategies are solved from a measured table (calibration
    data) instead of ratios and have no ratio function: optimal and hybrid from
    ``sensitivity.cost_table``, teal-greedy from ``teal_greedy.greedy_path``.
    """

    ratios: Callable[..., np.ndarray] | None
    defaults: Mapping[str, object]
    needs_alpha: bool
    needs_cost: bool = False


STRATEGIES: dict[str, Strategy] = {
    "uniform": Strategy(uniform_ratios, {}, needs_alpha=False),
    "acttail": Strategy(acttail_ratios, _ACTTAIL_DEFAULTS, needs_alpha=True),
    "shuffled": Strategy(shuffled_ratios, {**_ACTTAIL_DEFAULTS, "seed": 0}, needs_alpha=True),
    "kind": Strategy(kind_ratios, {"budgets": None, "s_max": DEFAULT_S_MAX}, needs_alpha=False),
    "optimal": Strategy(None, {"s_max": 0.95, "value": "rel_error", "weight": "n_params"},
                        needs_alpha=False, needs_cost=True),
    "hybrid": Strategy(None, {"epsilon": 0.3, "s_max": 0.95, "value": "rel_error", "weight": "n_params"},
                       needs_alpha=True, needs_cost=True),
    "teal-greedy": Strategy(None, {"s_max": 0.99}, needs_alpha=False, needs_cost=True),
}


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; AllocationError listing the known ones otherwise."""
    if name not in STRATEGIES:
        raise AllocationError(f"Unknown strategy {name!r}. Known strategies: {', '.join(STRATEGIES)}.")
    return STRATEGIES[name]


def resolve_options(strategy: str, options: Mapping[str, object]) -> dict[str, object]:
    """Defaults of ``strategy`` overridden by ``options``, each checked; the options that apply.

    Raises AllocationError for an unknown option (with the nearest known name),
    a bad value, or ``power`` given without ``mapping="power"``. ``power`` is
    dropped from the result unless the mapping uses it.
    """
    known = get_strategy(strategy).defaults
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise AllocationError(
                f"Unknown option {name!r} for strategy {strategy!r}.{hint} "
                f"Options of {strategy!r}: {', '.join(known) or 'none'}."
            )
    resolved = {name: _VALIDATORS[name](value) for name, value in {**known, **options}.items()}
    if "mapping" in resolved and resolved["mapping"] != "power":
        if "power" in options:
            raise AllocationError(f"power={options['power']} only applies with mapping='power'. Fix: drop it or set mapping=power.")
        resolved.pop("power")
    return resolved


def option_columns(resolved: Mapping[str, object]) -> dict[str, object]:
    """Resolved options as CSV-friendly scalars (``budgets`` as a JSON string)."""
    out = dict(resolved)
    if "budgets" in out:
        out["budgets"] = json.dumps(out["budgets"])
    return out
