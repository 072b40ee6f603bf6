"""``allocate``: a projection table in, an allocation table out."""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..core.errors import AllocationError
from .options import ESTIMATOR_OPTION, XMIN_OPTION
from .presets import StrategySpec, make_spec
from .solver import check_fraction
from .tables import validate_table


def allocate(table: pd.DataFrame, strategy: str | StrategySpec, target: float, *,
             label: str | None = None, cost: pd.DataFrame | None = None,
             greedy_path: pd.DataFrame | None = None, inputs: Mapping[str, object] | None = None,
             **options) -> pd.DataFrame:
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
    data) that the ``surrogate-optimal`` and ``hybrid`` strategies are solved from.
    ``greedy_path``: the path of ``teal_greedy.greedy_path`` (calibration data)
    that the ``teal-greedy`` strategy reads its sparsities from.
    ``inputs``: every measured table by input name (``{"cost": ..., "greedy_path": ...}``);
    ``cost`` and ``greedy_path`` are shorthands for two of them. What a strategy reads, and how
    it turns the table into budgets, is its registry entry's (``registry.StrategyEntry``).
    """
    target = check_fraction(target)
    spec = make_spec(strategy, options, label)
    entry = spec.entry
    validate_table(table, entry.needs_alpha)
    if entry.needs_alpha:
        check_estimator_matches(table, spec.resolved[ESTIMATOR_OPTION])
        check_xmin_matches(table, spec.resolved.get(XMIN_OPTION))
    measured = {**(inputs or {}), **{k: v for k, v in (("cost", cost), ("greedy_path", greedy_path)) if v is not None}}
    return entry.allocate(table, spec, target, measured)


def check_xmin_matches(table: pd.DataFrame, rule: str | None) -> None:
    """AllocationError when the strategy names an xmin ``rule`` and ``table`` was made with another
    (``xmin_rule`` attr or single-valued column, set by ``spectra.analyze``). An unnamed rule, or a table
    that does not say, is taken as given."""
    made = table.attrs.get("xmin_rule")
    if made is None and "xmin_rule" in table.columns and table["xmin_rule"].nunique() == 1:
        made = table["xmin_rule"].iloc[0]
    made = None if made is None else str(made).removeprefix("xmin_")  # published tables say "xmin_peak"
    if rule is not None and made is not None and made != rule:
        raise AllocationError(f"The strategy asks for xmin={rule} alphas but the table was made with xmin={made}. "
                              f"Fix: pass spectra.analyze(model, xmin={rule!r}), or drop xmin from the strategy.")


def check_estimator_matches(table: pd.DataFrame, estimator: str) -> None:
    """AllocationError when ``table`` says it was made with another estimator (``table.attrs["estimator"]``,
    set by ``spectra.analyze``). A table that does not say (published alphas, a CSV read back) is taken as
    given: its alphas are whatever the caller computed."""
    made = table.attrs.get("estimator")
    if made is not None and made != estimator:
        raise AllocationError(f"The strategy asks for estimator={estimator} alphas but the table was made with "
                              f"estimator={made}. Fix: pass spectra.analyze(model, estimator={estimator!r}).")
