"""Sparse GEMV (PyTorch fallback, dispatch, errors), the sparse decoding path and the static decoder.

The Triton kernels are checked on CPU by Triton's interpreter in a separate
process (``tests/triton_interp_cases.py``, see its docstring for why).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from threshold_masking import threshold_logits
from torch import nn

from acttail_lab.core.errors import (
    ActTailError,
    AllocationError,
    DeviceError,
    KernelInputError,
)
from acttail_lab.core.models import iter_projections, projection_table, random_model
from acttail_lab.sparsify.kernels import (
    choose_backend,
    dispatch,
    input_major,
    sparse_gemv,
)
from acttail_lab.sparsify.kernels.decode import (
    SparseLinear,
    calibrate_thresholds,
    sparse_decoding,
)
from acttail_lab.sparsify.kernels.graph_decode import GraphedDecoder, StaticDecoder
from acttail_lab.sparsify.topk import TopKSparsifier, keep_count, topk_mask

TESTS = Path(__file__).resolve().parent
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def masked_reference(x, w_t, mask):
    """float64 ``(x * mask) @ w_t`` and ``|x * mask| @ |w_t|`` (scale of the accumulation error)."""
    xm = (x * mask).double()
    return xm @ w_t.double(), xm.abs() @ w_t.double().abs()


def assert_close_to_reference(y, ref, bound, dtype, acc=1e-6):
    """At most one ulp of the output dtype plus fp32 accumulation error (``acc`` x the sum of |terms|)."""
    assert y.dtype == dtype and y.shape == ref.shape
    tol = (torch.finfo(dtype).eps * ref.abs() + acc * bound + 1e-7).flatten()
    err = (y.double() - ref).abs().flatten()
    worst = int((err - tol).argmax())
    assert bool((err <= tol).all()), f"error {err[worst]:.3g} > tolerance {tol[worst]:.3g}"


# --------------------------------------------------------------------------- the PyTorch fallback
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("shape", [(64, 48), (257, 130), (1000, 31)])
def test_torch_backend_matches_masked_reference(dtype, sparsity, shape):
    d_in, d_out = shape
    gen = torch.Generator().manual_seed(d_in + int(100 * sparsity))
    w_t = input_major(torch.randn(d_out, d_in, generator=gen).to(dtype))
    x = torch.randn(1, d_in, generator=gen).to(dtype)
    y = sparse_gemv(x, w_t, sparsity, backend="torch")
    ref, bound = masked_reference(x, w_t, topk_mask(x, keep_count(sparsity, d_in)))
    assert_close_to_reference(y, ref, bound, dtype)
    if sparsity > 0:  # the dropped inputs change the result far beyond the tolerance
        dense, _ = masked_reference(x, w_t, torch.ones_like(x, dtype=torch.bool))
        assert (y.double() - dense).abs().max() > 0.1


def test_keeps_exactly_k_largest_including_ties():
    # With w_t = identity the GEMV returns the kept inputs themselves.
    x = torch.tensor([[3.0, -3.0, 1.0, 3.0, -2.0, 0.0, 2.0, -3.0]])
    eye = torch.eye(8)
    for k in range(9):
        y = sparse_gemv(x, eye, k=k, backend="torch")
        kept = (y != 0) | ((x == 0) & topk_mask(x, k))
        assert int(kept.sum()) == k
        assert torch.equal(kept, topk_mask(x, k))  # ties at the cut: first positions
        assert torch.equal(y, x * kept)
    # k = 2 among four tied |3|: positions 0 and 1
    assert torch.equal(sparse_gemv(x, eye, k=2, backend="torch"), torch.tensor([[3.0, -3.0, 0, 0, 0, 0, 0, 0]]))


def test_rows_threshold_bias_and_shapes():
    gen = torch.Generator().manual_seed(0)
    w_t = input_major(torch.randn(30, 50, generator=gen))
    x = torch.randn(2, 3, 50, generator=gen)  # any leading dims: one row per token
    bias = torch.randn(30, generator=gen)
    y = sparse_gemv(x, w_t, 0.6, bias=bias, backend="torch")
    assert y.shape == (2, 3, 30)
    mask = topk_mask(x, keep_count(0.6, 50))
    ref, bound = masked_reference(x, w_t, mask)
    assert_close_to_reference(y, ref + bias.double(), bound + bias.double().abs(), torch.float32)
    # threshold: keep |x| > 0.7, a different count per row
    y = sparse_gemv(x, w_t, threshold=0.7, backend="torch")
    ref, bound = masked_reference(x, w_t, x.abs() > 0.7)
    assert_close_to_reference(y, ref, bound, torch.float32)
    assert torch.equal(sparse_gemv(x[0, 0], w_t, k=0, backend="torch"), torch.zeros(30))
    for rows in (x[0, :1], x[0]):  # nothing above the threshold: zeros, one row or several
        assert torch.equal(sparse_gemv(rows, w_t, threshold=1e9, backend="torch"), torch.zeros(rows.shape[0], 30))


# --------------------------------------------------------------------------- bad input, backends
def test_bad_inputs_name_the_problem():
    w_t = torch.randn(16, 8)
    x = torch.randn(16)
    with pytest.raises(KernelInputError, match="float64"):
        sparse_gemv(x.double(), w_t.double(), 0.5)
    with pytest.raises(KernelInputError, match="int64"):
        sparse_gemv(x.long(), w_t, 0.5)
    with pytest.raises(KernelInputError, match="output-major"):
        sparse_gemv(torch.randn(8), w_t, 0.5)  # x matches d_out: a [d_out, d_in] weight was passed
    with pytest.raises(KernelInputError, match="Shape mismatch"):
        sparse_gemv(torch.randn(5), w_t, 0.5)
    with pytest.raises(KernelInputError, match="input-major"):
        sparse_gemv(x, torch.randn(8, 16).t(), 0.5)  # right shape [16, 8], output-major strides
    with pytest.raises(KernelInputError, match="x = x.to"):
        sparse_gemv(x.half(), w_t, 0.5)
    with pytest.raises(KernelInputError, match="exactly one"):
        sparse_gemv(x, w_t, 0.5, k=3)
    with pytest.raises(KernelInputError, match="exactly one"):
        sparse_gemv(x, w_t)
    with pytest.raises(KernelInputError, match=r"outside \[0, 1\)"):
        sparse_gemv(x, w_t, 1.0)
    with pytest.raises(KernelInputError, match="k=17"):
        sparse_gemv(x, w_t, k=17)
    with pytest.raises(KernelInputError, match="bias"):
        sparse_gemv(x, w_t, 0.5, bias=torch.zeros(9))
    with pytest.raises(KernelInputError, match="backend"):
        sparse_gemv(x, w_t, 0.5, backend="cuda")
    assert issubclass(KernelInputError, ActTailError)


def test_triton_demanded_without_gpu_is_a_device_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    mod = sys.modules.get("acttail_lab.sparsify.kernels.triton_gemv")
    if mod is not None and mod.interpreted():
        pytest.skip("this process compiled the kernels for the interpreter")
    w_t, x = torch.randn(16, 8), torch.randn(16)
    if dispatch.triton_installed():
        with pytest.raises(DeviceError, match="backend='torch'"):
            sparse_gemv(x, w_t, 0.5, backend="triton")
    monkeypatch.setattr(dispatch, "triton_installed", lambda: False)
    with pytest.raises(DeviceError, match="pip install triton"):
        sparse_gemv(x, w_t, 0.5, backend="triton")
    # the fallback is chosen only when the GPU path was not demanded
    assert choose_backend("auto", "cpu") == "torch"
    assert choose_backend("torch", "cpu") == "torch"
    assert torch.equal(sparse_gemv(x, w_t, 0.5), sparse_gemv(x, w_t, 0.5, backend="torch"))


class _KernelModule:
    """Stands in for triton_gemv (importing it here would compile it for this whole session)."""

    def __init__(self, interpreted):
        self._interpreted = interpreted

    def interpreted(self):
        return self._interpreted


def test_interpreter_on_cpu_and_set_too_late(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(dispatch, "triton_module", lambda: _KernelModule(True))
    assert dispatch.choose_backend("triton", "cpu") == "triton"
    assert dispatch.choose_backend("auto", "cpu") == "torch"  # auto never picks the slow interpreter
    monkeypatch.setattr(dispatch, "triton_module", lambda: _KernelModule(False))
    with pytest.raises(DeviceError, match="before anything imports triton"):
        dispatch.choose_backend("triton", "cpu")


@pytest.mark.skipif(not dispatch.triton_installed(), reason="triton is not installed (pip install triton)")
def test_triton_kernels_in_the_interpreter():
    """The Triton kernels on CPU via TRITON_INTERPRET=1, in a fresh process (see triton_interp_cases.py)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(TESTS / "triton_interp_cases.py")],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


