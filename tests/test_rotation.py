"""LaRoSA rotation: orthogonal Q from second moments, the rotated dense model is the same model, RotatedTopK."""
import pytest
import torch

from acttail_lab.allocation import allocate
from acttail_lab.core.errors import RotationError
from acttail_lab.core.models import projection_table, random_model
from acttail_lab.sparsify.calibration import collect_stats
from acttail_lab.sparsify.rotation import (
    RotatedTopK,
    Rotation,
    check_kinds,
    orthogonality_error,
    rotation_from_moment,
    rotations_from_stats,
)

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. ") * 40


@pytest.fixture(scope="module")
def model():
    return random_model("llama-tiny", seed=0).eval()


@pytest.fixture(scope="module")
def windows(model):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, model.config.vocab_size, (8, 64), generator=g)


@pytest.fixture(scope="module")
def stats(model, windows):
    return collect_stats(model, windows, moments=True, progress=False, key="test")


@pytest.fixture(scope="module")
def eval_windows(model):
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, model.config.vocab_size, (4, 64), generator=g)


# --------------------------------------------------------------------------- rotation
def test_rotation_is_orthogonal_and_sorted_by_energy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g, dtype=torch.float64) @ torch.diag(torch.linspace(0.1, 3, 16,
                                                                                           dtype=torch.float64))
    q = rotation_from_moment(x.T @ x / 500)
    assert orthogonality_error(q) < 1e-12
    energy = ((x @ q) ** 2).mean(0)
    assert torch.all(energy[:-1] >= energy[1:] - 1e-9)
    not_orthogonal = q.clone()
    not_orthogonal[0, 0] += 0.1
    assert orthogonality_error(not_orthogonal) > 0.05


def test_rotated_dense_model_computes_the_same_logits_and_restores_weights(model, stats, eval_windows):
    rotations = rotations_from_stats(stats, range(model.config.num_hidden_layers), progress=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        ref = model(eval_windows).logits
        with Rotation(model, rotations):
            rotated = model(eval_windows).logits
            changed = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
        after = model(eval_windows).logits
    assert changed  # W Q really replaced W inside the block
    assert torch.allclose(rotated, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(after, ref)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_rotation_concentrates_energy_in_the_leading_coordinates(model, eval_windows):
    """PCA's guarantee: the first k rotated coordinates hold at least the energy of the best k original ones."""
    captured = []
    h = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
    with torch.no_grad():
        model(eval_windows)
    h.remove()
    x = captured[0].reshape(-1, captured[0].shape[-1]).double()
    q = rotation_from_moment(x.T @ x / len(x))
    z = x @ q
    for k in (4, 16, 64):
        best_plain = torch.sort((x ** 2).sum(0), descending=True).values[:k].sum()
        assert (z[:, :k] ** 2).sum() >= best_plain * (1 - 1e-9)


def test_rotated_topk_realises_the_target(model, stats, eval_windows):
    rotations = rotations_from_stats(stats, range(model.config.num_hidden_layers), progress=False)
    alloc = allocate(projection_table(model), "uniform", 0.5)
    with torch.no_grad(), RotatedTopK(model, alloc, rotations) as sp:
        model(eval_windows)
    assert sp.realised()["realised_sparsity"].tolist() == pytest.approx([0.5] * len(alloc), abs=1e-9)


def test_rotation_for_unsupported_projection_is_a_clear_error(model, stats):
    with pytest.raises(RotationError, match="unsupported projection"):
        check_kinds(["q", "lm_head"])
    with pytest.raises(RotationError, match="unsupported projection"):
        rotations_from_stats(stats, [0], kinds=("embed_tokens",), progress=False)
    with pytest.raises(RotationError, match="No rotation"):
        Rotation(model, {}, names={"model.layers.0.self_attn.q_proj"})
