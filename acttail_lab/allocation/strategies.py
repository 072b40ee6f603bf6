"""Relative budgets ("ratios") of each allocation strategy, and their options.

Every strategy here is one plain function ``table -> ratios`` (one non-negative
float per row), registered by ``@register_strategy`` (``registry.py``). The
shared last step, ``solver.solve_scale``, multiplies the ratios by the one
constant that makes the parameter-weighted mean sparsity equal the target (clipping at ``s_max``). So strategies differ only in the
*shape* of the budget, never in its total.

- ``uniform``: r_i = 1.
- ``acttail``: AlphaPruning's ``ww_sparsity`` form,
  r_i = (m_i - m_min) / (m_max - m_min) * 2 eps + (1 - eps), with m_i = mapping(alpha_i):
  higher alpha (lighter tail, less trained) -> more sparsity (``direction="alpha_up"``).
  Option ``fit=winsorise|block-mean`` keeps unreliable alpha fits from driving it (``fit_quality.py``).
- ``shuffled``: the acttail ratios in a random order (a control: same spread, no alpha signal).
- ``kind``: a fixed budget per projection kind (default: TEAL's LLaMA-2-7B means at 50%).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..core.errors import AllocationError
from ..core.reference import TEAL_LLAMA2_7B_50
from .fit_quality import DEFAULT_MIN_TAIL, effective_alphas
from .options import DEFAULT_S_MAX, DIRECTIONS, GRANULARITIES, MAPPINGS, option_columns  # noqa: F401 (re-exported)
from .registry import STRATEGIES, get_strategy, register_strategy  # noqa: F401 (re-exported)

_ACTTAIL_DEFAULTS = dict(epsilon=0.3, granularity="projection", direction="alpha_up", mapping="linear",
                         power=2.0, fit="all", min_tail=DEFAULT_MIN_TAIL, s_max=DEFAULT_S_MAX)


# --------------------------------------------------------------------------- ratio functions
@register_strategy("uniform")
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


@register_strategy("acttail", defaults=_ACTTAIL_DEFAULTS, needs_alpha=True)
def acttail_ratios(table: pd.DataFrame, epsilon: float = 0.3, granularity: str = "projection",
                   direction: str = "alpha_up", mapping: str = "linear", power: float = 2.0,
                   fit: str = "all", min_tail: int = DEFAULT_MIN_TAIL) -> np.ndarray:
    """AlphaPruning's ratios r_i in [1 - eps, 1 + eps] from ``table.alpha``.

    ``direction="alpha_down"`` reverses the order (lowest alpha gets the most
    sparsity): the ablation that tests whether the paper's direction matters.
    ``fit`` (``fit_quality.FIT_MODES``): ``all`` maps every alpha as fitted; ``winsorise`` /
    ``block-mean`` first replace the alphas of unreliable fits (tail shorter than ``min_tail``,
    ``tail_ok`` False, or fragile), so they cannot set the ends of the min-max mapping.
    """
    if fit != "all":
        table = table.assign(alpha=effective_alphas(table, fit, min_tail))
    scores = alpha_scores(table, granularity, mapping, power)
    if direction == "alpha_down":
        scores = -scores
    return spread_ratios(scores, epsilon)


@register_strategy("shuffled", defaults={**_ACTTAIL_DEFAULTS, "seed": 0}, needs_alpha=True)
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


@register_strategy("kind", defaults={"budgets": None, "s_max": DEFAULT_S_MAX})
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


def resolve_options(strategy: str, options: Mapping[str, object]) -> dict[str, object]:
    """Defaults of the registered ``strategy`` overridden by ``options``, each checked (``options.resolve``)."""
    return get_strategy(strategy).resolve(options)
