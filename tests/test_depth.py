"""Depth utilisation (acttail_lab.measure.depth) and its plots: checked on the random tiny model against
independent computations (HF hidden states, a model with the layer removed, autograd's jvp),
on an exactly-identity layer, and on synthetic tables."""
import copy
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.axes import Axes

from acttail_lab.core.cache import cache_dir
from acttail_lab.core.errors import DepthError
from acttail_lab.core.models import decoder_layers, projection_table, random_model
from acttail_lab.core.results_io import write_results
from acttail_lab.measure import depth, depth_profile, skip_layer
from acttail_lab.measure import grid as evaluation
from acttail_lab.measure.perplexity import perplexity
from acttail_lab.plots.style import strategy_style
from acttail_lab.plots.depth import (
    plot_budget_vs_score,
    plot_layer_scores,
    plot_variance_profiles,
)
from acttail_lab.report import depth as depth_report


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def windows():
    return torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def identity_model():
    """Tiny model whose layer 1 adds exactly zero to the residual stream (o_proj and down_proj zeroed)."""
    model = random_model("llama-tiny", seed=0)
    layer = decoder_layers(model)[1]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    return model


def fake_spectra(model, seed=0):
    """projection_table with made-up alphas (tiny random matrices are too small for real fits)."""
    table = projection_table(model)
    rng = np.random.default_rng(seed)
    return table.assign(alpha=rng.uniform(2.0, 6.0, len(table)))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def hooks(model):
    """Every forward (pre-)hook on the model (transformers installs its own output-capturing ones)."""
    return {(name, kind, key) for name, m in model.named_modules()
            for kind, table in (("post", m._forward_hooks), ("pre", m._forward_pre_hooks)) for key in table}


# --------------------------------------------------------------------------- layer_profile
def test_profile_matches_hf_hidden_states(tiny_model, windows):
    profile = depth_profile.layer_profile(tiny_model, windows, batch_size=2, progress=False)
    assert list(profile.columns) == list(depth_profile.PROFILE_COLUMNS)
    assert list(profile["layer"]) == [0, 1]
    with torch.no_grad():
        hidden = tiny_model(input_ids=windows, output_hidden_states=True, use_cache=False).hidden_states
    for layer in (0, 1):  # hidden_states[l] is the input of layer l
        h = hidden[layer].double().numpy().reshape(-1, 64)
        assert profile.loc[layer, "var_in"] == pytest.approx(h.var(axis=1).mean(), rel=1e-6)
        assert profile.loc[layer, "var_in_median"] == pytest.approx(np.median(h.var(axis=1)), rel=1e-6)
    assert profile.loc[0, "var_out"] == pytest.approx(profile.loc[1, "var_in"], rel=1e-12)  # out of 0 = in of 1
    assert (profile["tokens"] == windows.numel()).all()


def test_growth_and_influence_are_consistent(tiny_model, windows):
    profile = depth_profile.layer_profile(tiny_model, windows, progress=False)
    np.testing.assert_allclose(profile["growth"], profile["var_out"] / profile["var_in"], rtol=1e-12)
    np.testing.assert_allclose(profile["growth_median"], profile["var_out_median"] / profile["var_in_median"],
                               rtol=1e-12)
    np.testing.assert_allclose(profile["block_influence"], 1 - profile["cos_in_out"], rtol=1e-12)
    assert (profile["rel_update"] > 0).all() and (profile["cos_in_out"] < 1).all()


def test_hooks_leave_the_model_unchanged(tiny_model, windows):
    before, installed = logits(tiny_model, windows), hooks(tiny_model)
    depth_profile.layer_profile(tiny_model, windows, progress=False)
    depth_profile.layer_profile(tiny_model, windows, allocation=0.5, progress=False)
    depth_profile.jacobian_identity_gap(tiny_model, windows[:1], progress=False)
    skip_layer.skip_layer_perplexity(tiny_model, windows, progress=False)
    assert hooks(tiny_model) == installed
    assert torch.equal(logits(tiny_model, windows), before)


