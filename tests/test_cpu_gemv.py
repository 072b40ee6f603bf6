"""The numba CPU sparse GEMV (``kernels.cpu_gemv``): kept sets, products, threads, fallback messages.

Tolerance of a product (stated once, used everywhere): against the float64 product of the masked
input, ``|y - ref| <= eps(out dtype) * |ref| + n * 2**-24 * sum_i |x_i w_i|`` (one rounding of the output
plus the worst case of n float32 additions in sequence, n = kept inputs). A missing or extra row moves
the result by one whole term, far beyond it at these sizes.
"""
import numpy as np
import pytest
import torch

from acttail_lab.core.errors import DeviceError, KernelInputError
from acttail_lab.sparsify.kernels import input_major, sparse_gemv
from acttail_lab.sparsify.topk import keep_count, topk_mask
from acttail_lab.sparsify.wina import wina_mask

pytest.importorskip("numba")
from acttail_lab.sparsify.kernels import cpu_gemv  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16]


def assert_matches_masked(y, x, w_t, mask):
    xm = (x * mask).double()
    ref, terms = xm @ w_t.double(), xm.abs() @ w_t.double().abs()
    n = mask.sum(-1, keepdim=True).double()
    tol = torch.finfo(y.dtype).eps * ref.abs() + n * 2.0 ** -24 * terms + 1e-30
    err = (y.double() - ref).abs()
    assert y.dtype == w_t.dtype and y.shape == ref.shape
    assert bool((err <= tol).all()), f"error {float((err - tol).max()):.3g} above the tolerance"


def operands(d_in, d_out, dtype, seed, rows=1):
    gen = torch.Generator().manual_seed(seed)
    w_t = input_major((torch.randn(d_out, d_in, generator=gen) * d_in ** -0.5).to(dtype))
    return torch.randn(rows, d_in, generator=gen).to(dtype), w_t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (257, 131), (1000, 67)])
