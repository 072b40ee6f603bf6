"""Triton kernels on CPU through Triton's interpreter, against PyTorch references.

Not collected by the main test session (the name does not start with ``test_``):
``tests/test_kernels.py::test_triton_kernels_in_the_interpreter`` runs this file
in a fresh ``python -m pytest`` process with ``TRITON_INTERPRET=1``, because the
variable only takes effect if it is set before triton is first imported, and the
main session may have imported triton already. Running this file directly
(``pytest tests/triton_interp_cases.py``) also works: it sets the variable
before importing anything that imports triton.

Sizes are small on purpose: the interpreter runs every program instance in numpy.
"""
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (docs/notes.md, "Triton on a CPU")

import pytest  # noqa: E402

if "triton" in sys.modules:  # imported before the variable was set: the kernels would not be interpreted
    pytest.skip("triton was imported before TRITON_INTERPRET=1; run this file in a fresh process",
                allow_module_level=True)
pytest.importorskip("triton")

import torch  # noqa: E402

from acttail_lab.core.models import projection_table, random_model  # noqa: E402
from acttail_lab.sparsify.kernels import input_major, sparse_gemv  # noqa: E402
from acttail_lab.sparsify.kernels import triton_gemv as tg  # noqa: E402
from acttail_lab.sparsify.kernels.decode import sparse_decoding  # noqa: E402
from acttail_lab.sparsify.topk import TopKSparsifier, keep_count, topk_mask  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SPLIT = tg.GemvConfig(block_n=32, block_k=16, waves=4.0, num_warps=1)
"""Small tiles: several output blocks, partial tiles and split-K slices on the test shapes."""


def masked_reference(x, w_t, mask):
    """float64 ``(x * mask) @ w_t`` and the bound ``|x * mask| @ |w_t|`` for the tolerance."""
    xm = (x * mask).double()
    return xm @ w_t.double(), xm.abs() @ w_t.double().abs()


def assert_close_to_reference(y, ref, bound, dtype):
    """Output rounding (one ulp of the dtype) plus fp32 accumulation error."""
    assert y.dtype == dtype
    tol = torch.finfo(dtype).eps * ref.abs() + 1e-6 * bound + 1e-7
    err = (y.double() - ref).abs().flatten()
    worst = int((err - tol.flatten()).argmax())
    assert bool((err <= tol.flatten()).all()), f"error {err[worst]:.3g} > tolerance {tol.flatten()[worst]:.3g}"


def test_kernels_are_interpreted():
    assert tg.interpreted()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95])
def test_topk_gemv_matches_masked_reference(dtype, sparsity):
    gen = torch.Generator().manual_seed(int(sparsity * 100) + DTYPES.index(dtype))
    d_in, d_out = 100, 70  # odd sizes: partial tiles in both directions, several split-K slices
    w_t = input_major(torch.randn(d_out, d_in, generator=gen).to(dtype))
    x = torch.randn(1, d_in, generator=gen).to(dtype)
    y = sparse_gemv(x, w_t, sparsity, backend="triton", config=SPLIT)
    k = keep_count(sparsity, d_in)
    ref, bound = masked_reference(x, w_t, topk_mask(x, k))
    assert_close_to_reference(y, ref, bound, dtype)
    # and it is not the dense product when inputs are dropped
    if sparsity > 0:
        dense, _ = masked_reference(x, w_t, torch.ones_like(x, dtype=torch.bool))
        assert (y.double() - dense).abs().max() > 0.1


def test_several_rows_and_bias():
    gen = torch.Generator().manual_seed(5)
    w_t = input_major(torch.randn(40, 257, generator=gen))
    x = torch.randn(3, 257, generator=gen)
    bias = torch.randn(40, generator=gen)
    y = sparse_gemv(x, w_t, 0.7, bias=bias, backend="triton")
    ref, bound = masked_reference(x, w_t, topk_mask(x, keep_count(0.7, 257)))
    assert_close_to_reference(y, ref + bias.double(), bound + bias.double().abs(), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selection_equals_topk_mask_with_ties(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-4, 5, (2, 300), generator=gen).to(dtype)  # many ties at every cut, zeros too
    for k in (1, 37, 150, 299):
        idx = tg.select_topk(x, k).long()
        assert idx.shape == (2, k)
        assert torch.equal(idx, topk_mask(x, k).nonzero()[:, 1].view(2, k))


def test_threshold_kernel():
    gen = torch.Generator().manual_seed(4)
    w_t = input_major(torch.randn(70, 100, generator=gen).half())
    x = torch.randn(1, 100, generator=gen).half()
    y = sparse_gemv(x, w_t, threshold=0.8, backend="triton", config=SPLIT)
    ref, bound = masked_reference(x, w_t, x.abs() > 0.8)
    assert_close_to_reference(y, ref, bound, torch.float16)


def test_decoding_through_triton_equals_topk_masking():
    model = random_model("llama-tiny", seed=2, num_hidden_layers=1)  # 7 projections x 2 steps: interpreter time
    table = projection_table(model)
    gen = torch.Generator().manual_seed(6)
    allocation = dict(zip(table["name"], (torch.rand(len(table), generator=gen) * 0.9).tolist()))
    ids = torch.randint(0, 256, (1, 2), generator=gen)  # two steps: the second reads the KV cache
    with torch.no_grad():
        with TopKSparsifier(model, allocation):
            expected = model(ids).logits[0]
        with sparse_decoding(model, allocation, backend="triton") as used:
            assert used["swapped"].all() and (used["backend"] == "triton").all()
            past, steps = None, []
            for t in range(ids.shape[1]):
                out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
                past = out.past_key_values
                steps.append(out.logits[0, -1])
    assert (torch.stack(steps) - expected).abs().max() < 1e-4