def test_hooks_are_removed_after_an_error(tiny_model, windows, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    installed = hooks(tiny_model)
    monkeypatch.setattr(skip_layer, "perplexity", boom)
    with pytest.raises(RuntimeError, match="boom"):
        skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0], progress=False, cache=False)
    assert hooks(tiny_model) == installed


def test_profile_under_sparsity(tiny_model, windows):
    dense = depth_profile.layer_profile(tiny_model, windows, progress=False)
    zero = depth_profile.layer_profile(tiny_model, windows, allocation=0.0, progress=False)
    sparse = depth_profile.layer_profile(tiny_model, windows, allocation=0.7, progress=False)
    pd.testing.assert_frame_equal(dense, zero)
    assert dense.loc[0, "var_in"] == sparse.loc[0, "var_in"]  # the embeddings are not sparsified
    assert not np.allclose(dense["var_out"], sparse["var_out"])


def test_identity_layer_scores(identity_model, windows):
    profile = depth_profile.layer_profile(identity_model, windows, progress=False)
    assert profile.loc[1, "growth"] == pytest.approx(1.0, abs=1e-12)
    assert profile.loc[1, "rel_update"] == pytest.approx(0.0, abs=1e-12)
    assert profile.loc[1, "cos_in_out"] == pytest.approx(1.0, abs=1e-12)
    assert profile.loc[0, "rel_update"] > 0.01
    gap = depth_profile.jacobian_identity_gap(identity_model, windows, progress=False)
    assert gap.loc[1, "jacobian_gap"] < 1e-4
    assert gap.loc[0, "jacobian_gap"] > 0.05
    skip = skip_layer.skip_layer_perplexity(identity_model, windows, progress=False)
    assert skip.loc[1, "delta_nll"] == 0.0
    assert skip.loc[1, "perplexity"] == skip.loc[1, "dense_perplexity"]
    assert skip.loc[0, "delta_nll"] != 0.0


class TupleLayer(torch.nn.Module):
    """A decoder-like layer returning ``(hidden, extra)``, as older transformers versions do."""

    def __init__(self, d):
        super().__init__()
        self.self_attn = torch.nn.Identity()
        self.mlp = torch.nn.Linear(d, d)

    def forward(self, hidden_states, scale=1.0):
        return hidden_states + scale * self.mlp(hidden_states), "extra"


class TupleModel(torch.nn.Module):
    def __init__(self, d=8, n=2):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(10, d)
        self.layers = torch.nn.ModuleList([TupleLayer(d) for _ in range(n)])

    def forward(self, input_ids, use_cache=False):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h, scale=0.5)[0]
        return h


