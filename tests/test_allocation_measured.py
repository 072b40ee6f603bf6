"""optimal / hybrid through the common ``allocate`` entry point (cost table in, allocation out)."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.allocation import STRATEGY_PRESETS, allocate, parse_strategy
from acttail_lab.core.errors import AllocationError
from acttail_lab.core.models import PROJECTIONS

LEVELS = (0.2, 0.4, 0.6, 0.8, 0.95)


def _tables(n_layers=3, seed=0):
    rng = np.random.default_rng(seed)
    rows, cost = [], []
    for layer in range(n_layers):
        for i, kind in enumerate(PROJECTIONS):
            name = f"model.layers.{layer}.{kind}"
            n = 100 * (i + 1)
            rows.append(dict(layer=layer, projection=kind, name=name, n_params=n, alpha=2 + rng.random() * 4))
            steep = 0.2 + (i % 3)  # kinds differ in sensitivity
            for s in LEVELS:
                cost.append(dict(layer=layer, projection=kind, name=name, n_params=n, sparsity=s,
                                 rel_error=min(1.0, steep * s ** 2)))
    return pd.DataFrame(rows), pd.DataFrame(cost)


@pytest.mark.parametrize("label", ["surrogate-optimal", "hybrid"])
def test_measured_strategies_meet_target_in_input_order(label):
    table, cost = _tables()
    out = allocate(table, label, 0.6, cost=cost)
    assert list(out["name"]) == list(table["name"])
    mean = np.average(out["sparsity"], weights=out["n_params"])
    assert abs(mean - 0.6) < 1e-9
    assert (out["sparsity"] <= 0.95 + 1e-12).all()
    assert set(out["strategy"]) == {label}


def test_optimal_gives_less_sparsity_to_steeper_costs():
    table, cost = _tables()
    out = allocate(table, "surrogate-optimal", 0.5, cost=cost)
    by_kind = out.groupby("projection")["sparsity"].mean()
    # kinds with i % 3 == 0 have the flattest cost curve (steep=0.2): they get the most sparsity
    assert by_kind["q"] > by_kind["v"]  # q: steep 0.2, v: steep 2.2


def test_measured_strategy_without_cost_names_the_fix():
    table, _ = _tables()
    with pytest.raises(AllocationError, match="cost_table"):
        allocate(table, "surrogate-optimal", 0.5)


def test_presets_and_options_parse():
    assert STRATEGY_PRESETS["surrogate-optimal"].strategy == "surrogate-optimal"
    spec = parse_strategy("surrogate-optimal[s_max=0.9;weight=uniform]")
    assert spec.options["s_max"] == 0.9
    with pytest.raises(AllocationError, match="value"):
        parse_strategy("surrogate-optimal[value=loss]")