# --------------------------------------------------------------------------- whole-model decoding
@pytest.fixture(scope="module")
def tiny():
    model = random_model("llama-tiny", seed=1)
    table = projection_table(model)
    rng = np.random.default_rng(0)
    allocation = dict(zip(table["name"], rng.uniform(0.1, 0.95, len(table))))
    allocation[table["name"][3]] = 0.0  # one dense projection: stays an nn.Linear
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model(ids).logits[0]
        with TopKSparsifier(model, allocation):
            masked = model(ids).logits[0]
    return dict(model=model, allocation=allocation, ids=ids, dense=dense, masked=masked)


def _decode_with_cache(model, ids):
    past, steps = None, []
    for t in range(ids.shape[1]):
        out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits[0, -1])
    return torch.stack(steps)


def test_sparse_decoding_gives_the_logits_of_topk_masking(tiny):
    model, allocation = tiny["model"], tiny["allocation"]
    before = [m for _, m in iter_projections(model)]
    assert (tiny["masked"] - tiny["dense"]).abs().max() > 0.05  # masking matters on this model
    with torch.no_grad(), sparse_decoding(model, allocation, backend="torch") as table:
        assert table["swapped"].tolist() == (table["k"] < table["d_in"]).tolist()
        assert table["swapped"].sum() == len(table) - 1 and not table["swapped"][3]
        kinds = [type(model.get_submodule(name)) for name in table["name"]]
        assert kinds.count(SparseLinear) == len(table) - 1 and kinds[3] is nn.Linear
        prefill = model(tiny["ids"]).logits[0]
        decoded = _decode_with_cache(model, tiny["ids"])
    assert (prefill - tiny["masked"]).abs().max() < 1e-5
    assert (decoded - tiny["masked"]).abs().max() < 1e-5
    assert [m for _, m in iter_projections(model)] == before  # originals restored


