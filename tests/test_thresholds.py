"""TEAL thresholds and CATS: calibrated cut-offs, realised sparsity, protocols, per-token spread."""
import numpy as np
import pytest
import torch
from calibrated_model import TEXT, eval_windows, model, stats, windows  # noqa: F401 (pytest fixtures)

from acttail_lab.allocation import allocate
from acttail_lab.core.errors import AllocationError
from acttail_lab.core.models import projection_table
from acttail_lab.sparsify.calibration import collect_stats
from acttail_lab.sparsify.thresholds import (
    CatsSparsifier,
    ThresholdSparsifier,
    TokenSparsity,
)

# TEXT and the module-scoped fixtures model / windows / stats / eval_windows


# --------------------------------------------------------------------------- thresholds and CATS
def test_token_sparsity_statistics_match_numpy():
    values = np.random.default_rng(0).uniform(0.2, 0.9, 1000)
    counter = TokenSparsity()
    counter.add(torch.tensor(values[:400]))
    counter.add(torch.tensor(values[400:]))
    out = counter.stats()
    assert out["realised_sparsity"] == pytest.approx(values.mean())
    assert out["realised_std"] == pytest.approx(values.std(), rel=1e-6)
    assert out["realised_p05"] == pytest.approx(np.quantile(values, 0.05), abs=0.01)
    assert out["realised_p95"] == pytest.approx(np.quantile(values, 0.95), abs=0.01)


def test_thresholds_realise_the_target_on_the_calibration_windows(model, windows, stats):
    alloc = allocate(projection_table(model), "uniform", 0.6)
    with torch.no_grad(), ThresholdSparsifier(model, alloc, stats) as sp:
        model(windows)
    real = sp.realised()
    # the first projection of each site sees dense inputs, as in calibration: the cut is exact there
    first = real[real["projection"].isin(["q", "gate"]) & (real["layer"] == 0)]
    assert first["realised_sparsity"].tolist() == pytest.approx([0.6, 0.6], abs=0.01)
    assert (real["realised_std"] > 0).all()  # a threshold's sparsity varies by token
    assert (real["realised_p05"] <= real["realised_sparsity"] + 1e-9).all()
    assert (real["realised_p95"] >= real["realised_sparsity"] - 1e-9).all()


def test_threshold_last_half_leaves_the_first_half_dense(model, stats, eval_windows):
    alloc = allocate(projection_table(model), "uniform", 0.7)
    seen = []
    module = model.model.layers[0].self_attn.o_proj
    with torch.no_grad(), ThresholdSparsifier(model, alloc, stats, protocol="last_half"):
        h = module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()), prepend=False)
        model(eval_windows)
        h.remove()
    x = seen[0]
    half = x.shape[1] // 2
    assert (x[:, :half] == 0).float().mean() < 0.05
    assert (x[:, half:] == 0).float().mean() > 0.5


def test_cats_silences_gated_neurons_and_counts_up_and_down(model, stats, eval_windows):
    alloc = allocate(projection_table(model), "cats", 0.5)
    down_inputs = []
    module = model.model.layers[1].mlp.down_proj
    with torch.no_grad(), CatsSparsifier(model, alloc, stats) as sp:
        h = module.register_forward_pre_hook(lambda m, a: down_inputs.append(a[0].detach()))
        model(eval_windows)
        h.remove()
    real = sp.realised().set_index(["layer", "projection"])
    assert (down_inputs[0] == 0).float().mean().item() == pytest.approx(0.5, abs=0.15)
    for layer in range(model.config.num_hidden_layers):
        assert real.loc[(layer, "up"), "realised_sparsity"] == real.loc[(layer, "down"), "realised_sparsity"]
        assert real.loc[(layer, "gate"), "realised_sparsity"] == 0.0
        assert real.loc[(layer, "q"), "realised_sparsity"] == 0.0
    with pytest.raises(AllocationError, match="only the MLP gate"):
        CatsSparsifier(model, allocate(projection_table(model), "uniform", 0.5), stats)


@pytest.mark.real
def test_real_thresholds_on_smollm2(real_model):
    from acttail_lab.core.corpus import corpus_text, token_windows

    cal = token_windows(real_model.tokenizer, corpus_text("austen", "calibration"), window=128, n_tokens=256)
    stats = collect_stats(real_model.model, cal, moments=False, progress=False)
    alloc = allocate(projection_table(real_model.model), "teal-threshold", 0.5)
    ev = token_windows(real_model.tokenizer, corpus_text("austen", "evaluation"), window=128, n_tokens=128)
    with torch.no_grad(), ThresholdSparsifier(real_model.model, alloc, stats) as sp:
        real_model.model(ev)
    real = sp.realised()
    assert len(real) == 210
    assert 0.35 < float(np.average(real["realised_sparsity"], weights=real["n_params"])) < 0.65
    assert (real["realised_std"] > 0).all()
