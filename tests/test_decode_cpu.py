"""Sparse decoding on CPU through the numba kernel (``kernels.cpu_decode``) on a tiny random LLaMA.

Stated tolerances: float32 models, decoded logits within 1e-5 of the TopK hooks' logits (float32
summation order only; measured 2e-7); bfloat16 models, within 4 bf16 ulps of the largest logit
(``4 * 2**-8 * max|logit|``: the kernel rounds each projection's float32 sum once, the hooks' bf16
matmul rounds its own float32 sum; measured one ulp) and the same argmax at every position.
"""
import numpy as np
import pytest
import torch
from threshold_masking import threshold_logits
from torch import nn

from acttail_lab.core.errors import DeviceError, UnsupportedArchitectureError
from acttail_lab.core.models import iter_projections, projection_table, random_model
from acttail_lab.sparsify.kernels.decode import calibrate_thresholds
from acttail_lab.sparsify.kernels.graph_decode import StaticDecoder
from acttail_lab.sparsify.topk import TopKSparsifier
from acttail_lab.sparsify.wina import WinaSparsifier

pytest.importorskip("numba")
from acttail_lab.sparsify.kernels import cpu_gemv  # noqa: E402
from acttail_lab.sparsify.kernels.cpu_decode import GroupedSparseLinear, cpu_sparse_decoding  # noqa: E402


def _allocation(model):
    table = projection_table(model)
    allocation = dict(zip(table["name"], np.random.default_rng(0).uniform(0.1, 0.95, len(table))))
    allocation[table["name"][3]] = 0.0  # one dense projection: stays an nn.Linear
    return allocation


def _decode_with_cache(model, ids):
    past, steps = None, []
    for t in range(ids.shape[1]):
        out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits[0, -1].float())
    return torch.stack(steps)


@pytest.fixture(scope="module")
def tiny():
    model = random_model("llama-tiny", seed=1)
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(0))
    return dict(model=model, ids=ids, allocation=_allocation(model))


def test_decoded_logits_equal_the_topk_hooks_logits(tiny):
    model, ids, allocation = tiny["model"], tiny["ids"], tiny["allocation"]
    before = [m for _, m in iter_projections(model)]
    with torch.no_grad():
        dense = model(ids).logits[0]
        with TopKSparsifier(model, allocation):
            masked = model(ids).logits[0]
        with cpu_sparse_decoding(model, allocation, backend="numba") as run:
            table = run.table
            assert table["swapped"].sum() == len(table) - 1 and not table["swapped"][3]
            assert isinstance(model.get_submodule(table["name"][0]), GroupedSparseLinear)
            decoded = _decode_with_cache(model, ids)
            prefill = model(ids).logits[0]
            stats = run.stats()
    assert (masked - dense).abs().max() > 0.05  # the masking matters on this model
    assert (decoded - masked).abs().max() < 1e-5
    assert (prefill - masked).abs().max() < 1e-5
    # one selection per shared input: per token, layer 0 has attn_in (q, k, v), mlp_in, down (o stays dense),
    # layer 1 also o: 7 group runs and 13 GEMVs per token
    assert stats["group_calls"] == 7 * ids.shape[1] and stats["gemv_calls"] == 13 * ids.shape[1]
    assert stats["gemv_s"] > 0 and stats["select_s"] > 0
    assert [m for _, m in iter_projections(model)] == before
    assert all(m.weight.is_contiguous() for m in before)


def test_threshold_and_wina_modes_equal_their_masking(tiny):
    model, ids = tiny["model"], tiny["ids"]
    thresholds = calibrate_thresholds(model, 0.6, ids)
    expected = threshold_logits(model, ids, thresholds)
    with torch.no_grad(), cpu_sparse_decoding(model, 0.6, mode="threshold", thresholds=thresholds,
                                              backend="numba"):
        decoded = _decode_with_cache(model, ids)
    assert (decoded - expected).abs().max() < 1e-5
    with torch.no_grad():
        with WinaSparsifier(model, tiny["allocation"]):
            expected = model(ids).logits[0]
        with cpu_sparse_decoding(model, tiny["allocation"], mode="wina", backend="numba"):
            decoded = _decode_with_cache(model, ids)
    assert (decoded - expected).abs().max() < 1e-5


def test_dense_through_the_kernel_and_the_static_decoder(tiny):
    model, ids = tiny["model"], tiny["ids"]
    with torch.no_grad():
        dense = model(ids).logits[0]
        with cpu_sparse_decoding(model, 0.0, backend="numba", dense_through_kernel=True) as run:
            assert run.table["swapped"].all() and run.table["k"].eq(run.table["d_in"]).all()
            decoded = _decode_with_cache(model, ids)
        assert (decoded - dense).abs().max() < 1e-5
        with cpu_sparse_decoding(model, tiny["allocation"], backend="numba", threads=2):
            decoder = StaticDecoder(model, max_len=8)
            tokens = decoder.decode(first_token=5, n_tokens=6)
            greedy = model(torch.tensor([[5] + tokens])).logits[0, :-1].argmax(-1)
    cpu_gemv.set_threads(1)
    assert greedy.tolist() == tokens  # the static decoder feeds back the kernel path's argmax


