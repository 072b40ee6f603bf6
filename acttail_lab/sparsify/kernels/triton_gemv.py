"""Triton kernels for batch-1 sparse GEMV over input-major weights.

Imported lazily (``acttail_lab.sparsify.kernels.dispatch`` imports it only when the
Triton backend is used), so the package works without Triton.

Layout: ``w_t`` is ``W^T``, shape ``[d_in, d_out]``, contiguous, so input
``i`` owns the contiguous row ``w_t[i, :]``. An inactive input then skips a
whole contiguous row of weight bytes: the saving is real memory traffic,
which is what bounds batch-1 decoding (limit ``1 / (1 - s)``).

Kernels (one output row of ``x`` per grid slice ``axis 2``):

* ``_topk_select_kernel``: the cheap separate selection pass. One program per
  row loads the whole row, finds the ``k``-th largest ``|x|`` by a binary
  search on the integer bit pattern of ``|x|`` (15 counting passes for
  fp16/bf16, 31 for fp32, over data held in registers), and writes the ``k``
  selected positions in increasing order. Ties at the cut keep the first tied
  positions, the rule of ``acttail_lab.sparsify.topk.topk_mask`` on CPU, so both
  select the same inputs.
* ``_gather_gemv_kernel``: split-K GEMV over a list of active input rows.
  Program ``(n, s)`` sums ``x[i] * w_t[i, n-block]`` over its slice ``s`` of
  the index list in fp32. With one slice and no bias it writes the output
  directly; otherwise it writes fp32 partials that ``_reduce_kernel`` sums
  (+ bias) into the output dtype (deterministic, no atomics).
* ``_threshold_gemv_kernel``: TEAL-style fused threshold. Program ``(n, s)``
  walks its slice of the inputs, keeps ``|x| > threshold`` and loads only
  the weight rows of kept inputs (masked loads issue no memory traffic).

So a TopK GEMV is 2-3 kernel launches (select, GEMV, reduce when split), a
threshold GEMV 1-2: at batch 1 these latencies are part of the cost, which is
why the benchmarks time them inside CUDA graphs.

Weights and ``x`` may be fp16, bf16 or fp32; products and sums are fp32
(cast before multiplying: the interpreter mishandles some bf16 arithmetic,
docs/notes.md, "Triton on a CPU"). ``tl.dot`` is not used.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

MAX_SELECT_WIDTH = 65536
"""Largest ``d_in`` the one-program selection kernel handles (the row lives in registers)."""


@triton.jit
def _topk_select_kernel(x_ptr, idx_ptr, D, K, stride_xr, stride_ir, BLOCK: tl.constexpr,
                        KEY_BITS: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    valid = offs < D
    if KEY_BITS == 16:  # fp16 / bf16: the 15 magnitude bits of the raw value
        raw = tl.load(x_ptr + row * stride_xr + offs, mask=valid, other=0.0)
        key = raw.to(tl.int16, bitcast=True).to(tl.int32) & 0x7FFF
    else:  # fp32
        raw = tl.load(x_ptr + row * stride_xr + offs, mask=valid, other=0.0).to(tl.float32)
        key = tl.abs(raw).to(tl.int32, bitcast=True)
    # |x| bits order like the magnitudes (NaN above inf); padding sorts below every key.
    key = tl.where(valid, key, -1)
    # The largest t with count(key >= t) >= K is the K-th largest key (count(key >= 0) = D >= K).
    lo = tl.full([], 0, dtype=tl.int32)
    hi = tl.full([], (1 << (KEY_BITS - 1)) - 1, dtype=tl.int32)
    for _ in range(KEY_BITS - 1):
        mid = lo + (hi - lo) // 2 + 1  # upper middle; no int32 overflow
        count = tl.sum((key >= mid).to(tl.int32), axis=0)
        take = count >= K
        lo = tl.where(take, mid, lo)
        hi = tl.where(take, hi, mid - 1)
    above = key > lo
    tied = key == lo
    need = K - tl.sum(above.to(tl.int32), axis=0)
    keep = above | (tied & (tl.cumsum(tied.to(tl.int32), axis=0) <= need))
    pos = tl.cumsum(keep.to(tl.int32), axis=0) - 1
    tl.store(idx_ptr + row * stride_ir + pos, offs, mask=keep)


@triton.jit
def _gather_gemv_kernel(x_ptr, idx_ptr, w_ptr, out_ptr, N, K, CHUNK,
                        stride_xr, stride_ir, stride_wk, stride_or, stride_os,
                        BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    row = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    start = pid_s * CHUNK
    for j in range(0, CHUNK, BLOCK_K):
        offs_k = start + j + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        idx = tl.load(idx_ptr + row * stride_ir + offs_k, mask=k_ok, other=0).to(tl.int64)
        xv = tl.load(x_ptr + row * stride_xr + idx, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + idx[:, None] * stride_wk + offs_n[None, :],
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(w * xv[:, None], axis=0)
    tl.store(out_ptr + row * stride_or + pid_s * stride_os + offs_n, acc, mask=n_ok)


@triton.jit
def _threshold_gemv_kernel(x_ptr, w_ptr, out_ptr, threshold, D, N, CHUNK,
                           stride_xr, stride_wk, stride_or, stride_os,
                           BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    row = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    start = pid_s * CHUNK
    for j in range(0, CHUNK, BLOCK_K):
        offs_k = start + j + tl.arange(0, BLOCK_K)
        k_ok = offs_k < D
        xv = tl.load(x_ptr + row * stride_xr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        active = k_ok & (tl.abs(xv) > threshold)
        w = tl.load(w_ptr + offs_k.to(tl.int64)[:, None] * stride_wk + offs_n[None, :],
                    mask=active[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(w * xv[:, None], axis=0)
    tl.store(out_ptr + row * stride_or + pid_s * stride_os + offs_n, acc, mask=n_ok)


@triton.jit
def _reduce_kernel(partial_ptr, bias_ptr, out_ptr, N, SPLIT, stride_pr, stride_ps, stride_or,
                   HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    row = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for s in range(0, SPLIT):
        acc += tl.load(partial_ptr + row * stride_pr + s * stride_ps + offs_n, mask=n_ok, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_or + offs_n, acc, mask=n_ok)


# --------------------------------------------------------------------------- launch configuration
def interpreted() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return type(_gather_gemv_kernel).__name__ == "InterpretedFunction"


@dataclass(frozen=True)
class GemvConfig:
    """Tile sizes of the GEMV kernels.

    block_n: output columns per program (contiguous bytes read per active row:
    ``block_n * itemsize``). block_k: active inputs per inner step. waves:
    target programs per streaming multiprocessor; the split-K factor is chosen
    so the grid reaches ``waves * SMs`` programs. num_warps: warps per program.
    """

    block_n: int = 128
    block_k: int = 32
    waves: float = 4.0
    num_warps: int = 4

    def split(self, n_out: int, n_rows_to_sum: int, n_sm: int) -> int:
        """Split-K factor: enough programs to fill the GPU, at least ``block_k`` inputs each."""
        n_blocks = math.ceil(n_out / self.block_n)
        want = math.ceil(self.waves * n_sm / n_blocks)
        return max(1, min(want, math.ceil(max(n_rows_to_sum, 1) / self.block_k)))


INTERPRETER_CONFIG = GemvConfig(block_n=64, block_k=32, waves=1.0, num_warps=1)
"""Tiles for the CPU interpreter, which pays per program instance: few programs on test shapes."""

_TUNED: dict[tuple, GemvConfig] = {}


def register_config(d_in: int, d_out: int, dtype: torch.dtype, config: GemvConfig) -> None:
    """Use ``config`` for every GEMV of this shape and dtype (e.g. after :func:`candidate_configs` timing)."""
    _TUNED[(int(d_in), int(d_out), dtype)] = config


def config_for(d_in: int, d_out: int, dtype: torch.dtype) -> GemvConfig:
    """The registered config of a shape, else the interpreter's or the default tiles."""
    found = _TUNED.get((int(d_in), int(d_out), dtype))
    if found is not None:
        return found
    return INTERPRETER_CONFIG if interpreted() else GemvConfig()


