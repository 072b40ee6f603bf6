"""WINA (method=wina, rotated-wina): the kept set is the exact per-token top-k of |x| * ||W col||, the realised
sparsity is the allocation's, the sparsifier interface is TopK's, and it differs from TopK when the norms differ."""
import numpy as np
import pytest
import torch
from calibrated_model import TEXT, eval_windows, model, stats, windows  # noqa: F401 (pytest fixtures)

from acttail_lab.allocation import allocate, parse_strategy
from acttail_lab.core.errors import CalibrationError, SparsifierStateError
from acttail_lab.core.models import iter_projections, projection_table
from acttail_lab.measure.perplexity import perplexity
from acttail_lab.sparsify.methods import make_sparsifier
from acttail_lab.sparsify.registry import METHODS
from acttail_lab.sparsify.topk import TopKSparsifier, keep_count, topk_mask
from acttail_lab.sparsify.wina import (
    RotatedWina,
    WinaSparsifier,
    column_norms,
    wina_mask,
)


def _modules(model):
    return {row["name"]: module for row, module in iter_projections(model)}


def _seen_inputs(model, ids, names, sparsifier=None):
    """The input each projection in ``names`` actually multiplies (after every pre-hook), per name."""
    seen = {}
    mods = _modules(model)
    handles = [mods[n].register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, a[0].detach().clone()))
               for n in names]
    try:
        with torch.no_grad(), (sparsifier if sparsifier is not None else torch.no_grad()):
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.fixture(scope="module")
def ids(model):
    return torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(5))


def test_registered_with_the_interface_of_the_other_methods(model):
    assert {"wina", "rotated-wina"} <= set(METHODS)
    assert METHODS["wina"].needs is None and METHODS["rotated-wina"].needs == "moments"
    alloc = allocate(projection_table(model), "wina", 0.5)
    sp = make_sparsifier(model, alloc, "wina")
    assert isinstance(sp, WinaSparsifier) and isinstance(sp, TopKSparsifier)
    with pytest.raises(CalibrationError, match="needs calibration statistics"):
        make_sparsifier(model, alloc, "rotated-wina")
    assert parse_strategy("acttail-wina").method == "wina" and parse_strategy("teal-greedy-wina").method == "wina"


@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_kept_set_is_the_exact_topk_of_input_times_column_norm(model, ids, sparsity):
    names = [n for n in _modules(model) if n.startswith("model.layers.1.")]
    mods = _modules(model)
    for name in names:  # one projection sparsified at a time, so its input is the dense model's
        dense = _seen_inputs(model, ids, [name])[name]
        alloc = {n: (sparsity if n == name else 0.0) for n in mods}
        kept = _seen_inputs(model, ids, [name], WinaSparsifier(model, alloc))[name]
        k = keep_count(sparsity, dense.shape[-1])
        scores = dense.abs() * torch.linalg.vector_norm(mods[name].weight.detach().double(), dim=0).float()
        expected = torch.zeros_like(dense, dtype=torch.bool).scatter_(-1, scores.topk(k, dim=-1).indices, True)
        assert torch.equal(kept != 0, expected), name
        assert torch.equal(kept, dense * expected), name


def test_realised_sparsity_equals_the_allocation(model, ids):
    alloc = allocate(projection_table(model), "uniform", 0.6)
    alloc.loc[alloc["projection"] == "down", "sparsity"] = 0.8  # a non-uniform allocation
    with WinaSparsifier(model, alloc) as sp:
        with torch.no_grad():
            model(ids)
    table = sp.realised()
    expected = [1 - keep_count(s, d) / d for s, d in zip(alloc["sparsity"], alloc["d_in"])]
    np.testing.assert_allclose(table["realised_sparsity"], expected, atol=1e-12)
    assert (table["tokens"] == ids.numel()).all()
    assert list(table.columns[:7]) == ["layer", "projection", "name", "d_in", "n_params", "target_sparsity", "k"]


def test_last_half_protocol_and_dense_equivalence(model, ids):
    with torch.no_grad():
        dense = model(ids).logits
        with WinaSparsifier(model, 0.0):
            same = model(ids).logits
        with WinaSparsifier(model, 0.5, protocol="last_half") as sp:
            half = model(ids).logits
    assert torch.equal(dense, same)
    t = ids.shape[1] // 2
    assert torch.allclose(half[:, :t], dense[:, :t], atol=1e-5) and not torch.allclose(half[:, t:], dense[:, t:])
    assert (sp.realised()["tokens"] == ids.shape[0] * (ids.shape[1] - t)).all()


def test_hooks_removed_on_exit_and_on_error_and_no_stacking(model, ids):
    with torch.no_grad():
        dense = model(ids).logits
        sp = WinaSparsifier(model, 0.5)
        with pytest.raises(RuntimeError, match="boom"):
            with sp:
                raise RuntimeError("boom")
        assert torch.equal(model(ids).logits, dense) and sp.norms() == {}
        with sp:
            with pytest.raises(SparsifierStateError):
                TopKSparsifier(model, 0.5).__enter__()
        assert torch.equal(model(ids).logits, dense)