def test_qwen2_with_qkv_biases_through_the_static_decoder():
    """Qwen2 (q/k/v biases, grouped KV heads): the static decoder gives the model's own logits, and through the
    kernel path the TopK hooks' logits."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(2)
    model = Qwen2ForCausalLM(Qwen2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=256)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)  # non-zero biases, so a kernel that drops them fails
    allocation = _allocation(model)
    ids = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(0))
    positions = range(ids.shape[1])
    with torch.no_grad():
        dense = model(ids).logits[0]
        with TopKSparsifier(model, allocation):
            masked = model(ids).logits[0]
        decoder = StaticDecoder(model, max_len=8)
        got = torch.cat([decoder.step(ids[0, t:t + 1], torch.tensor([t])) for t in positions])
        with cpu_sparse_decoding(model, allocation, backend="numba"):
            decoder = StaticDecoder(model, max_len=8)
            sparse = torch.cat([decoder.step(ids[0, t:t + 1], torch.tensor([t])) for t in positions])
    assert (got - dense).abs().max() < 1e-5
    assert (sparse - masked).abs().max() < 1e-5 and (masked - dense).abs().max() > 0.05
    with pytest.raises(UnsupportedArchitectureError, match="sliding-window"):
        model.config.use_sliding_window = True
        StaticDecoder(model)


def test_bfloat16_model_within_the_stated_tolerance():
    model = random_model("llama-tiny", seed=1, dtype=torch.bfloat16)
    allocation = _allocation(model)
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with TopKSparsifier(model, allocation):
            masked = model(ids).logits[0].float()
        with cpu_sparse_decoding(model, allocation, backend="numba"):
            decoded = _decode_with_cache(model, ids)
    assert (decoded - masked).abs().max() <= 4 * 2.0 ** -8 * masked.abs().max()
    assert torch.equal(decoded.argmax(-1), masked.argmax(-1))


def test_fallback_to_the_torch_path_says_why(tiny, monkeypatch):
    model, ids = tiny["model"], tiny["ids"]
    with torch.no_grad():
        with TopKSparsifier(model, 0.5):
            masked = model(ids).logits[0]
        with pytest.warns(UserWarning, match="float32 or bfloat16"):
            with cpu_sparse_decoding(random_model("llama-tiny", dtype=torch.float16), 0.5) as run:
                assert run.backend == "torch" and not run.groups
        monkeypatch.setattr(cpu_gemv, "numba_available", lambda: False)
        with pytest.warns(UserWarning, match="numba is not installed"):
            with cpu_sparse_decoding(model, 0.5) as run:
                assert run.backend == "torch"
                decoded = _decode_with_cache(model, ids)
        assert (decoded - masked).abs().max() < 1e-5
        with pytest.raises(DeviceError, match=r"cpu-kernels"):
            with cpu_sparse_decoding(model, 0.5, backend="numba"):
                pass
    assert all(isinstance(m, nn.Linear) for _, m in iter_projections(model))


def test_reconfigure_switches_allocation_and_mode_without_new_weights(tiny):
    model, ids, allocation = tiny["model"], tiny["ids"], tiny["allocation"]
    thresholds = calibrate_thresholds(model, 0.5, ids)
    with torch.no_grad():
        dense = model(ids).logits[0]
        with TopKSparsifier(model, allocation):
            topk = model(ids).logits[0]
        with WinaSparsifier(model, allocation):
            wina = model(ids).logits[0]
        with cpu_sparse_decoding(model, 0.0, backend="numba", dense_through_kernel=True) as run:
            weights = {name: m.w_t for name, m in run.modules.items()}
            for alloc, mode, expected in ((allocation, "topk", topk), (allocation, "wina", wina),
                                          (0.0, "topk", dense), (allocation, "topk", topk)):
                run.reconfigure(alloc, mode=mode)
                run.reset_stats()
                assert (_decode_with_cache(model, ids) - expected).abs().max() < 1e-5, mode
                assert (model(ids).logits[0] - expected).abs().max() < 1e-5, mode  # prefill path too
            assert 0.1 < run.stats()["read_fraction"] < 0.9
            run.reconfigure(0.5, mode="threshold", thresholds=thresholds)
            thr = _decode_with_cache(model, ids)
            assert all(m.w_t is weights[name] for name, m in run.modules.items())
    with cpu_sparse_decoding(model, 0.5, mode="threshold", thresholds=thresholds, backend="numba"):
        with torch.no_grad():
            assert (_decode_with_cache(model, ids) - thr).abs().max() < 1e-6