def candidate_configs() -> list[GemvConfig]:
    """Twelve configs worth timing on a GPU (``benchmarks/bench_gemv.py --tune`` picks the fastest per shape)."""
    return [GemvConfig(block_n=bn, block_k=bk, waves=w, num_warps=4)
            for bn in (64, 128, 256) for bk in (16, 32) for w in (2.0, 4.0)]


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 2  # interpreter: a couple of slices exercises the split-K path


# --------------------------------------------------------------------------- host wrappers
def select_topk(x2d: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` largest ``|x|`` of each row, increasing, int32 ``[rows, k]`` (``1 <= k < d``)."""
    rows, d = x2d.shape
    if d > MAX_SELECT_WIDTH:
        raise ValueError(f"The Triton selection handles d_in <= {MAX_SELECT_WIDTH}, got {d}. "
                         "Fix: use backend='torch' or a threshold for this projection.")
    idx = torch.empty((rows, k), dtype=torch.int32, device=x2d.device)
    block = triton.next_power_of_2(d)
    warps = 1 if interpreted() else max(4, min(32, block // 512))
    key_bits = 32 if x2d.dtype == torch.float32 else 16
    _topk_select_kernel[(rows,)](x2d, idx, d, k, x2d.stride(0), idx.stride(0), BLOCK=block, KEY_BITS=key_bits,
                                 num_warps=warps)
    return idx


def _plan(rows: int, d_out: int, n_sum: int, dtype: torch.dtype, device, config: GemvConfig, bias):
    """Split-K slice length, and where the GEMV kernel writes: the output itself (one slice, no bias)
    or fp32 partials ``[rows, split, d_out]`` for :func:`_finish`."""
    split = config.split(d_out, n_sum, _sm_count(device))
    chunk = max(config.block_k, math.ceil(n_sum / split / config.block_k) * config.block_k)
    split = max(1, math.ceil(n_sum / chunk))
    if split == 1 and bias is None:
        target = torch.empty((rows, 1, d_out), dtype=dtype, device=device)
    else:
        target = torch.empty((rows, split, d_out), dtype=torch.float32, device=device)
    return chunk, split, target


def _finish(target: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None) -> torch.Tensor:
    """Sum the split-K partials (+ bias) into ``[rows, d_out]`` of ``dtype``: one small kernel."""
    rows, split, d_out = target.shape
    if target.dtype == dtype and split == 1 and bias is None:
        return target[:, 0]
    out = torch.empty((rows, d_out), dtype=dtype, device=target.device)
    block = 1024 if not interpreted() else 64
    _reduce_kernel[(triton.cdiv(d_out, block), rows)](
        target, bias if bias is not None else target, out, d_out, split,
        target.stride(0), target.stride(1), out.stride(0), HAS_BIAS=bias is not None, BLOCK_N=block)
    return out


def gemv_indices(x2d: torch.Tensor, w_t: torch.Tensor, idx: torch.Tensor, bias: torch.Tensor | None = None,
                 config: GemvConfig | None = None) -> torch.Tensor:
    """``sum_j x[r, idx[r, j]] * w_t[idx[r, j], :] (+ bias)`` per row ``r``: ``[rows, d_out]`` in the weight dtype."""
    rows, k = idx.shape
    d_out = w_t.shape[1]
    config = config or config_for(w_t.shape[0], d_out, w_t.dtype)
    chunk, split, target = _plan(rows, d_out, k, w_t.dtype, w_t.device, config, bias)
    grid = (triton.cdiv(d_out, config.block_n), split, rows)
    _gather_gemv_kernel[grid](x2d, idx, w_t, target, d_out, k, chunk,
                              x2d.stride(0), idx.stride(0), w_t.stride(0), target.stride(0), target.stride(1),
                              BLOCK_K=config.block_k, BLOCK_N=config.block_n, num_warps=config.num_warps)
    return _finish(target, w_t.dtype, bias)


def gemv_threshold(x2d: torch.Tensor, w_t: torch.Tensor, threshold: float, bias: torch.Tensor | None = None,
                   config: GemvConfig | None = None) -> torch.Tensor:
    """``sum_{i: |x[r, i]| > threshold} x[r, i] * w_t[i, :] (+ bias)`` per row (fused mask), weight dtype."""
    rows, d_in = x2d.shape
    d_out = w_t.shape[1]
    config = config or config_for(d_in, d_out, w_t.dtype)
    chunk, split, target = _plan(rows, d_out, d_in, w_t.dtype, w_t.device, config, bias)
    grid = (triton.cdiv(d_out, config.block_n), split, rows)
    _threshold_gemv_kernel[grid](x2d, w_t, target, float(threshold), d_in, d_out, chunk,
                                 x2d.stride(0), w_t.stride(0), target.stride(0), target.stride(1),
                                 BLOCK_K=config.block_k, BLOCK_N=config.block_n, num_warps=config.num_warps)
    return _finish(target, w_t.dtype, bias)


def sparse_gemv_triton(x2d: torch.Tensor, w_t: torch.Tensor, k: int | None = None,
                       threshold: float | None = None, bias: torch.Tensor | None = None,
                       config: GemvConfig | None = None) -> torch.Tensor:
    """TopK (``k`` kept per row) or threshold sparse GEMV, ``[rows, d_out]`` in the weight dtype.

    Inputs are already validated (``reference.check_inputs``); ``x2d`` has contiguous rows.
    """
    if threshold is not None:
        return gemv_threshold(x2d, w_t, threshold, bias, config)
    if k >= x2d.shape[1]:
        return gemv_threshold(x2d, w_t, -1.0, bias, config)  # dense: every |x| > -1
    if k <= 0:
        out = torch.zeros((x2d.shape[0], w_t.shape[1]), dtype=w_t.dtype, device=w_t.device)
        return out if bias is None else out + bias
    return gemv_indices(x2d, w_t, select_topk(x2d, k), bias, config)
