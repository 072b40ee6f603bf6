"""TopKSparsifier: hook lifecycle, exact TopK, protocols, realised sparsity, validation."""
import math

import pandas as pd
import pytest
import torch

from acttail_lab.core.errors import AllocationError, SparsifierStateError
from acttail_lab.core.models import iter_projections, projection_table, random_model
from acttail_lab.sparsify import topk as sp_mod
from acttail_lab.sparsify.topk import (
    TopKSparsifier,
    keep_count,
    resolve_allocation,
    topk_mask,
    topk_sparsify,
    weighted_sparsity,
)


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def logits(model, ids):
    with torch.inference_mode():
        return model(ids).logits


def hook_counts(model):
    return [len(module._forward_pre_hooks) for _, module in iter_projections(model)]


def varied_allocation(model, seed=0):
    """A different sparsity per projection, some exactly 0 (dense)."""
    g = torch.Generator().manual_seed(seed)
    table = projection_table(model)
    values = torch.rand(len(table), generator=g) * 0.9
    values[::5] = 0.0
    return dict(zip(table["name"], values.tolist()))


# --------------------------------------------------------------------------- kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_topk_mask_keeps_exactly_k_largest(dtype):
    x = torch.randn(50, 97, generator=torch.Generator().manual_seed(0)).to(dtype)
    mask = topk_mask(x, 40)
    assert mask.sum(-1).tolist() == [40] * 50
    kept_min = x.abs().float().masked_fill(~mask, math.inf).min(-1).values
    dropped_max = x.abs().float().masked_fill(mask, -math.inf).max(-1).values
    assert torch.all(kept_min >= dropped_max)