def test_layers_with_tuple_outputs():
    model, ids = TupleModel(), torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(0))
    profile = depth_profile.layer_profile(model, ids, progress=False)
    with torch.no_grad():
        h0 = model.embed(ids)
        h1 = model.layers[0](h0, scale=0.5)[0]
    assert profile.loc[0, "var_in"] == pytest.approx(h0.double().var(-1, unbiased=False).mean().item(), rel=1e-9)
    assert profile.loc[0, "var_out"] == pytest.approx(h1.double().var(-1, unbiased=False).mean().item(), rel=1e-9)
    with torch.no_grad(), skip_layer.skipped_layer(model, 0):
        skipped = model(ids)
        assert torch.equal(skipped, model.layers[1](h0, scale=0.5)[0])
    # The layer is affine, so J v - v = scale * W v exactly: the finite difference is exact for any v.
    w = model.layers[1].mlp.weight.detach().double()
    v = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fd = depth_profile._gap_per_token(model.layers[1], (h1,), {"scale": 0.5}, v)
    exact = (0.5 * v.double() @ w.T).norm(dim=-1) / v.double().norm(dim=-1)
    np.testing.assert_allclose(fd.numpy(), exact.reshape(-1).numpy(), rtol=1e-4)
    # the captured kwargs (scale=0.5) are passed on: with scale 1 the gap would be twice as large
    many = torch.randint(0, 10, (8, 50), generator=torch.Generator().manual_seed(2))
    gap = depth_profile.jacobian_identity_gap(model, many, n_probes=4, progress=False)
    sample = torch.randn(20000, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = ((0.5 * sample @ w.T).norm(dim=-1) / sample.norm(dim=-1)).mean().item()
    assert gap.loc[1, "jacobian_gap"] == pytest.approx(expected, rel=0.1)


# --------------------------------------------------------------------------- Jacobian gap
def test_gap_matches_autograd_jvp(tiny_model, windows):
    """The finite-difference J v of one layer equals autograd's jvp to ~1e-4."""
    ids = windows[:1]
    layer = decoder_layers(tiny_model)[1]
    captured = {}
    handle = layer.register_forward_pre_hook(lambda m, a, k: captured.update(args=a, kwargs=k), with_kwargs=True)
    with torch.no_grad():
        tiny_model(input_ids=ids, use_cache=False)
    handle.remove()
    h, kwargs = captured["args"][0], captured["kwargs"]
    v = depth_profile._probe(h, 1e-2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        fd = depth_profile._gap_per_token(layer, captured["args"], kwargs, v)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernel has no forward-mode AD
        _, jv = torch.func.jvp(lambda x: layer(x, **kwargs), (h,), (v,))
    exact = ((jv.double() - v.double()).norm(dim=-1) / v.double().norm(dim=-1)).reshape(-1)
    np.testing.assert_allclose(fd.numpy(), exact.detach().numpy(), rtol=2e-3, atol=1e-5)


def test_gap_is_seeded(tiny_model, windows):
    a = depth_profile.jacobian_identity_gap(tiny_model, windows, seed=1, progress=False)
    b = depth_profile.jacobian_identity_gap(tiny_model, windows, seed=1, progress=False)
    c = depth_profile.jacobian_identity_gap(tiny_model, windows, seed=2, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["jacobian_gap"], c["jacobian_gap"], rtol=1e-9, atol=0)
    assert list(a.columns) == ["layer", "jacobian_gap", "jacobian_gap_median", "n_probes", "eps", "tokens"]


def test_gap_does_not_depend_on_eps_in_the_linear_regime(tiny_model, windows):
    small = depth_profile.jacobian_identity_gap(tiny_model, windows, eps=1e-3, progress=False)
    large = depth_profile.jacobian_identity_gap(tiny_model, windows, eps=3e-2, progress=False)
    np.testing.assert_allclose(small["jacobian_gap"], large["jacobian_gap"], rtol=0.02)


# --------------------------------------------------------------------------- skip-layer perplexity
def test_skip_equals_removing_the_layer(tiny_model, windows):
    skip = skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0], progress=False, cache=False)
    pruned = copy.deepcopy(tiny_model)
    pruned.model.layers = torch.nn.ModuleList([pruned.model.layers[1]])
    pruned.config.num_hidden_layers = 1
    assert skip.loc[0, "perplexity"] == pytest.approx(perplexity(pruned, windows, progress=False).perplexity,
                                                      rel=1e-6)
    dense = perplexity(tiny_model, windows, progress=False)
    assert skip.loc[0, "dense_nll"] == pytest.approx(dense.nll, rel=1e-12)
    assert skip.loc[0, "delta_nll"] == pytest.approx(skip.loc[0, "nll"] - dense.nll, abs=1e-12)
    assert skip.loc[0, "tokens"] == windows.shape[0] * (windows.shape[1] - 1)


def test_skip_cache_resumes(tiny_model, windows, monkeypatch):
    calls = []
    real = perplexity
    monkeypatch.setattr(skip_layer, "perplexity", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0], progress=False)
    assert len(calls) == 2 and not first["cached"].any()  # dense + layer 0
    second = skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0, 1], progress=False)
    assert len(calls) == 3  # only layer 1 is new
    assert list(second["cached"]) == [True, False]
    assert second.loc[0, "nll"] == first.loc[0, "nll"]
    other = skip_layer.skip_layer_perplexity(tiny_model, windows[:2], layers=[0], progress=False)
    assert not other["cached"].any() and len(calls) == 5  # other windows: another key


