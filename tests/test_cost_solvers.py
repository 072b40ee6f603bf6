"""Solvers on measured cost curves: exact target, optimality, errors (pure numpy, hand-made tables)."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.allocation import allocate
from acttail_lab.allocation.cost_solvers import (
    CostCurves,
    hybrid_allocation,
    kind_budgets,
    optimal_allocation,
)
from acttail_lab.core.errors import AllocationError
from acttail_lab.core.models import PROJECTIONS

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def identity(n_layers: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [dict(layer=layer, projection=kind, name=f"l{layer}.{kind}",
                 n_params=int(rng.integers(1, 20)) * 1000) for layer in range(n_layers) for kind in PROJECTIONS]
    return pd.DataFrame(rows)


def convex_costs(ident: pd.DataFrame, grid=GRID, seed: int = 0, value: str = "rel_error") -> pd.DataFrame:
    """Random increasing convex curves through (0, 0): cumulative sums of increasing slopes."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([[0.0], grid])
    rows = []
    for row in ident.to_dict("records"):
        slopes = np.sort(rng.uniform(0.01, 2.0, len(grid))) * rng.uniform(0.2, 3.0)
        y = np.concatenate([[0.0], np.cumsum(slopes * np.diff(x))])
        rows += [dict(row, sparsity=s, **{value: v}) for s, v in zip(x[1:], y[1:])]
    return pd.DataFrame(rows)


def weighted_mean(alloc: pd.DataFrame) -> float:
    return float(np.dot(alloc["sparsity"], alloc["n_params"]) / alloc["n_params"].sum())


@pytest.mark.parametrize("target", [0.0, 0.13, 0.5, 0.8, 0.95])
def test_optimal_hits_target_exactly(target):
    cost = convex_costs(identity(6))
    alloc = optimal_allocation(cost, target, s_max=0.95)
    assert abs(weighted_mean(alloc) - target) < 1e-9
    assert alloc["sparsity"].between(0, 0.95 + 1e-12).all()
    assert list(alloc.columns[:6]) == ["layer", "projection", "name", "n_params", "ratio", "sparsity"]
    assert (alloc["strategy"] == "surrogate-optimal").all() and (alloc["target"] == target).all()