def test_differs_from_topk_when_column_norms_differ(model, ids):
    name = "model.layers.0.mlp.down_proj"
    mods = _modules(model)
    norms = column_norms(mods[name].weight)
    assert float(norms.max() / norms.min()) > 1.2  # the random weights' column norms do differ
    alloc = {n: (0.5 if n == name else 0.0) for n in mods}
    wina = _seen_inputs(model, ids, [name], WinaSparsifier(model, alloc))[name]
    topk = _seen_inputs(model, ids, [name], TopKSparsifier(model, alloc))[name]
    assert not torch.equal(wina != 0, topk != 0)
    with torch.no_grad():  # equal column norms: WINA is TopK
        saved = mods[name].weight.detach().clone()
        mods[name].weight.copy_(torch.nn.functional.normalize(saved, dim=0))
        try:
            equal = _seen_inputs(model, ids, [name], WinaSparsifier(model, alloc))[name]
            plain = _seen_inputs(model, ids, [name], TopKSparsifier(model, alloc))[name]
        finally:
            mods[name].weight.copy_(saved)
    assert torch.equal(equal != 0, plain != 0)


def test_wina_mask_matches_brute_force_and_handles_edges():
    g = torch.Generator().manual_seed(0)
    x, norms = torch.randn(7, 33, generator=g), torch.rand(33, generator=g) + 0.1
    for k in (0, 1, 10, 33):
        ref = torch.zeros_like(x, dtype=torch.bool)
        if k:
            ref.scatter_(-1, (x.abs() * norms).topk(k, dim=-1).indices, True)
        assert torch.equal(wina_mask(x, norms, k), ref)
    assert torch.equal(wina_mask(x, torch.ones(33), 10), topk_mask(x, 10))


def test_zero_weight_column_counts_zeros_of_the_input(model, ids):
    name = "model.layers.0.self_attn.o_proj"
    mods = _modules(model)
    alloc = {n: (0.5 if n == name else 0.0) for n in mods}
    with torch.no_grad():
        saved = mods[name].weight.detach().clone()
        mods[name].weight[:, :3] = 0.0
        try:
            with WinaSparsifier(model, alloc) as sp:
                model(ids)
        finally:
            mods[name].weight.copy_(saved)
    row = sp.realised().set_index("name").loc[name]
    assert row["realised_sparsity"] == pytest.approx(1 - row["k"] / row["d_in"], abs=1e-12)


def test_rotated_wina_uses_the_rotated_weights_norms(model, stats, ids):
    name = "model.layers.0.self_attn.q_proj"
    before = column_norms(_modules(model)[name].weight)
    sp = make_sparsifier(model, 0.5, "rotated-wina", stats=stats)
    assert isinstance(sp, RotatedWina)
    with torch.no_grad(), sp:
        model(ids)
        inside = sp.topk.norms()[name]
        assert torch.allclose(inside, column_norms(_modules(model)[name].weight))
    assert not torch.allclose(inside, before)
    assert torch.equal(column_norms(_modules(model)[name].weight), before)  # weights restored
    np.testing.assert_allclose(sp.realised()["realised_sparsity"], 0.5, atol=1e-12)


def test_perplexity_under_wina_rises_and_differs_from_topk(model, eval_windows):
    table = projection_table(model)
    dense = perplexity(model, eval_windows, progress=False).perplexity
    alloc = allocate(table, "wina", 0.8)
    wina = perplexity(model, eval_windows, sparsifier=make_sparsifier(model, alloc, "wina"), progress=False)
    topk = perplexity(model, eval_windows, alloc, progress=False)
    assert wina.perplexity != dense and wina.perplexity != topk.perplexity
    assert wina.realised_sparsity == pytest.approx(topk.realised_sparsity, abs=1e-12)


def test_sparse_decoding_path_takes_winas_selection(model, ids):
    from acttail_lab.sparsify.kernels.decode import sparse_decoding

    ids = ids[:1, :10]
    with torch.no_grad():
        with WinaSparsifier(model, 0.6):
            expected = model(ids).logits[0]
        with TopKSparsifier(model, 0.6):
            topk = model(ids).logits[0]
        with sparse_decoding(model, 0.6, backend="torch", mode="wina") as table:
            assert table["mode"].eq("wina").all()
            prefill = model(ids).logits[0]
            past, steps = None, []
            for t in range(ids.shape[1]):  # batch-1 decoding: one token at a time through the sparse GEMV
                out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
                past = out.past_key_values
                steps.append(out.logits[0, -1])
    assert (prefill - expected).abs().max() < 1e-5
    assert (torch.stack(steps) - expected).abs().max() < 1e-5
    assert (expected - topk).abs().max() > 1e-3  # the selection really differs from TopK's
    assert all(type(m).__name__ == "Linear" for _, m in iter_projections(model))  # originals restored