def test_corrupt_cache_file_is_ignored(tiny_model, windows):
    first = skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0], progress=False)
    files = sorted(cache_dir("depth").glob("skip-*.json"))
    assert len(files) == 2
    for path in files:
        data = json.loads(path.read_text())
        if data["layer"] == 0:
            path.write_text("{not json")
        else:  # the dense row, inconsistent: perplexity != exp(nll)
            path.write_text(json.dumps({**data, "perplexity": data["perplexity"] * 2}))
    with pytest.warns(UserWarning, match="Ignoring unreadable or inconsistent cache file"):
        again = skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0], progress=False)
    assert not again["cached"].any()
    assert again.loc[0, "nll"] == pytest.approx(first.loc[0, "nll"], rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0], progress=False)["cached"].all()


def test_no_cache_writes_nothing(tiny_model, windows):
    skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[1], progress=False, cache=False)
    assert not list(cache_dir("depth").glob("*.json"))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad, match", [
    (torch.zeros(16, dtype=torch.long), "2-D tensor"),
    (torch.zeros(0, 16, dtype=torch.long), "No windows"),
    (torch.zeros(2, 1, dtype=torch.long), "too short"),
    (torch.zeros(2, 8), "not token ids"),
    ([[1, 2, 3]], "2-D tensor"),
])
def test_bad_windows(tiny_model, bad, match):
    for call in (depth_profile.layer_profile, depth_profile.jacobian_identity_gap, skip_layer.skip_layer_perplexity):
        with pytest.raises(DepthError, match=match) as info:
            call(tiny_model, bad, progress=False)
        assert "Fix:" in str(info.value)


def test_layer_out_of_range(tiny_model, windows):
    installed = hooks(tiny_model)
    with pytest.raises(DepthError, match=r"Layer index 2 is out of range.*2 decoder layers \(0\.\.1\)"):
        skip_layer.skip_layer_perplexity(tiny_model, windows, layers=[0, 2], progress=False)
    with pytest.raises(DepthError, match="Layer index -1"):
        with skip_layer.skipped_layer(tiny_model, -1):
            pass
    assert hooks(tiny_model) == installed


def test_bad_probe_settings(tiny_model, windows):
    with pytest.raises(DepthError, match="n_probes"):
        depth_profile.jacobian_identity_gap(tiny_model, windows, n_probes=0, progress=False)
    with pytest.raises(DepthError, match="eps > 0"):
        depth_profile.jacobian_identity_gap(tiny_model, windows, eps=0.0, progress=False)


@pytest.mark.parametrize("text", ["acttail", "acttail@", "@0.5", "uniform@half"])
def test_bad_condition_text(text):
    with pytest.raises(DepthError, match="STRATEGY@TARGET|not a number"):
        depth.parse_condition(text)


def test_parse_condition():
    assert depth.parse_condition("dense") == ("dense", 0.0)
    assert depth.parse_condition("acttail-block@0.7") == ("acttail-block", 0.7)
    assert depth.parse_condition(" uniform @ 0.5 ") == ("uniform", 0.5)


# --------------------------------------------------------------------------- tables
def test_layer_alpha_and_budgets(tiny_model):
    spectra = fake_spectra(tiny_model)
    alpha = depth.layer_alpha(spectra)
    part = spectra[spectra["layer"] == 1]
    assert alpha.loc[1, "alpha_mean"] == pytest.approx(part["alpha"].mean())
    assert alpha.loc[1, "alpha_weighted"] == pytest.approx(np.average(part["alpha"], weights=part["n_params"]))
    budgets = depth.layer_budgets(spectra, strategies=("acttail", "uniform"), targets=(0.5, 0.7))
    assert list(budgets.columns) == ["layer", "budget_acttail@0.5", "budget_acttail@0.7",
                                     "budget_uniform@0.5", "budget_uniform@0.7"]
    n = spectra.groupby("layer")["n_params"].sum().to_numpy()
    for column in budgets.columns[1:]:  # the layers' budgets average (by parameters) to the target
        assert np.dot(budgets[column], n) / n.sum() == pytest.approx(float(column.split("@")[1]), abs=1e-9)
    np.testing.assert_allclose(budgets["budget_uniform@0.5"], 0.5)