def test_topk_mask_ties_still_keep_exactly_k():
    x = torch.tensor([[1.0, 1, 1, 1, 0.5, 2], [0, 0, 0, 0, 0, 0], [3, -3, 3, -3, 3, -3], [1, 2, 3, 4, 5, 6]])
    mask = topk_mask(x, 3)
    assert mask.sum(-1).tolist() == [3, 3, 3, 3]
    assert mask[0, 5] and not mask[0, 4]  # 2 is kept, 0.5 dropped, two of the 1s kept
    assert mask[3].tolist() == [False, False, False, True, True, True]
    # bf16 has many exact ties at the threshold
    y = torch.randn(64, 576, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    assert topk_mask(y, 288).sum(-1).eq(288).all()


def test_topk_sparsify_matches_torch_topk():
    x = torch.randn(8, 33, generator=torch.Generator().manual_seed(3))
    out = topk_sparsify(x, 10)
    idx = x.abs().topk(10, dim=-1).indices
    expected = torch.zeros_like(x).scatter_(-1, idx, x.gather(-1, idx))
    assert torch.equal(out, expected)


def test_keep_count_rounds():
    assert keep_count(0.5, 576) == 288
    assert keep_count(0.7, 576) == 173  # 172.8 rounds up
    assert keep_count(0.0, 1536) == 1536


# --------------------------------------------------------------------------- hook lifecycle
def test_hooks_removed_on_exit_and_on_exception(model, ids):
    assert sum(hook_counts(model)) == 0
    with TopKSparsifier(model, 0.5):
        assert hook_counts(model) == [1] * 14
    assert sum(hook_counts(model)) == 0
    with pytest.raises(ZeroDivisionError):
        with TopKSparsifier(model, 0.5):
            logits(model, ids)
            1 / 0
    assert sum(hook_counts(model)) == 0
    assert not hasattr(model, TopKSparsifier._ACTIVE_ATTR)


def test_nesting_errors_and_reuse(model, ids):
    sp = TopKSparsifier(model, 0.5)
    with sp:
        with pytest.raises(SparsifierStateError, match="already active"):
            sp.__enter__()
        with pytest.raises(SparsifierStateError, match="Another TopKSparsifier"):
            with TopKSparsifier(model, 0.3):
                pass
        assert hook_counts(model) == [1] * 14  # the failed entries left the active hooks alone
        first = logits(model, ids)
    assert sum(hook_counts(model)) == 0
    with sp:  # reuse after exit: same result, counters restart
        again = logits(model, ids)
    assert torch.equal(first, again)
    assert (sp.realised()["tokens"] == ids.numel()).all()


def test_zero_sparsity_installs_nothing_and_keeps_logits(model, ids):
    dense = logits(model, ids)
    with TopKSparsifier(model, 0.0) as sp:
        assert sum(hook_counts(model)) == 0
        out = logits(model, ids)
    assert torch.equal(out, dense)
    assert (sp.realised()["realised_sparsity"] == 0.0).all()


def test_uniform_half_changes_logits(model, ids):
    dense = logits(model, ids)
    with TopKSparsifier(model, 0.5):
        out = logits(model, ids)
    assert (out - dense).abs().max() > 1e-3


# --------------------------------------------------------------------------- exactness
def test_realised_equals_round_based_target(model, ids):
    alloc = varied_allocation(model)
    with TopKSparsifier(model, alloc) as sp:
        logits(model, ids)
    real = sp.realised()
    expected = [1 - keep_count(alloc[n], d) / d for n, d in zip(real["name"], real["d_in"])]
    assert real["realised_sparsity"].tolist() == pytest.approx(expected, abs=1e-12)
    hooked = real["k"] < real["d_in"]
    assert (real.loc[hooked, "tokens"] == ids.numel()).all()
    assert real["target_sparsity"].tolist() == pytest.approx([alloc[n] for n in real["name"]])
    assert weighted_sparsity(real) == pytest.approx(
        sum(e * p for e, p in zip(expected, real["n_params"])) / real["n_params"].sum())


def test_probe_sees_exactly_k_largest_per_token(model, ids):
    """Hooks run in registration order: a probe before the sparsifier sees the dense input, one after sees the mask."""
    name, module = next((row["name"], m) for row, m in iter_projections(model) if row["projection"] == "down")
    seen = {}
    before = module.register_forward_pre_hook(lambda m, a: seen.__setitem__("dense", a[0].clone()))
    try:
        with TopKSparsifier(model, {**{n: 0.0 for n in projection_table(model)["name"]}, name: 0.7}):
            after = module.register_forward_pre_hook(lambda m, a: seen.__setitem__("sparse", a[0].clone()))
            logits(model, ids)
            after.remove()
    finally:
        before.remove()
    k = keep_count(0.7, module.in_features)
    dense, sparse = seen["dense"], seen["sparse"]
    assert (sparse != 0).sum(-1).eq(k).all()
    expected = dense.abs().topk(k, dim=-1).indices.sort(-1).values
    kept = (sparse != 0).nonzero()[:, -1].view(*sparse.shape[:-1], k)
    assert torch.equal(kept, expected)
    assert torch.equal(sparse[sparse != 0], dense[sparse != 0])  # kept values unchanged


def test_last_half_keeps_first_half_dense(model, ids):
    dense = logits(model, ids)
    with TopKSparsifier(model, 0.6, protocol="last_half") as sp:
        out = logits(model, ids)
    half = ids.shape[1] // 2
    assert torch.equal(out[:, :half], dense[:, :half])
    assert (out[:, half:] - dense[:, half:]).abs().max() > 1e-3
    real = sp.realised()
    assert (real["tokens"] == ids.shape[0] * (ids.shape[1] - half)).all()
    assert real["realised_sparsity"].tolist() == pytest.approx(
        [1 - keep_count(0.6, d) / d for d in real["d_in"]], abs=1e-12)


def test_zeros_already_in_the_input_count_as_sparsity():
    model = random_model("llama-tiny", seed=0)
    layer0_up = next(m for row, m in iter_projections(model) if row["layer"] == 0 and row["projection"] == "up")
    with torch.no_grad():
        layer0_up.weight.zero_()  # down_proj of layer 0 now reads an all-zero input
    with TopKSparsifier(model, 0.5) as sp:
        logits(model, torch.arange(16).view(1, 16))
    real = sp.realised().set_index(["layer", "projection"])
    assert real.loc[(0, "down"), "realised_sparsity"] == 1.0
    assert real.loc[(1, "down"), "realised_sparsity"] == 0.5


def test_shared_selection_equals_independent_selection(model, ids, monkeypatch):
    """q/k/v and gate/up share one selection; results must equal per-projection selections."""
    alloc = varied_allocation(model, seed=4)
    with TopKSparsifier(model, alloc):
        shared = logits(model, ids)
    monkeypatch.setattr(sp_mod, "_SHARED_INPUT", {})
    with TopKSparsifier(model, alloc):
        alone = logits(model, ids)
    assert torch.equal(shared, alone)


def test_topk_path_for_gpus_matches_cpu_path(ids, monkeypatch):
    """The torch.topk branch (used off-CPU) gives the same outputs and counts as the CPU branch.

    Without GQA: with shared KV heads the first token's attention output repeats
    exactly across heads, and the two branches may keep different tied entries.
    """
    model = random_model("llama-tiny", seed=0, num_key_value_heads=4)
    alloc = varied_allocation(model, seed=5)
    with TopKSparsifier(model, alloc) as sp:
        cpu = logits(model, ids)
    monkeypatch.setattr(sp_mod, "_INT_VIEW", {})
    with TopKSparsifier(model, alloc) as sp2:
        other = logits(model, ids)
    assert torch.equal(cpu, other)
    pd.testing.assert_frame_equal(sp.realised(), sp2.realised())


def test_half_precision_model_is_exact(ids):
    model = random_model("llama-tiny", seed=0, dtype=torch.bfloat16)
    with TopKSparsifier(model, 0.5) as sp:
        out = logits(model, ids)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert sp.realised()["realised_sparsity"].tolist() == pytest.approx([0.5] * 14, abs=1e-12)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "half", None])
