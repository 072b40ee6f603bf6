"""The ``xmin`` strategy option: the acttail preset follows AlphaPruning's peak rule, acttail-ks is the KS
variant, a run's rule is named in the label when it is not the default, and a table of another rule is refused."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.allocation import STRATEGY_PRESETS, allocate, parse_strategy
from acttail_lab.allocation.options import DEFAULT_XMIN
from acttail_lab.allocation.presets import with_xmin
from acttail_lab.core.errors import AllocationError
from acttail_lab.measure.grid import alpha_tables, fix_xmin, table_key


def _table(rule):
    rng = np.random.default_rng(0)
    n = 14
    table = pd.DataFrame(dict(layer=np.repeat([0, 1], 7), projection=["q", "k", "v", "o", "gate", "up", "down"] * 2,
                              name=[f"m{i}" for i in range(n)], n_params=rng.integers(100, 1000, n),
                              alpha=rng.uniform(2, 6, n)))
    table["xmin_rule"] = rule
    return table


def test_presets_name_their_rule():
    assert DEFAULT_XMIN == "peak"
    assert "xmin" not in STRATEGY_PRESETS["acttail"].resolved  # the run's rule: peak unless told otherwise
    assert STRATEGY_PRESETS["acttail-ks"].resolved["xmin"] == "ks"
    assert parse_strategy("acttail[xmin=median]").resolved["xmin"] == "median"
    with pytest.raises(AllocationError, match="xmin='kss' is not one of"):
        parse_strategy("acttail[xmin=kss]")


def test_with_xmin_labels_only_other_rules():
    assert with_xmin(STRATEGY_PRESETS["acttail"], "peak").label == "acttail"
    ks = with_xmin(STRATEGY_PRESETS["acttail-block"], "ks")
    assert ks.label == "acttail-block[xmin=ks]" and ks.resolved["xmin"] == "ks"
    assert ks.resolved["granularity"] == "block"
    assert with_xmin(STRATEGY_PRESETS["acttail-ks"], "peak").resolved["xmin"] == "ks"  # names its own rule
    assert with_xmin(STRATEGY_PRESETS["uniform"], "ks").label == "uniform"  # reads no alpha


def test_allocate_refuses_a_table_of_another_rule():
    spec = STRATEGY_PRESETS["acttail-ks"]
    with pytest.raises(AllocationError, match="xmin=ks alphas but the table was made with xmin=peak"):
        allocate(_table("peak"), spec, 0.5)
    ks = allocate(_table("ks"), spec, 0.5)
    plain = allocate(_table("ks"), "acttail", 0.5)  # unnamed rule: the table's alphas, same budgets
    assert np.allclose(ks.sparsity, plain.sparsity)
    assert (ks["xmin"] == "ks").all()


def test_fix_xmin_and_one_table_per_rule():
    specs = fix_xmin([parse_strategy(s) for s in ("uniform", "acttail", "acttail-ks", "shuffled")], "peak")
    assert [s.label for s in specs] == ["uniform", "acttail", "acttail-ks", "shuffled"]
    assert [table_key(s) for s in specs] == [None, ("plain", "peak"), ("plain", "ks"), ("plain", "peak")]
    with pytest.raises(AllocationError, match="not an xmin rule"):
        fix_xmin(specs, "pk")


def test_alpha_tables_compute_each_rule_once(monkeypatch):
    import acttail_lab.spectral.spectra as spectra

    calls = []
    monkeypatch.setattr(spectra, "analyze", lambda model, xmin, progress, estimator: calls.append((estimator, xmin))
                        or _table(xmin))
    monkeypatch.setattr("acttail_lab.measure.grid.projection_table", lambda model: "projections")
    specs = fix_xmin([parse_strategy(s) for s in ("uniform", "acttail", "acttail-block", "acttail-ks")], "peak")
    tables = alpha_tables(object(), specs)
    assert calls == [("plain", "peak"), ("plain", "ks")]
    assert tables[None] == "projections" and set(tables) == {None, ("plain", "peak"), ("plain", "ks")}


def test_old_optimal_name_points_to_the_new_one():
    with pytest.raises(AllocationError, match=r"'optimal' was renamed 'surrogate-optimal'.*surrogate-optimal\[s_max=0.9\]"):
        parse_strategy("optimal[s_max=0.9]")
    assert parse_strategy("surrogate-optimal").strategy == "surrogate-optimal"


def test_run_labels_name_the_rule_of_every_row_that_does_not_use_the_default():
    from acttail_lab.report.results import run_labels

    runs = pd.DataFrame(dict(strategy=["uniform", "acttail", "acttail-ks"], xmin_rule=[None, "peak", "ks"]))
    assert run_labels(runs).tolist() == ["uniform", "acttail", "acttail-ks"]
    old = pd.DataFrame(dict(strategy=["acttail", "acttail"], xmin_rule=["ks", "peak"]))
    assert run_labels(old).tolist() == ["acttail-ks", "acttail"]  # a label is a function of the settings