def test_depth_table_joins_everything(tiny_model, windows):
    spectra = fake_spectra(tiny_model)
    table = depth.depth_table(tiny_model, windows, spectra=spectra, progress=False)
    assert list(table["layer"]) == [0, 1]
    expected = {"var_out", "growth", "jacobian_gap", "skip_perplexity", "delta_nll", "dense_perplexity",
                "block_influence", "alpha_mean", "alpha_weighted", "budget_acttail@0.5", "budget_acttail-block@0.7",
                "profile_tokens", "jacobian_tokens", "skip_tokens"}
    assert expected <= set(table.columns)
    assert table.notna().all().all()
    assert (table["jacobian_tokens"] == 2 * 16).all()  # default: the first 2 windows, up to 256 tokens
    corr = depth_report.depth_correlations(table)
    assert set(corr["score"]) == set(depth_report.DEPTH_SCORES)
    assert (corr["n"] == 2).all() and corr["rho"].isna().all()  # 2 layers: too few for a rank correlation


def test_depth_correlations_on_synthetic_layers():
    rng = np.random.default_rng(0)
    alpha = rng.uniform(2, 6, 12)
    df = pd.DataFrame({"layer": range(12), "alpha_mean": alpha, "budget_acttail@0.5": alpha ** 2,
                       "delta_nll": -alpha, "jacobian_gap": alpha, "block_influence": np.ones(12)})
    df.loc[3, "jacobian_gap"] = np.nan
    corr = depth_report.depth_correlations(df, scores=("delta_nll", "jacobian_gap", "block_influence")).set_index(
        ["score", "predictor"])
    assert corr.loc[("delta_nll", "alpha_mean"), "rho"] == pytest.approx(-1.0)
    assert corr.loc[("delta_nll", "budget_acttail@0.5"), "rho"] == pytest.approx(-1.0)
    assert corr.loc[("jacobian_gap", "alpha_mean"), "rho"] == pytest.approx(1.0)
    assert corr.loc[("jacobian_gap", "alpha_mean"), "n"] == 11
    assert math.isnan(corr.loc[("block_influence", "alpha_mean"), "rho"])  # constant score
    with pytest.raises(DepthError, match="no column"):
        depth_report.depth_correlations(df, scores=("growth",))


def test_variance_under_sparsity(tiny_model, windows):
    long = depth.variance_under_sparsity(tiny_model, windows, ("dense", "uniform@0.5", "uniform@0.8"),
                                         progress=False)
    assert list(long.columns[:3]) == ["condition", "strategy", "target"]
    assert list(long["condition"]) == ["dense"] * 2 + ["uniform@0.5"] * 2 + ["uniform@0.8"] * 2
    dense = depth_profile.layer_profile(tiny_model, windows, progress=False)
    np.testing.assert_allclose(long.loc[long["condition"] == "dense", "var_out"], dense["var_out"], rtol=1e-12)
    alone = depth_profile.layer_profile(tiny_model, windows, allocation=0.8, progress=False)
    np.testing.assert_allclose(long.loc[long["condition"] == "uniform@0.8", "var_out"], alone["var_out"],
                               rtol=1e-12)
    summary = depth_report.growth_summary(long).set_index("condition")
    assert summary.loc["dense", "final_vs_reference"] == 1.0
    assert summary.loc["uniform@0.5", "total_growth"] == pytest.approx(
        long["var_out"].iloc[3] / long["var_in"].iloc[2])
    assert summary.loc["dense", "growth_after_first"] == pytest.approx(
        dense["var_out"].iloc[1] / dense["var_out"].iloc[0])
    ratio = depth_report.variance_ratio(long, "dense", "var_out_median")
    sparse = long[long["condition"] == "uniform@0.8"]
    np.testing.assert_allclose(ratio.loc[sparse.index, "ratio"],
                               sparse["var_out_median"].to_numpy() / dense["var_out_median"].to_numpy())
    assert summary.loc["uniform@0.8", "layer_ratio_median"] == pytest.approx(ratio.loc[sparse.index, "ratio"].median())
    assert (ratio.loc[long["condition"] == "dense", "ratio"] == 1.0).all()
    with pytest.raises(DepthError, match="No 'dense' condition"):
        depth_report.variance_ratio(sparse)
    assert np.isnan(depth_report.growth_summary(sparse)["layer_ratio"]).all()