def test_sparse_decoding_holds_one_copy_of_each_swapped_weight(tiny):
    model = tiny["model"]
    linears = {row["name"]: m for row, m in iter_projections(model)}
    saved = {name: m.weight.detach().clone() for name, m in linears.items()}
    with torch.no_grad(), sparse_decoding(model, tiny["allocation"], backend="torch") as table:
        for name, swapped in zip(table["name"], table["swapped"]):
            weight = linears[name].weight
            if swapped:  # the Linear views W^T: no second storage while swapped out
                assert weight.untyped_storage().data_ptr() == model.get_submodule(name).w_t.untyped_storage().data_ptr()
                assert not weight.is_contiguous()
            else:
                assert weight.is_contiguous()
        decoded = _decode_with_cache(model, tiny["ids"])
    assert (decoded - tiny["masked"]).abs().max() < 1e-5
    for name, m in linears.items():  # restored: row-major, bit for bit
        assert m.weight.is_contiguous() and torch.equal(m.weight, saved[name]), name
    with torch.no_grad():
        assert (model(tiny["ids"]).logits[0] - tiny["dense"]).abs().max() < 1e-6


def test_sparse_decoding_restores_on_error_and_checks_its_inputs(tiny):
    model = tiny["model"]
    before = [m for _, m in iter_projections(model)]
    with pytest.raises(RuntimeError, match="boom"):
        with sparse_decoding(model, 0.5, backend="torch"):
            raise RuntimeError("boom")
    assert [m for _, m in iter_projections(model)] == before
    assert all(m.weight.is_contiguous() for m in before)
    with pytest.raises(AllocationError, match="missing"):
        with sparse_decoding(model, {"model.layers.0.self_attn.q_proj": 0.5}):
            pass
    with pytest.raises(AllocationError, match="thresholds"):
        with sparse_decoding(model, 0.5, mode="threshold"):
            pass
    if not torch.cuda.is_available():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(dispatch, "triton_module", lambda: _KernelModule(False))
            mp.delenv("TRITON_INTERPRET", raising=False)
            with pytest.raises(DeviceError, match="backend='triton'"):
                with sparse_decoding(model, 0.5, backend="triton"):
                    pass
    assert [m for _, m in iter_projections(model)] == before


