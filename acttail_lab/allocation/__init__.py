"""Turn per-projection alphas into per-projection sparsity budgets (pure: tables in, tables out).

``allocate(table, strategy, target, **options)`` returns one sparsity per
projection whose parameter-weighted mean equals ``target`` exactly. Strategies
(``strategies.py``) only shape the relative budget; ``solver.solve_scale``
scales it to the target, clipping at ``s_max`` and re-solving so the clipped
mass goes to the other projections. See docs/method.md, "Alpha to sparsity".
"""
from ..core.reference import with_alphas
from .core import allocate
from .fit_quality import effective_alphas, fit_quality_table, unreliable
from .presets import (
    STRATEGY_PRESETS,
    StrategySpec,
    parse_strategies,
    parse_strategy,
    presets_help,
)
from .registry import (
    CostStrategy,
    PathStrategy,
    RatioStrategy,
    Registry,
    StrategyEntry,
    get_strategy,
    register_strategy,
)
from .solver import max_achievable, solve_scale, weighted_mean
from .strategies import (
    DEFAULT_S_MAX,
    STRATEGIES,
    acttail_ratios,
    kind_ratios,
    shuffled_ratios,
    uniform_ratios,
)
from .tables import (
    check_matches,
    load_allocation,
    load_alpha_table,
    save_allocation,
    summary,
    validate_table,
)

__all__ = [
    "allocate", "fit_quality_table", "effective_alphas", "unreliable", "STRATEGY_PRESETS", "StrategySpec", "parse_strategies", "parse_strategy", "presets_help",
    "max_achievable", "solve_scale", "weighted_mean", "DEFAULT_S_MAX", "STRATEGIES", "acttail_ratios",
    "kind_ratios", "shuffled_ratios", "uniform_ratios", "check_matches", "load_alpha_table",
    "load_allocation", "save_allocation", "summary", "validate_table", "with_alphas",
    "CostStrategy", "PathStrategy", "RatioStrategy", "Registry", "StrategyEntry", "get_strategy", "register_strategy",
]