def test_variance_under_sparsity_with_tables(tiny_model, windows):
    spectra = fake_spectra(tiny_model)
    long = depth.variance_under_sparsity(tiny_model, windows, ("dense", "acttail@0.5"), spectra=spectra,
                                         progress=False)
    assert list(long["strategy"].unique()) == ["dense", "acttail"]
    from acttail_lab.allocation import allocate

    alloc = allocate(spectra, "acttail", 0.5)
    given = depth.variance_under_sparsity(tiny_model, windows, {"mine": alloc, "dense": None}, progress=False)
    assert given.loc[given["condition"] == "mine", "target"].iloc[0] == pytest.approx(0.5)
    np.testing.assert_allclose(given.loc[given["condition"] == "mine", "var_out"],
                               long.loc[long["condition"] == "acttail@0.5", "var_out"], rtol=1e-12)


def test_load_depth_round_trip(tiny_model, windows, tmp_path):
    table = depth.depth_table(tiny_model, windows, spectra=fake_spectra(tiny_model), progress=False)
    long = depth.variance_under_sparsity(tiny_model, windows, ("dense", "uniform@0.5"), progress=False)
    table_path, long_path = depth_report.depth_paths("tiny", tmp_path)
    write_results(table, table_path, seed=0, device="cpu", command="test", model="tiny")
    write_results(long, long_path, seed=0, device="cpu", command="test", model="tiny")
    loaded, loaded_long = depth_report.load_depth(tmp_path, model="tiny")
    pd.testing.assert_frame_equal(loaded, table, check_dtype=False)
    assert loaded.attrs["provenance"]["settings"]["model"] == "tiny"
    assert len(loaded_long) == 4
    sentences = depth_report.depth_conclusions(loaded, loaded_long)
    assert sentences[0].startswith("Dense perplexity") and any("uniform@0.5" in s for s in sentences)
    with pytest.raises(FileNotFoundError, match="reproduce"):
        depth_report.load_depth(tmp_path / "nowhere")


# --------------------------------------------------------------------------- plots
@pytest.fixture(scope="module")
def layer_table():
    rng = np.random.default_rng(1)
    alpha = rng.uniform(2, 6, 8)
    return pd.DataFrame({"layer": range(8), "delta_nll": rng.uniform(0.01, 2, 8), "alpha_mean": alpha,
                         "budget_acttail@0.5": 0.4 + alpha / 20})


@pytest.fixture(scope="module")
def long_table():
    rows = []
    for condition, strategy, target, factor in [("dense", "dense", 0.0, 1.0), ("uniform@0.5", "uniform", 0.5, 1.2),
                                                ("acttail@0.5", "acttail", 0.5, 0.9)]:
        for layer in range(6):
            rows.append(dict(condition=condition, strategy=strategy, target=target, layer=layer,
                             var_out=factor * 2.0 ** layer))
    return pd.DataFrame(rows)


