"""Fit quality beside each budget, and the fit option that keeps unreliable fits out of the min-max mapping."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.allocation import allocate, weighted_mean
from acttail_lab.allocation.fit_quality import effective_alphas, fit_quality_table, unreliable
from acttail_lab.core.errors import AllocationError


def _table():
    """Two layers x 7 kinds; three short-tail fits, one of them the largest alpha and one the smallest."""
    kinds = ["q", "k", "v", "o", "gate", "up", "down"]
    rows = []
    rng = np.random.default_rng(0)
    for layer in range(2):
        for kind in kinds:
            rows.append({"layer": layer, "projection": kind, "name": f"l{layer}.{kind}", "d_out": 64,
                         "d_in": 64 if kind != "down" else 160, "alpha": float(rng.uniform(2.5, 5.0)),
                         "n_tail": 60, "tail_ok": True, "sigma": 0.3})
    table = pd.DataFrame(rows)
    table["n_params"] = table["d_out"] * table["d_in"]
    table.loc[3, ["alpha", "n_tail"]] = [22.0, 9]   # l0.o: the collapsing case, alpha 22 from 9 eigenvalues
    table.loc[10, ["alpha", "n_tail", "tail_ok"]] = [1.2, 4, False]  # l1.v
    table.loc[12, ["alpha", "n_tail"]] = [4.0, 15]  # l1.up: short, but inside the reliable range
    return table


def test_flags_short_tails_and_fragile_fits():
    table = _table()
    assert list(np.flatnonzero(unreliable(table))) == [3, 10, 12]
    assert list(np.flatnonzero(unreliable(table, min_tail=10))) == [3, 10]
    fragile = table.assign(fragile=False)
    fragile.loc[0, "fragile"] = True
    assert unreliable(fragile)[0]


@pytest.mark.parametrize("fit", ["winsorise", "block-mean"])
def test_only_flagged_alphas_change(fit):
    table = _table()
    flagged = unreliable(table)
    eff = effective_alphas(table, fit)
    assert np.array_equal(eff[~flagged], table["alpha"].to_numpy()[~flagged])
    assert not np.allclose(eff[flagged], table["alpha"].to_numpy()[flagged])
    good = table["alpha"].to_numpy()[~flagged]
    assert good.min() <= eff.min() and eff.max() <= good.max()  # the reliable fits now set the range
    if fit == "block-mean":
        assert eff[3] == pytest.approx(table.loc[[0, 1, 2, 4, 5, 6], "alpha"].mean())


@pytest.mark.parametrize("target", [0.5, 0.7])
@pytest.mark.parametrize("fit", ["winsorise", "block-mean"])
def test_budgets_change_and_the_target_holds(fit, target):
    table = _table()
    plain = allocate(table, "acttail", target).set_index("name")["sparsity"]
    robust = allocate(table, f"acttail[fit={fit}]", target).set_index("name")["sparsity"]
    weights = table.set_index("name")["n_params"]
    assert weighted_mean(robust.to_numpy(), weights.loc[robust.index].to_numpy()) == pytest.approx(target, abs=1e-9)
    assert robust["l0.o"] < plain["l0.o"] - 0.05  # the alpha-22 short-tail fit no longer gets the top budget
    assert robust["l0.o"] <= robust.max() + 1e-12
    # the reliable fits keep their order: their alphas did not change
    reliable = table.loc[~unreliable(table), "name"]
    assert (robust.loc[reliable].rank() == plain.loc[reliable].rank()).all()


def test_nothing_flagged_means_identical_budgets():
    table = _table()
    table["n_tail"], table["tail_ok"] = 60, True
    plain = allocate(table, "acttail", 0.6)["sparsity"].to_numpy()
    assert np.array_equal(allocate(table, "acttail-fit", 0.6)["sparsity"].to_numpy(), plain)


def test_options_are_checked():
    table = _table()
    with pytest.raises(AllocationError, match="fit="):
        allocate(table, "acttail[fit=robust]", 0.5)
    with pytest.raises(AllocationError, match="min_tail"):
        allocate(table, "acttail[min_tail=30]", 0.5)  # only with fit=winsorise / block-mean
    with pytest.raises(AllocationError, match="min_tail"):
        allocate(table, "acttail[fit=winsorise;min_tail=0]", 0.5)
    with pytest.warns(UserWarning, match="no fit details"):  # published alphas: nothing can be flagged
        bare = allocate(table.drop(columns=["n_tail"]), "acttail-fit", 0.5)
    assert np.array_equal(bare["sparsity"], allocate(table, "acttail", 0.5)["sparsity"])
    with pytest.raises(AllocationError, match="spectra.analyze"):
        fit_quality_table(table.drop(columns=["n_tail"]))
    with pytest.raises(AllocationError, match="All 14"):
        allocate(table, "acttail[fit=winsorise;min_tail=100]", 0.5)


def test_quality_table_beside_budgets():
    table = _table()
    alloc = allocate(table, "acttail", 0.6)
    out = fit_quality_table(table, alloc)
    assert list(out.columns) == ["layer", "projection", "name", "alpha", "n_tail", "tail_ok", "alpha_lo", "alpha_hi",
                                 "interval", "unreliable", "sparsity", "strategy"]
    assert out["interval"].iloc[0] == "hill-se 90%"
    assert out.loc[3, "alpha_lo"] == pytest.approx(22.0 - 1.6448536 * 0.3)
    assert out.set_index("name")["sparsity"].equals(alloc.set_index("name")["sparsity"])
    boot = fit_quality_table(table.assign(alpha_lo=1.0, alpha_hi=9.0))
    assert boot["interval"].iloc[0] == "bootstrap 90%" and (boot["alpha_hi"] == 9.0).all()
    with pytest.raises(AllocationError, match="no budget"):
        fit_quality_table(table, alloc.iloc[1:])


def test_committed_fitquality_rows_match_the_committed_grid():
    """Same model, text, windows and protocol as the perplexity grid: its shared rows must agree."""
    from acttail_lab.core.paths import result_path

    path, grid_path = result_path("perplexity_fitquality"), result_path("perplexity")
    if not path.exists() or not grid_path.exists():
        pytest.skip("committed tables not present")
    runs, grid = pd.read_csv(path), pd.read_csv(grid_path)
    from acttail_lab.core.results_io import read_sidecar
    from acttail_lab.report.noise_floor import numeric_floor

    # exact on the same CPU kernels; across CPUs within the measured numeric floor at each target (dense: 1e-4)
    same_host = read_sidecar(path).get("device") == read_sidecar(grid_path).get("device")

    def agree(table, exact_rtol):
        rtol = [exact_rtol if same_host or s == 0 else numeric_floor(s) / 100 for s in table["sparsity"]]
        return bool(np.all(np.abs(table["perplexity"] / table["perplexity_grid"] - 1) <= np.array(rtol) + 1e-12))
    assert set(runs["strategy"]) == {"dense", "uniform", "acttail[xmin=ks]", "acttail-fit[xmin=ks]",
                                     "acttail[fit=block-mean;xmin=ks]"}
    ks = runs[runs["strategy"] == "acttail[xmin=ks]"].merge(grid, on="sparsity", suffixes=("", "_grid"))
    ks = ks[ks["strategy_grid"] == "acttail-ks"]  # the same KS allocation under its preset name
    assert len(ks) == 3 and agree(ks, 1e-9)
    assert (runs["tokens"] == 16352).all()
    fitted = runs[runs["strategy"] != "dense"]
    assert np.allclose(fitted["realised_sparsity"], fitted["sparsity"], atol=2e-3)
    plain = runs[runs["strategy"].isin(["dense", "uniform"])]  # rows that do not depend on the alphas' rule
    shared = plain.merge(grid, on=["strategy", "sparsity"], suffixes=("", "_grid"))
    assert len(shared) == 4  # dense + uniform at 50/60/70%
    assert agree(shared, 1e-4)
