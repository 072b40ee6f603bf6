"""Measured sensitivity: TopK output errors, caching, calibration split, correlations, cost estimate."""
import numpy as np
import pandas as pd
import pytest
import torch

from acttail_lab.allocation.cost_model import cost_curves, estimate_cost
from acttail_lab.allocation.cost_solvers import optimal_allocation
from acttail_lab.core.errors import AllocationError
from acttail_lab.core.models import (
    PROJECTIONS,
    LoadedModel,
    iter_projections,
    random_model,
)
from acttail_lab.measure import sensitivity
from acttail_lab.measure.sensitivity import (
    capture_inputs,
    cost_table,
    loss_increase_table,
    mean_nll,
)
from acttail_lab.report.correlations import sensitivity_summary, spectral_correlations
from acttail_lab.sparsify.topk import topk_sparsify

LEVELS = (0.0, 0.2, 0.5, 0.8, 0.95)


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0)


@pytest.fixture(scope="module")
def windows():
    return torch.randint(0, 256, (3, 48), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def private_cache(request, tmp_path, monkeypatch):
    """A fresh cache per test (real-model tests keep the shared cache that holds the model)."""
    if request.node.get_closest_marker("real") is None:
        monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def table(model, windows):
    return cost_table(model, windows, sparsities=LEVELS, cache=False, progress=False)


def test_capture_subsamples_the_same_positions_everywhere(model, windows):
    full = capture_inputs(model, windows, max_tokens=10_000)
    sub = capture_inputs(model, windows, max_tokens=50, seed=3)
    picks = sensitivity._token_picks(windows.numel(), 50, 3)
    names = [row["name"] for row, _ in iter_projections(model)]
    assert list(sub) == names
    for name in names:
        assert full[name].shape[0] == windows.numel()
        torch.testing.assert_close(sub[name], full[name][picks])
    q, k, v, o, gate, up, down = names[:7]
    assert sub[q] is sub[k] is sub[v] and sub[gate] is sub[up] and sub[o] is not sub[q]
    assert sub[down].shape == (50, model.config.intermediate_size)


def test_rel_error_is_zero_at_zero_and_grows(table):
    assert len(table) == 14 * len(LEVELS)
    for _, curve in table.groupby("name"):
        curve = curve.sort_values("sparsity")
        for col in ("rel_error", "rel_error_token", "rel_input_error"):
            values = curve[col].to_numpy()
            assert values[0] == 0.0
            assert np.all(np.diff(values) > 0), col
            assert values[-1] < 1.0
    assert (table["keep"] == [round((1 - s) * d) for s, d in zip(table["sparsity"], table["d_in"])]).all()


@pytest.mark.parametrize("kind", ["gate", "k", "down"])  # Gram route (d_out > d_in) and direct route
def test_rel_error_matches_hand_computation(model, windows, table, kind):
    row, module = next((r, m) for r, m in iter_projections(model) if r["projection"] == kind and r["layer"] == 1)
    x = capture_inputs(model, windows)[row["name"]].double()
    w = module.weight.detach().double()
    for s in (0.5, 0.8):
        r = x - topk_sparsify(x, round((1 - s) * x.shape[1]))
        per_token = (r @ w.T).norm(dim=1) / (x @ w.T).norm(dim=1)
        expected = dict(rel_error=((r @ w.T).norm() / (x @ w.T).norm()).item(),
                        rel_error_token=per_token.square().mean().sqrt().item(),
                        rel_input_error=(r.norm() / x.norm()).item())
        got = table[(table["name"] == row["name"]) & (table["sparsity"] == s)].iloc[0]
        for col, value in expected.items():
            assert got[col] == pytest.approx(value, rel=1e-5), col


def test_cost_table_cache_hit(model, windows, monkeypatch, tmp_path):
    first = cost_table(model, windows, sparsities=(0.5, 0.9), progress=False)
    files = list((tmp_path / "cache" / "sensitivity").glob("cost-*.csv"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite a cache hit")

    monkeypatch.setattr(sensitivity, "capture_inputs", boom)
    second = cost_table(model, windows, sparsities=(0.5, 0.9), progress=False)
    pd.testing.assert_frame_equal(first, second)
    with pytest.raises(AssertionError, match="recomputed"):  # other levels: a new key
        cost_table(model, windows, sparsities=(0.5, 0.8), progress=False)


def test_default_windows_come_from_the_calibration_split(model, monkeypatch, char_tokenizer):
    seen = []

    def fake_corpus_text(name="austen", split="evaluation"):
        seen.append(split)
        return "calibration text " * 50

    monkeypatch.setattr(sensitivity, "corpus_text", fake_corpus_text)
    loaded = LoadedModel(model=model, tokenizer=char_tokenizer(), name="tiny", source="random")
    cost_table(loaded, sparsities=(0.5,), window=32, n_tokens=64, cache=False, progress=False)
    loss_increase_table(loaded, names=[], window=32, n_tokens=32, cache=False, progress=False)
    assert seen == ["calibration", "calibration"]


def test_loss_increase_rows_are_cached_and_resumed(model, windows, monkeypatch):
    names = [row["name"] for row, _ in iter_projections(model)]
    first = loss_increase_table(model, windows[:2], names=names[:2], sparsities=(0.5, 0.9), progress=False)
    assert len(first) == 4
    dense = mean_nll(model, windows[:2])
    assert first["dense_loss"].to_numpy() == pytest.approx(dense)
    assert first["loss_increase"].to_numpy() == pytest.approx((first["loss"] - first["dense_loss"]).to_numpy())
    assert first["loss_increase"].abs().max() > 0

    calls = []
    real = sensitivity.mean_nll
    monkeypatch.setattr(sensitivity, "mean_nll", lambda m, w: calls.append(1) or real(m, w))
    again = loss_increase_table(model, windows[:2], names=names[:3], sparsities=(0.5, 0.9), progress=False)
    assert len(calls) == 2  # only the new projection's two levels ran (dense loss cached too)
    pd.testing.assert_frame_equal(again.iloc[:4].reset_index(drop=True), first)


def test_estimate_cost_is_monotone_and_exact_on_the_grid(table):
    curves = cost_curves(table)
    base = table.drop_duplicates("name")[["layer", "projection", "name", "n_params"]]
    levels = np.linspace(0, 0.95, 20)
    estimates = [estimate_cost(base.assign(sparsity=s), curves) for s in levels]
    assert np.all(np.diff(estimates) > 0)
    at = table[table["sparsity"] == 0.5]
    expected = np.dot(at["rel_error"], at["n_params"]) / at["n_params"].sum()
    assert estimate_cost(base.assign(sparsity=0.5), table) == pytest.approx(expected)
    assert estimate_cost(base.assign(sparsity=0.5), curves, weight="uniform") == pytest.approx(at["rel_error"].mean())
    # between grid points: linear interpolation; past the last level: towards rel_error(1) = 1
    mid = estimate_cost(base.assign(sparsity=0.65), curves)
    assert mid == pytest.approx((expected + estimate_cost(base.assign(sparsity=0.8), curves)) / 2)
    assert estimate_cost(base.assign(sparsity=0.999), curves) < 1.0


def test_estimate_cost_of_the_optimal_is_lowest(table):
    base = table.drop_duplicates("name")[["layer", "projection", "name", "n_params"]]
    opt = optimal_allocation(table, 0.5, s_max=0.95)
    assert estimate_cost(opt, table) <= estimate_cost(base.assign(sparsity=0.5), table) + 1e-12


def test_estimate_cost_errors_name_the_fix(table):
    with pytest.raises(AllocationError, match="Fix"):
        estimate_cost(pd.DataFrame({"name": ["x"], "sparsity": [0.5]}), table)
    with pytest.raises(AllocationError, match="lacks column"):
        estimate_cost(table.drop_duplicates("name")[["name"]], table)


def synthetic(n_layers=12, seed=0):
    """Hand-made cost table and spectra: alpha decreases exactly with rel_error@0.5; noise metric."""
    rng = np.random.default_rng(seed)
    rows, spectra = [], []
    for layer in range(n_layers):
        for kind in PROJECTIONS:
            name = f"l{layer}.{kind}"
            scale = rng.uniform(0.1, 1.0)
            ident = dict(layer=layer, projection=kind, name=name, n_params=1000)
            rows += [dict(ident, sparsity=s, rel_error=scale * s ** 2) for s in (0.25, 0.5, 0.8)]
            spectra.append(dict(ident, alpha=2 + 1 / scale, stable_rank=rng.normal()))
    return pd.DataFrame(rows), pd.DataFrame(spectra)


def test_spectral_correlations_on_synthetic_data():
    cost, spectra = synthetic()
    corr = spectral_correlations({"ks": spectra, "peak": spectra.assign(alpha=-spectra["alpha"])}, cost,
                                 metrics=("alpha", "stable_rank", "lambda_max"), at=(0.5,))
    assert set(corr.columns) >= {"rule", "metric", "sensitivity", "group_by", "group", "rho", "p_value", "n"}
    assert "lambda_max" not in set(corr["metric"])  # missing metrics are skipped
    overall = corr[(corr.group_by == "all") & (corr.metric == "alpha")].set_index(["rule", "sensitivity"])
    assert overall.loc[("ks", "rel_error@0.5"), "rho"] == pytest.approx(-1.0)
    assert overall.loc[("peak", "rel_error_auc"), "rho"] == pytest.approx(1.0)
    assert overall.loc[("ks", "rel_error@0.5"), "n"] == 84
    within = corr[(corr.group_by == "projection") & (corr.metric == "alpha") & (corr.rule == "ks")]
    assert set(within["group"]) == set(PROJECTIONS) and (within["n"] == 12).all()
    assert np.allclose(within["rho"], -1.0)
    by_layer = corr[(corr.group_by == "layer") & (corr.rule == "ks") & (corr.metric == "alpha")]
    assert len(by_layer) == 12 * 2 and (by_layer["n"] == 7).all()
    noise = corr[(corr.group_by == "all") & (corr.metric == "stable_rank")]
    assert noise["rho"].abs().max() < 0.35
    # matches scipy on one random pairing
    from scipy.stats import spearmanr
    summary = sensitivity_summary(cost, at=(0.5,)).merge(spectra, on="name")
    row = corr[(corr.group_by == "all") & (corr.metric == "stable_rank") & (corr.rule == "ks")
               & (corr.sensitivity == "rel_error@0.5")].iloc[0]
    assert row["rho"] == pytest.approx(spearmanr(summary["stable_rank"], summary["rel_error@0.5"]).statistic)


def test_spectral_correlations_reject_bad_grouping():
    cost, spectra = synthetic(3)
    with pytest.raises(AllocationError, match="by="):
        spectral_correlations(spectra, cost, by="head")


@pytest.mark.real
def test_real_model_cost_table_few_tokens(real_model):
    windows = sensitivity.calibration_windows(real_model.tokenizer, window=64, n_tokens=64)
    table = cost_table(real_model, windows, sparsities=(0.5,), cache=False, progress=False)
    assert len(table) == 210 and table["n_tokens"].eq(64).all()
    assert table["rel_error"].between(0.001, 1).all() and table["rel_error_token"].between(0.01, 1).all()
    # massive activations: layer 11 down's pooled error is dominated by the first token
    down11 = table[(table["layer"] == 11) & (table["projection"] == "down")].iloc[0]
    assert down11["rel_error_token"] > 5 * down11["rel_error"]