def test_plot_layer_scores(layer_table):
    ax = plot_layer_scores(layer_table.iloc[::-1])
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 8
    assert [p.get_height() for p in ax.patches] == pytest.approx(list(layer_table["delta_nll"]))
    assert [p.get_x() + p.get_width() / 2 for p in ax.patches] == pytest.approx(list(range(8)))
    (line,) = ax.overlay_axes.lines
    np.testing.assert_allclose(line.get_ydata(), layer_table["alpha_mean"])
    assert "alpha" in ax.overlay_axes.get_ylabel() and "skipped" in ax.get_ylabel()
    plain = plot_layer_scores(layer_table, overlay=None, logy=True)
    assert plain.overlay_axes is None and len(plain.figure.axes) == 1 and plain.get_yscale() == "log"
    with pytest.raises(KeyError, match="jacobian_gap"):
        plot_layer_scores(layer_table, score="jacobian_gap")


def test_plot_layer_scores_on_given_axes(layer_table):
    from matplotlib.figure import Figure

    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot_layer_scores(layer_table, ax=right) is right
    assert len(right.patches) == 8 and not left.patches


def test_plot_variance_profiles(long_table):
    ax = plot_variance_profiles(long_table)
    assert [line.get_label() for line in ax.lines] == ["dense", "uniform@0.5", "acttail@0.5"]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 1.2 * 2.0 ** np.arange(6))
    assert ax.lines[0].get_color() == strategy_style("dense")["color"]
    assert ax.lines[1].get_color() == strategy_style("uniform")["color"]  # colour by strategy, by name
    assert ax.lines[1].get_linestyle() == ax.lines[2].get_linestyle()  # same target, same line style
    rel = plot_variance_profiles(long_table, relative_to="dense", logy=False)
    np.testing.assert_allclose(rel.lines[0].get_ydata(), 1.0)
    np.testing.assert_allclose(rel.lines[2].get_ydata(), 0.9)
    assert "/ dense" in rel.get_ylabel()
    with pytest.raises(KeyError, match="no condition|No condition"):
        plot_variance_profiles(long_table, relative_to="acttail@0.9")


def test_plot_budget_vs_score(layer_table):
    from scipy.stats import spearmanr

    ax = plot_budget_vs_score(layer_table, x="budget_acttail@0.5", y="delta_nll")
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), layer_table[["budget_acttail@0.5", "delta_nll"]].to_numpy())
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(i) for i in range(8))  # 8 spread dots: all fit
    rho = spearmanr(layer_table["budget_acttail@0.5"], layer_table["delta_nll"]).statistic
    assert f"{rho:+.2f} [" in ax.get_title()  # with its Fisher-z interval
    assert "acttail budget" in ax.get_xlabel()
    assert not plot_budget_vs_score(layer_table, x="alpha_mean", annotate=False).texts


# --------------------------------------------------------------------------- real model
@pytest.mark.real
def test_real_profile_grows_with_depth(real_model):
    installed = hooks(real_model.model)
    from acttail_lab.core.corpus import corpus_text, token_windows

    windows = token_windows(real_model.tokenizer, corpus_text("austen", "evaluation"), window=128, n_tokens=128)
    profile = depth_profile.layer_profile(real_model, windows, progress=False)
    assert len(profile) == 30 and list(profile["layer"]) == list(range(30))
    assert np.isfinite(profile.drop(columns="layer").to_numpy(dtype=float)).all()
    assert profile["var_out"].iloc[-1] > 100 * profile["var_in"].iloc[0]  # Pre-LN: the residual stream grows
    assert profile["var_out_median"].iloc[-1] > 10 * profile["var_out_median"].iloc[0]
    assert (profile["rel_update"] > 0).all() and (profile["cos_in_out"] <= 1 + 1e-12).all()
    assert hooks(real_model.model) == installed


