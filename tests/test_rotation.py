"""LaRoSA rotation: orthogonal Q from second moments, the rotated dense model is the same model, RotatedTopK."""
import pytest
import torch
from calibrated_model import TEXT, eval_windows, model, stats, windows  # noqa: F401 (pytest fixtures)

from acttail_lab.allocation import allocate
from acttail_lab.core.errors import CalibrationError, RotationError
from acttail_lab.core.models import (
    INPUT_SITES,
    LoadedModel,
    iter_projections,
    projection_table,
    random_model,
)
from acttail_lab.sparsify import calibration as calib
from acttail_lab.sparsify import rotation
from acttail_lab.sparsify.calibration import (
    activation_stats,
    collect_stats,
    moment_tokens,
)
from acttail_lab.sparsify.methods import calibration_for
from acttail_lab.sparsify.rotation import (
    RotatedTopK,
    Rotation,
    check_kinds,
    orthogonality_error,
    rotation_from_moment,
    rotations_for,
    rotations_from_stats,
)

# TEXT and the module-scoped fixtures model / windows / stats / eval_windows


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


# --------------------------------------------------------------------------- memory at scale
def _fresh_stats(model, windows, key):
    rotation._MEMO.clear()
    return collect_stats(model, windows, moments=True, progress=False, key=key)


def test_one_q_per_layer_and_site_shared_by_its_projections(model, windows, monkeypatch):
    rotations = rotations_for(model, _fresh_stats(model, windows, "one-q"), progress=False)
    n_layers = model.config.num_hidden_layers
    assert sorted(rotations) == sorted((layer, site) for layer in range(n_layers)
                                       for site in ("attn_in", "down", "mlp_in", "o"))
    rot = Rotation(model, rotations)
    by_site = {}
    for row, _, q in rot.targets:
        by_site.setdefault((row["layer"], INPUT_SITES[row["projection"]]), set()).add(id(q))
    assert all(len(ids) == 1 for ids in by_site.values())  # q/k/v one object, gate/up one object
    assert len({id(q) for _, _, q in rot.targets}) == len(rotations) == 4 * n_layers
    # the input-rotation hooks too: one Q per (layer, site), not one per projection
    hook_qs = []
    real = Rotation._make_hook
    monkeypatch.setattr(Rotation, "_make_hook", lambda self, group, q: hook_qs.append(q) or real(self, group, q))
    with torch.no_grad(), rot:
        pass
    assert len(hook_qs) == 7 * n_layers and len({id(q) for q in hook_qs}) == 4 * n_layers


def test_q_is_kept_in_the_model_dtype_for_half_precision_models(windows):
    half = random_model("llama-tiny", seed=0, dtype=torch.bfloat16)
    rotations = rotations_for(half, _fresh_stats(half, windows, "bf16"), progress=False)
    assert {q.dtype for q in rotations.values()} == {torch.bfloat16}
    rot = Rotation(half, rotations)
    with torch.no_grad(), rot:
        pass
    assert all(q is rotations[(r["layer"], INPUT_SITES[r["projection"]])] for r, _, q in rot.targets)


def test_moments_are_freed_one_by_one_while_rotations_are_built(model, windows, monkeypatch):
    stats = _fresh_stats(model, windows, "stream")
    n_moments = stats.moments_held
    assert n_moments == 4 * model.config.num_hidden_layers
    reference = rotations_from_stats(collect_stats(model, windows, moments=True, progress=False), range(2),
                                     progress=False)
    held = []
    real = rotation.rotation_from_moment
    monkeypatch.setattr(rotation, "rotation_from_moment", lambda m: held.append(stats.moments_held) or real(m))
    rotations = rotations_for(model, stats, progress=False)
    # when the i-th Q is computed, its moment has left the stats: n-1, n-2, ..., 0 moments remain
    assert held == list(range(n_moments - 1, -1, -1))
    assert stats.moments_held == 0 and stats.rotations is rotations
    assert all(torch.equal(rotations[k], reference[k]) for k in reference)  # same numbers as before
    with pytest.raises(CalibrationError, match="freed once its rotation was built"):
        stats.second_moment(0, "down")
    rotation._MEMO.clear()
    assert rotations_for(model, stats, progress=False) is rotations  # the stats carry their rotations


def test_the_memo_is_dropped_after_the_last_reader(model, stats, eval_windows):
    rotations = rotations_from_stats(stats, range(model.config.num_hidden_layers), progress=False)
    for make in (lambda: Rotation(model, rotations),
                 lambda: RotatedTopK(model, allocate(projection_table(model), "uniform", 0.5), rotations)):
        sizes = []
        handles = [m.register_forward_hook(lambda mod, a, out: sizes.append(len(memo_of(sp))))
                   for _, m in iter_projections(model)]
        sp = make()

        def memo_of(s):
            return (s.rotation if isinstance(s, RotatedTopK) else s)._memo

        try:
            with torch.no_grad(), sp:
                model(eval_windows)
                assert memo_of(sp) == {}
        finally:
            for h in handles:
                h.remove()
        # after q, k, v, o, gate, up, down: q/k/v's rotated input lives until v has read it, gate/up's until up
        assert sizes == [1, 1, 0, 0, 1, 0, 0] * model.config.num_hidden_layers


def test_too_few_calibration_tokens_for_rotation_name_the_count_before_any_forward(model, char_tokenizer,
                                                                                  tmp_path, monkeypatch):
    lm = LoadedModel(model=model, tokenizer=char_tokenizer(), name="tiny", source="random:tiny")
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    monkeypatch.setattr(calib, "collect_stats", lambda *a, **k: pytest.fail("a forward pass ran"))
    monkeypatch.setattr(calib, "_MEMORY", {})
    assert moment_tokens(model) == model.config.intermediate_size == 160
    with pytest.raises(CalibrationError, match=r"at least 160 calibration tokens.*calibration_tokens >= 192"):
        calibration_for(lm, ["rotated"], corpus=str(corpus), tokens=150, window=64, progress=False)
    with pytest.raises(CalibrationError, match=r"at least 160 calibration tokens.*got 128"):
        activation_stats(lm, corpus=str(corpus), tokens=128, window=64, moments=True, cache=False, progress=False)
    with torch.device("meta"):  # LLaMA-2-7B shapes, no weights
        big = random_model("llama2-7b", num_hidden_layers=1)
    assert moment_tokens(big) == 11008
    with pytest.raises(CalibrationError, match=r"at least 11008 .*calibration_tokens >= 11264"):
        calibration_for(LoadedModel(big, char_tokenizer(), "7b", "7b"), ["rotated"], tokens=8192, progress=False)


def test_default_calibration_tokens_cover_the_widest_rotated_input(model, char_tokenizer, tmp_path, monkeypatch):
    lm = LoadedModel(model=model, tokenizer=char_tokenizer(), name="tiny", source="random:tiny")
    asked = {}
    monkeypatch.setattr("acttail_lab.sparsify.methods.activation_stats", lambda lm, **k: asked.update(k))
    with torch.device("meta"):
        big = random_model("llama2-7b", num_hidden_layers=1)
    calibration_for(LoadedModel(big, char_tokenizer(), "7b", "7b"), ["rotated"], progress=False)
    assert asked["tokens"] == 11264 and asked["moments"]  # 22 windows of 512 >= 11008
    calibration_for(lm, ["threshold"], progress=False)
    assert asked["tokens"] == 8192 and not asked["moments"]