def test_bad_sparsity_values_raise(model, bad):
    with pytest.raises(AllocationError):
        TopKSparsifier(model, {n: bad for n in projection_table(model)["name"]})


def test_allocation_shapes(model):
    names = projection_table(model)["name"]
    df = pd.DataFrame({"name": names, "sparsity": 0.25})
    assert (resolve_allocation(model, df)["sparsity"] == 0.25).all()
    with pytest.raises(AllocationError, match="missing"):
        TopKSparsifier(model, df.iloc[1:])
    with pytest.raises(AllocationError, match="unknown"):
        TopKSparsifier(model, {**dict(zip(names, [0.1] * len(names))), "model.layers.9.mlp.up_proj": 0.1})
    with pytest.raises(AllocationError, match="column"):
        TopKSparsifier(model, df.rename(columns={"sparsity": "s"}))
    with pytest.raises(AllocationError, match="protocol"):
        TopKSparsifier(model, 0.5, protocol="first_half")
    with pytest.raises(AllocationError):
        TopKSparsifier(model, [0.5])


def test_works_under_autograd(ids):
    """Outside inference mode the masked input keeps its gradient path (buffers are not reused then)."""
    model = random_model("llama-tiny", seed=0)
    with TopKSparsifier(model, 0.5):
        model(ids).logits.float().logsumexp(-1).mean().backward()
    grad = model.model.layers[0].self_attn.q_proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert sum(hook_counts(model)) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float64 takes the torch.topk path
def test_k_zero_zeroes_the_input_on_every_path(dtype):
    """A sparsity close enough to 1 that round((1-s) d_in) = 0 keeps nothing, the same on every path."""
    model = random_model("llama-tiny", dtype=dtype)
    seen = {}

    def grab(module, args, out):  # a forward hook sees the input after the pre-hooks
        seen.setdefault("x", args[0].clone())

    handle = model.model.layers[0].mlp.down_proj.register_forward_hook(grab)
    try:
        with TopKSparsifier(model, 0.999) as sp:
            model(torch.randint(0, 256, (2, 8)))
    finally:
        handle.remove()
    table = sp.realised()
    assert (table["k"] == 0).all()
    assert (table["realised_sparsity"] == 1.0).all()
    assert torch.count_nonzero(seen["x"]) == 0