def test_budget_vs_score_labels_never_overlap():
    """Crowded dots: every label that is drawn overlaps no other label (crowded ones are left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = np.random.default_rng(3)
    crowded = pd.DataFrame({"layer": range(40), "budget_acttail@0.5": rng.normal(0.5, 0.01, 40),
                            "delta_nll": rng.uniform(0.1, 0.3, 40)})
    ax = plot_budget_vs_score(crowded)
    FigureCanvasAgg(ax.figure).draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert 0 < len(boxes) <= 40
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _growth_long(factors: dict) -> pd.DataFrame:
    """Variance profiles: dense grows 2x per layer; each condition (name -> (layer-0 ratio, per-layer factor))."""
    rows = []
    for condition, (start, factor) in {"dense": (1.0, 2.0), **factors}.items():
        strategy, _, target = condition.partition("@")
        var_in = 1.0
        for layer in range(6):
            var_out = var_in * (10.0 * start if layer == 0 else factor)
            rows.append(dict(condition=condition, strategy=strategy, target=float(target or 0), layer=layer,
                             var_in=var_in, var_out=var_out, growth=var_out / var_in, var_in_median=var_in,
                             var_out_median=var_out, growth_median=var_out / var_in))
            var_in = var_out
    return pd.DataFrame(rows)


def test_growth_change_measures_per_layer_growth_against_dense():
    long = _growth_long({"uniform@0.5": (0.5, 1.8), "acttail@0.5": (0.1, 2.2)})
    change = depth_report.growth_change(long).set_index("condition")
    assert change.loc["acttail@0.5", "growth_change_pct"] == pytest.approx(10.0)
    assert change.loc["uniform@0.5", "growth_change_pct"] == pytest.approx(-10.0)
    assert change.loc["acttail@0.5", "ci_low_pct"] == pytest.approx(10.0)  # constant per layer: no spread
    assert change.loc["acttail@0.5", "layer0_ratio"] == pytest.approx(0.1)
    assert change.loc["acttail@0.5", "n_faster"] == 5 and change.loc["acttail@0.5", "n_layers"] == 5
    assert change.loc["acttail@0.5", "final_ratio"] == pytest.approx(0.1 * 1.1 ** 5)
    table = pd.DataFrame({"layer": range(6), "delta_nll": [5.0, 1, 1, 1, 1, 1],
                          "budget_acttail@0.5": [0.6, 0.5, 0.5, 0.5, 0.5, 0.4]})
    lines = depth_report.damping_sentences(table, long)
    assert lines[0].startswith("Does sparsity damp variance growth? Only under uniform@0.5")
    assert "1 of 2 intervals lie above 0, 1 below" in lines[0]
    assert lines[-1] == ("acttail@0.5 cuts layer 0's output variance most, to 0.10x dense's; acttail gives that layer "
                         "0.60 sparsity (above the 0.5 target), and skipping it costs +5.00 nats (the costliest layer "
                         "to skip).")
    none = depth_report.damping_sentences(table, _growth_long({"uniform@0.5": (0.5, 2.0)}))
    assert none[0].startswith("Does sparsity damp variance growth? No on this model: no sparse condition grows the "
                              "stream measurably more slowly")


def test_variance_titles_state_the_numbers():
    titles = depth_report.variance_titles(_growth_long({"uniform@0.5": (0.5, 2.2)}))
    assert "layer 1 multiplies it 2x" in titles["var_out"]
    assert "grows\n32x" in titles["var_out_median"]
    assert titles["relative"].startswith("Relative to dense: 0.50-")


def test_depth_correlations_have_fisher_intervals():
    table = pd.DataFrame({"layer": range(10), "delta_nll": np.arange(10.0),
                          "alpha_mean": [9.0, 7, 8, 6, 5, 3, 4, 2, 1, 0]})
    row = depth_report.depth_correlations(table, scores=("delta_nll",)).iloc[0]
    assert row.rho < 0 and row.rho_low < row.rho < row.rho_high < 0


def test_score_and_profile_titles_read_the_numbers():
    table = pd.DataFrame({"layer": range(4), "delta_nll": [7.0, 0.5, 0.1, 0.3]})
    assert depth_report.score_title(table, "delta_nll") == "skip cost: largest at layer 0 (7); median after layer 0 0.3"
    long = _growth_long({"uniform@0.5": (0.5, 2.2)})
    assert depth_report.profile_title(long, "live") == f"live: after the last layer uniform@0.5 {0.5 * 1.1 ** 5:.2f}x dense"