@pytest.mark.parametrize("weight", ["n_params", "uniform"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimal_beats_uniform_and_acttail(seed, weight):
    ident = identity(8, seed)
    cost = convex_costs(ident, seed=seed)
    curves = CostCurves.from_table(cost).convexified(0.95)
    table = ident.assign(alpha=np.random.default_rng(seed).uniform(2, 6, len(ident)))
    for target in (0.3, 0.5, 0.8):
        best = curves.total(curves.align(optimal_allocation(cost, target, weight=weight)), weight)
        for strategy, options in (("uniform", {}), ("acttail", {"s_max": 0.95}),
                                  ("acttail", {"s_max": 0.95, "granularity": "block", "epsilon": 0.5})):
            other = allocate(table, strategy, target, **options)
            assert abs(weighted_mean(other) - target) < 1e-9
            assert best <= curves.total(curves.align(other), weight) + 1e-12
        # and strictly better than uniform for these heterogeneous curves
        assert best < curves.total(np.full(len(ident), target), weight) - 1e-6


def test_optimal_equals_brute_force_on_tiny_problem():
    """3 projections, non-convex measured curves: greedy on the envelope == exhaustive search."""
    grid = np.round(np.arange(0.05, 1.0001, 0.05), 10)
    ident = pd.DataFrame(dict(layer=[0, 0, 0], projection=["q", "k", "v"], name=["a", "b", "c"],
                              n_params=[3000, 1000, 2000]))
    rng = np.random.default_rng(7)
    rows = []
    for row in ident.to_dict("records"):
        y = np.cumsum(rng.uniform(0, 1, len(grid)) ** 2) * rng.uniform(0.5, 2)  # increasing, not convex
        rows += [dict(row, sparsity=s, loss_increase=v) for s, v in zip(grid, y)]
    cost = pd.DataFrame(rows)
    target, s_max = 0.55, 0.9
    alloc = optimal_allocation(cost, target, s_max=s_max, value="loss_increase")
    env = CostCurves.from_table(cost, "loss_increase").convexified(s_max)
    best = env.total(alloc["sparsity"].to_numpy())

    p = ident["n_params"].to_numpy(float)
    lattice = np.round(np.arange(0, s_max + 1e-9, 0.0025), 10)
    s1, s2 = (a.ravel() for a in np.meshgrid(lattice, lattice))
    s3 = (target * p.sum() - p[0] * s1 - p[1] * s2) / p[2]
    ok = (s3 >= 0) & (s3 <= s_max)
    each = [np.interp(s[ok], env.grid, env.values[i]) for i, s in enumerate((s1, s2, s3))]
    brute = float(np.min(sum(w * c for w, c in zip(p, each)) / p.sum()))  # n_params-weighted mean
    assert best <= brute + 1e-12
    assert best == pytest.approx(brute, abs=2e-3)
    # the raw (non-convex) curve is never below its envelope
    raw = CostCurves.from_table(cost, "loss_increase")
    for s in env.grid:
        assert np.all(env.evaluate_all(s) <= raw.evaluate_all(s) + 1e-12)


def test_lower_envelope_by_hand():
    ident = pd.DataFrame(dict(layer=[0], projection=["q"], name=["a"], n_params=[10]))
    # points (0,0) (0.25,0.5) (0.5,0.2) (0.75,0.9): envelope at 0.25 is the chord 0 -> 0.5: 0.1
    cost = pd.DataFrame([dict(ident.iloc[0], sparsity=s, loss_increase=v)
                         for s, v in [(0.25, 0.5), (0.5, 0.2), (0.75, 0.9)]])
    env = CostCurves.from_table(cost, "loss_increase").convexified()
    np.testing.assert_allclose(env.values[0], [0.0, 0.1, 0.2, 0.9])
    cut = CostCurves.from_table(cost, "loss_increase").convexified(0.6)  # s_max inside a segment
    np.testing.assert_allclose(cut.grid, [0, 0.25, 0.5, 0.6])
    np.testing.assert_allclose(cut.values[0], [0.0, 0.1, 0.2, 0.2 + 0.1 * 0.7 / 0.25])


def test_relative_error_curves_are_anchored_at_zero_and_one():
    cost = convex_costs(identity(1))
    curves = CostCurves.from_table(cost)
    assert curves.grid[0] == 0 and curves.grid[-1] == 1
    np.testing.assert_allclose(curves.values[:, 0], 0)
    np.testing.assert_allclose(curves.values[:, -1], 1)


def test_errors_name_the_fix():
    cost = convex_costs(identity(2))
    with pytest.raises(AllocationError, match="Fix"):
        optimal_allocation(cost, 0.97, s_max=0.95)  # impossible under s_max
    with pytest.raises(AllocationError, match=r"lacks column.*Fix"):
        optimal_allocation(cost.drop(columns="n_params"), 0.5)
    with pytest.raises(AllocationError, match="Fix"):
        optimal_allocation(cost, 0.5, value="loss_increase")  # no such column
    loss = cost.rename(columns={"rel_error": "loss_increase"})
    with pytest.raises(AllocationError, match="beyond the largest sparsity"):
        optimal_allocation(loss, 0.5, s_max=0.99, value="loss_increase")
    with pytest.raises(AllocationError, match="same sparsity grid"):
        optimal_allocation(cost.iloc[1:], 0.5)
    with pytest.raises(AllocationError, match="weight"):
        optimal_allocation(cost, 0.5, weight="mass")


def test_hybrid_uses_layer_alpha_and_kind_budgets():
    ident = identity(5)
    cost = convex_costs(ident, seed=3)
    alpha = np.repeat(np.linspace(2.0, 5.0, 5), len(PROJECTIONS))  # layer mean alpha rises with depth
    table = ident.assign(alpha=alpha)
    alloc = hybrid_allocation(table, cost, 0.5, epsilon=0.3, s_max=0.95)
    assert abs(weighted_mean(alloc) - 0.5) < 1e-9
    budgets = kind_budgets(cost, 0.5)
    for kind, part in alloc.groupby("projection"):
        # same kind: more sparsity where the layer alpha is higher (alpha_up), unless clipped
        s = part.sort_values("layer")["sparsity"].to_numpy()
        assert np.all(np.diff(s) >= -1e-12)
    layer0 = alloc[alloc["layer"] == 2].set_index("projection")["ratio"]
    ratio = layer0 / layer0["q"]
    for kind in PROJECTIONS:
        assert ratio[kind] == pytest.approx(budgets[kind] / budgets["q"])


@pytest.mark.parametrize("strategy", ["surrogate-optimal", "hybrid"])
def test_shuffled_cost_rows_give_the_same_allocation(strategy):
    """The cost table's row order (levels and projections) must not matter (was: levels taken in row order)."""
    ident = identity(3)
    cost = convex_costs(ident)
    shuffled = cost.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert shuffled["sparsity"].iloc[:7].tolist() != sorted(shuffled["sparsity"].iloc[:7])  # really shuffled
    table = ident.assign(alpha=np.linspace(2.0, 6.0, len(ident)))
    for target in (0.3, 0.6):
        a = allocate(table, strategy, target, cost=cost).set_index("name")
        b = allocate(table, strategy, target, cost=shuffled).set_index("name")
        np.testing.assert_allclose(b.loc[a.index, "sparsity"], a["sparsity"], rtol=0, atol=1e-12)