def test_topk_product_equals_the_dense_product_of_the_masked_input(dtype, shape):
    d_in, d_out = shape
    x, w_t = operands(d_in, d_out, dtype, seed=d_in)
    for k in sorted({0, 1, d_in // 3, d_in - 1, d_in}):
        y = cpu_gemv.sparse_gemv_numba(x, w_t, k=k, threads=1)
        assert_matches_masked(y, x, w_t, topk_mask(x, k))
    if d_in > 1:  # the dropped inputs matter far beyond the tolerance
        full = cpu_gemv.sparse_gemv_numba(x, w_t, k=d_in, threads=1)
        assert (full.double() - cpu_gemv.sparse_gemv_numba(x, w_t, k=1, threads=1).double()).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_product_and_rounding_of_the_threshold(dtype):
    x, w_t = operands(301, 45, dtype, seed=3, rows=2)
    for t in (-1.0, 0.0, 0.3, 0.7, 1e9):
        y = cpu_gemv.sparse_gemv_numba(x, w_t, threshold=t, threads=1)
        assert_matches_masked(y, x, w_t, x.abs() > t)  # torch rounds t to x's dtype, so must the kernel
    assert torch.equal(cpu_gemv.sparse_gemv_numba(x, w_t, threshold=1e9), torch.zeros(2, 45, dtype=dtype))
    # 1.003 rounds to 1.0 in bfloat16 (not kept: 1.0 > 1.0 is false) but not in float32
    x = torch.tensor([[1.0, 1.0078125]], dtype=dtype)
    kept = cpu_gemv.sparse_gemv_numba(x, torch.eye(2, dtype=dtype), threshold=1.003)
    assert torch.equal(kept, x * (x.abs() > 1.003))


def test_kept_set_is_exactly_topk_mask_with_ties_nan_inf_and_zeros():
    x = torch.tensor([[3.0, -3.0, 0.0, 3.0, -2.0, 0.0, 2.0, -3.0, float("inf"), -0.0, 1e-30, float("nan")]])
    work = cpu_gemv.Workspace(x.shape[1])
    xs = cpu_gemv.activation_row(x)
    for k in range(x.shape[1] + 1):
        idx = work.topk(xs, np.array([k], dtype=np.int64))[0, :k]
        got = torch.zeros(x.shape[1], dtype=torch.bool)
        got[torch.from_numpy(idx.copy())] = True
        assert torch.equal(got, topk_mask(x, k)[0]), k
        assert list(idx) == sorted(idx)  # kept rows are read front to back
    # several k from one histogram: nested sets, each exact
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4099, generator=gen).bfloat16()  # many ties in bfloat16
    ks = np.array([4099, 3000, 2049, 17, 0], dtype=np.int64)
    idx = cpu_gemv.Workspace(4099, rows=len(ks)).topk(cpu_gemv.activation_row(x), ks)
    for r, k in enumerate(ks):
        mask = torch.zeros(4099, dtype=torch.bool)
        mask[torch.from_numpy(idx[r, :k].copy())] = True
        assert torch.equal(mask, topk_mask(x, int(k))[0])


def test_wina_scores_select_as_wina_mask():
    gen = torch.Generator().manual_seed(1)
    x, norms = torch.randn(1, 513, generator=gen), torch.rand(513, generator=gen) + 0.1
    work = cpu_gemv.Workspace(513)
    for k in (1, 100, 512):
        idx = work.topk(cpu_gemv.activation_row(x), np.array([k], dtype=np.int64), scale=norms.numpy())[0, :k]
        mask = torch.zeros(513, dtype=torch.bool)
        mask[torch.from_numpy(idx.copy())] = True
        assert torch.equal(mask, wina_mask(x, norms, k)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_and_blocks_give_the_same_bits(dtype):
    x, w_t = operands(300, 1029, dtype, seed=5)
    w, xs = cpu_gemv.weight_array(w_t), cpu_gemv.activation_row(x)
    idx = np.sort(np.random.default_rng(0).choice(300, 150, replace=False)).astype(np.int64)
    one = cpu_gemv.gemv(w, xs, idx, 150, threads=1)
    assert np.array_equal(one, cpu_gemv.gemv(w, xs, idx, 150, threads=1, block=64))
    used = cpu_gemv.set_threads(2)
    try:
        assert np.array_equal(one, cpu_gemv.gemv(w, xs, idx, 150, threads=2))
        assert np.array_equal(one, cpu_gemv.gemv(w, xs, idx, 150, threads=2, block=32))
    finally:
        cpu_gemv.set_threads(1)
    assert used >= 1
    import os

    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:  # numba's OpenMP layer slows torch's own ops (cpu_gemv doc)
        assert numba.threading_layer() == "workqueue"
    # given positions (any order) = the same product
    given = torch.from_numpy(idx[::-1].copy())[None, :]
    y = cpu_gemv.sparse_gemv_numba(x, w_t, idx=given, threads=1)
    assert torch.equal(y, torch.from_numpy(one)[None].to(dtype))


def test_dispatch_backend_numba_with_bias_and_leading_dims():
    x, w_t = operands(64, 30, torch.float32, seed=2, rows=6)
    bias = torch.randn(30)
    y = sparse_gemv(x.view(2, 3, 64), w_t, 0.6, bias=bias, backend="numba")
    ref = sparse_gemv(x.view(2, 3, 64), w_t, 0.6, bias=bias, backend="torch")
    assert y.shape == (2, 3, 30) and (y - ref).abs().max() < 1e-5
    assert torch.equal(sparse_gemv(x[0], w_t, k=0, backend="numba"), torch.zeros(30))
    mask = topk_mask(x, keep_count(0.6, 64))
    assert_matches_masked(y.view(6, 30) - bias, x, w_t, mask)


def test_refusals_name_the_fix(monkeypatch):
    x, w_t = operands(16, 8, torch.float16, seed=0)
    with pytest.raises(KernelInputError, match="backend='torch'"):
        sparse_gemv(x, w_t, 0.5, backend="numba")
    with pytest.raises(KernelInputError, match="input_major"):
        cpu_gemv.weight_array(torch.randn(8, 16).t())
    monkeypatch.setattr(cpu_gemv, "numba_available", lambda: False)
    with pytest.raises(DeviceError, match=r"acttail-lab\[cpu-kernels\]"):
        sparse_gemv(x.float(), w_t.float(), 0.5, backend="numba")
    assert torch.equal(sparse_gemv(x.float(), w_t.float(), 0.5), sparse_gemv(x.float(), w_t.float(), 0.5,
                                                                                backend="torch"))