def test_threshold_mode_keeps_inputs_above_calibrated_thresholds(tiny):
    model, ids = tiny["model"], tiny["ids"]
    thresholds = calibrate_thresholds(model, 0.6, ids)
    assert np.allclose(thresholds["calibrated_sparsity"], 0.6, atol=0.02)
    expected = threshold_logits(model, ids, thresholds)
    with torch.no_grad(), sparse_decoding(model, 0.6, backend="torch", mode="threshold", thresholds=thresholds):
        decoded = _decode_with_cache(model, ids)
    assert (decoded - expected).abs().max() < 1e-5
    assert (expected - tiny["dense"]).abs().max() > 0.05


def test_static_decoder_matches_the_model(tiny):
    model, ids = tiny["model"], tiny["ids"]
    positions = range(ids.shape[1])
    with torch.no_grad():
        dense = StaticDecoder(model, max_len=16)
        got = torch.cat([dense.step(ids[0, t:t + 1], torch.tensor([t])) for t in positions])
        assert (got - tiny["dense"]).abs().max() < 1e-5
        with sparse_decoding(model, tiny["allocation"], backend="torch"):
            sparse = StaticDecoder(model, max_len=16)
            got = torch.cat([sparse.step(ids[0, t:t + 1], torch.tensor([t])) for t in positions])
            tokens = sparse.decode(first_token=5, n_tokens=6)
            sequence = torch.tensor([[5] + tokens])
            greedy = model(sequence).logits[0, :-1].argmax(-1)
    assert (got - tiny["masked"]).abs().max() < 1e-5
    assert greedy.tolist() == tokens  # decode() feeds back the argmax, position by position
    with pytest.raises(DeviceError, match="CUDA"):
        GraphedDecoder(dense)


def test_sparse_decoding_shares_one_input_major_copy_across_allocations(tiny):
    model = tiny["model"]
    cache = {}
    with torch.no_grad():
        with sparse_decoding(model, 0.5, backend="torch", weights=cache) as first:
            a = model.get_submodule(first["name"][0]).w_t
            out_a = model(tiny["ids"][:, :1]).logits
        with sparse_decoding(model, 0.7, backend="torch", weights=cache) as second:
            b = model.get_submodule(second["name"][0]).w_t
            assert model.get_submodule(second["name"][0]).k == keep_count(0.7, 64)
    assert a is b and len(cache) == first["swapped"].sum()
    q = model.get_submodule(first["name"][0])
    assert torch.equal(a, q.weight.t())
    with torch.no_grad(), TopKSparsifier(model, 0.5):
        assert (model(tiny["ids"][:, :1]).logits - out_a).abs().max() < 1e-5


# --------------------------------------------------------------------------- on a GPU (skipped elsewhere)
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and dispatch.triton_installed()),
                               reason="needs a CUDA GPU and triton")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4096, 4096), (4096, 11008), (11008, 4096)])
def test_triton_on_gpu_matches_the_masked_reference(dtype, shape):
    d_in, d_out = shape
    gen = torch.Generator().manual_seed(d_out)
    w_t = input_major((torch.randn(d_out, d_in, generator=gen) * d_in ** -0.5).to(dtype)).cuda()
    x = torch.randn(1, d_in, generator=gen).to(dtype).cuda()
    for sparsity in (0.0, 0.5, 0.9):
        y = sparse_gemv(x, w_t, sparsity, backend="triton")
        assert y.is_cuda
        ref, bound = masked_reference(x.cpu(), w_t.cpu(), topk_mask(x.cpu(), keep_count(sparsity, d_in)))
        assert_close_to_reference(y.cpu(), ref, bound, dtype, acc=2e-5)  # up to 11008 fp32 terms
    y = sparse_gemv(x, w_t, threshold=0.7, backend="triton")
    ref, bound = masked_reference(x.cpu(), w_t.cpu(), x.cpu().abs() > 0.7)
    assert_close_to_reference(y.cpu(), ref, bound, dtype, acc=2e-5)


@needs_gpu
def test_graphed_sparse_decoding_on_gpu_equals_eager():
    model = random_model("llama-tiny", seed=3, dtype=torch.float16).cuda()
    with torch.no_grad(), sparse_decoding(model, 0.6, backend="triton"):
        decoder = StaticDecoder(model, max_len=12)
        eager = decoder.decode(first_token=7, n_tokens=12)
        graphed = GraphedDecoder(decoder, first_token=7)
        tokens = []
        for _ in range(12):
            graphed.replay()
            tokens.append(int(graphed.token))
    assert tokens == eager
