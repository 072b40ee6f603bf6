"""Strategy options: their checks, and how a strategy's defaults and the given options resolve.

Every option name has one validator (:data:`VALIDATORS`); a strategy lists
the options it takes, with defaults (``registry.StrategyEntry.defaults``) and
may add validators of its own (``StrategyEntry.validators``).
"""
from __future__ import annotations

import difflib
import json
import math
from typing import Callable, Mapping

import numpy as np

from ..core.errors import AllocationError
from ..core.models import PROJECTIONS
from ..core.reference import TEAL_LLAMA2_7B_50
from ..spectral.farms import ESTIMATORS
from ..spectral.tails import XMIN_RULES
from .fit_quality import FIT_MODES

DEFAULT_S_MAX = 0.99
"""Default cap on any one projection's sparsity. 0.99 changes AlphaPruning's
(unclipped) formula only where it would exceed 1, and still keeps 1% of each
projection's inputs (e.g. 41 of 4096 channels). Lower it to be more cautious."""

GRANULARITIES = ("projection", "block")
DIRECTIONS = ("alpha_up", "alpha_down")
MAPPINGS = ("linear", "rank", "power", "log")
ESTIMATOR_OPTION = "estimator"
"""The option every alpha-based strategy takes (default ``"plain"``): which alpha estimator the spectra
table was made with (``spectral.farms.ESTIMATORS``; ``acttail[estimator=farms]``). It selects the table,
not the ratios: ``measure.grid`` computes one spectra table per estimator and ``allocate`` refuses a
table made with another estimator."""

XMIN_OPTION = "xmin"
"""The option every alpha-based strategy takes: the xmin rule of the alphas it reads (``spectral.tails.XMIN_RULES``),
e.g. ``acttail[xmin=ks]``. Unset (the default) means "the alphas of the table given"; ``measure.grid`` then
fixes it to the run's rule (:data:`DEFAULT_XMIN` unless told otherwise) and ``allocate`` refuses a table made
with another rule."""
DEFAULT_XMIN = "peak"
"""The xmin rule of a run that names none: AlphaPruning's ``xmin_peak``, the rule of ActTail's authors' nearest
public code (docs/method.md says why; the KS rule is the named variant ``acttail-ks``)."""


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


def _min_tail(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AllocationError(f"min_tail={value!r} must be a positive integer (tail eigenvalues). Fix: pass e.g. min_tail=20.")
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


VALIDATORS: dict[str, Callable] = {
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
    ESTIMATOR_OPTION: _choice(ESTIMATOR_OPTION, ESTIMATORS),
    "fit": _choice("fit", FIT_MODES),
    "min_tail": _min_tail,
    XMIN_OPTION: lambda value: value if value is None else _choice(XMIN_OPTION, XMIN_RULES)(value),
}


def resolve(strategy: str, defaults: Mapping[str, object], options: Mapping[str, object],
            validators: Mapping[str, Callable] | None = None) -> dict[str, object]:
    """``defaults`` of ``strategy`` overridden by ``options``, each checked; the options that apply.

    Raises AllocationError for an unknown option (with the nearest known name),
    a bad value, or ``power`` given without ``mapping="power"``. ``power`` is
    dropped from the result unless the mapping uses it.
    """
    checks = {**VALIDATORS, **(validators or {})}
    for name in options:
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise AllocationError(
                f"Unknown option {name!r} for strategy {strategy!r}.{hint} "
                f"Options of {strategy!r}: {', '.join(defaults) or 'none'}."
            )
    resolved = {name: checks.get(name, _as_is)(value) for name, value in {**defaults, **options}.items()}
    if "mapping" in resolved and resolved["mapping"] != "power":
        if "power" in options:
            raise AllocationError(f"power={options['power']} only applies with mapping='power'. Fix: drop it or set mapping=power.")
        resolved.pop("power", None)
    if resolved.get("fit") == "all":
        if "min_tail" in options:
            raise AllocationError(f"min_tail={options['min_tail']} only applies with fit=winsorise or fit=block-mean. "
                                  "Fix: drop it or set fit=winsorise.")
        resolved.pop("min_tail", None)
        resolved.pop("fit", None)  # the default: allocation tables keep their columns (no fit column = fit=all)
    if XMIN_OPTION in resolved and resolved[XMIN_OPTION] is None:
        resolved.pop(XMIN_OPTION)  # unset: the alphas of the table given
    return resolved


def _as_is(value):
    return value


def option_columns(resolved: Mapping[str, object]) -> dict[str, object]:
    """Resolved options as CSV-friendly scalars (``budgets`` as a JSON string)."""
    out = dict(resolved)
    if "budgets" in out:
        out["budgets"] = json.dumps(out["budgets"])
    return out
