"""CPU sparse GEMV for batch-1 decoding through numba (optional), with a clean fallback.

``y = sum over kept inputs i of x[i] * w_t[i, :]`` for an input-major weight
``w_t = W^T`` (``[d_in, d_out]``, C order), reading the kept rows of ``w_t`` in
place (never copying them). Weights in float32 or bfloat16: bfloat16 rows are
widened to float32 in registers and every product is summed in float32, one kept
row after another (the kernels: :mod:`acttail_lab.sparsify.kernels.numba_kernels`).
The kept inputs are the exact TopK of ``|x|`` (same set as ``topk_mask``: ties at
the cut keep the first positions), ``|x| > threshold``, or given positions.

numba is an optional dependency (extra ``cpu-kernels``). :func:`numba_available`
says whether it can be used; :func:`require_numba` raises DeviceError naming the
fix where it cannot; callers that may fall back (``cpu_decode.cpu_sparse_decoding``
with ``backend="auto"``) use the PyTorch embedding-bag kernel of
:mod:`acttail_lab.sparsify.kernels.reference` instead and say so.

Threads: ``threads=1`` runs the serial kernel; more threads run the parallel one
(column blocks over ``numba.set_num_threads(threads)``), with the same result bit
for bit. numba's thread pool uses its ``workqueue`` layer unless
``NUMBA_THREADING_LAYER`` says otherwise: its OpenMP layer shares libgomp with
torch, and once its pool had started torch's own CPU ops (attention) ran hundreds
of times slower in the same process (seen on this project's AVX2 machine). Output: a tensor in the weight's dtype (the float32 sum rounded once).
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import torch

from ...core.errors import DeviceError, KernelInputError

NUMBA_FIX = ("Fix: pip install 'acttail-lab[cpu-kernels]' (numba 0.68.1 with llvmlite 0.50.0 work with the "
             "locked numpy), or use the PyTorch kernel (backend='torch').")
NUMBA_DTYPES = (torch.float32, torch.bfloat16)
"""Weight / activation dtypes of the numba kernel (float16: use the PyTorch kernel)."""
DEFAULT_BLOCK = 32768
"""Output columns per block: wider than any LLaMA projection's output up to 70B (28,672), so on one thread each
kept row of W^T is read once, start to end, into one accumulator row (at most 128 KiB of float32: L2-resident;
the weight rows stream from memory past it). Chosen from three quiet-machine sweeps of ``bench_gemv_7b.py --blocks``
on this project's 2-core AVX2 CPU (LLaMA-2-7B shapes and 8192x28672, sparsity 0.5 and 0.8): 4096 beat 1024 and
2048 in 30 of 32 shape x dtype x thread-count cells, 8192 beat 4096 in 31 of 32, and 16384 beat 8192 on every
matrix wider than 8192 columns (the others are one block either way): fewer passes over the kept positions win.
With more threads each thread's share of the columns caps the block. The committed ``gemv_7b_cpu.csv`` sweeps
4096 and 8192 beside it."""
_ALIGN = 32  # block widths of the parallel kernel are rounded up to whole 64-byte lines (bf16: 32 columns)


@functools.lru_cache(maxsize=None)
def numba_available() -> bool:
    """Whether numba and its kernels import (checked once; the import compiles nothing)."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import numba

        from . import numba_kernels  # noqa: F401
    except Exception:  # a numba that does not fit this numpy / llvmlite: treated as absent
        return False
    if "NUMBA_THREADING_LAYER" not in os.environ:  # before the pool starts (module doc)
        numba.config.THREADING_LAYER = "workqueue"
    return True


def require_numba():
    """The kernel module; DeviceError (with the fix) where numba is missing or unusable."""
    if not numba_available():
        raise DeviceError("The numba CPU kernel was requested but numba is not installed (or does not import "
                          "with this numpy). " + NUMBA_FIX)
    from . import numba_kernels

    return numba_kernels


def set_threads(threads: int) -> int:
    """Set numba's thread count to ``threads`` (capped at its pool size); return the count used."""
    require_numba()  # chooses the threading layer before the pool starts
    import numba

    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def weight_array(w_t: torch.Tensor) -> np.ndarray:
    """The numpy view (no copy) the kernel reads: float32 ``[d_in, d_out]``, or uint16 bit patterns of bf16.

    Raises KernelInputError for other dtypes, non-CPU tensors, or a weight that is not C-contiguous
    (a padded or transposed ``w_t`` would need a copy; make it with ``input_major(linear.weight)``).
    """
    if w_t.dtype not in NUMBA_DTYPES:
        raise KernelInputError(f"The numba kernel takes float32 or bfloat16 weights, not {w_t.dtype}. "
                               "Fix: use backend='torch' for float16, or convert the weight.")
    if w_t.device.type != "cpu" or w_t.dim() != 2 or not w_t.is_contiguous():
        raise KernelInputError("The numba kernel needs a C-contiguous input-major CPU weight [d_in, d_out]. "
                               "Fix: w_t = kernels.input_major(linear.weight).")
    t = w_t.detach().cpu()  # checked above: already on the CPU, so no copy
    return t.numpy() if t.dtype == torch.float32 else t.view(torch.int16).numpy().view(np.uint16)  # cpu view


def activation_row(x: torch.Tensor) -> np.ndarray:
    """One token's activations as a float32 numpy row (bf16 widened exactly; float32 not copied)."""
    x = x.detach().reshape(-1)
    return (x if x.dtype == torch.float32 else x.float()).contiguous().cpu().numpy()


def threshold_in_dtype(threshold: float, dtype: torch.dtype) -> np.float32:
    """The threshold as torch compares it with a ``dtype`` tensor (rounded to ``dtype``), as float32."""
    return np.float32(float(torch.tensor(float(threshold), dtype=dtype)))


class Workspace:
    """Scratch arrays of the selection for one input width ``d_in`` and up to ``rows`` selections at once."""

    def __init__(self, d_in: int, rows: int = 3):
        self.keys = np.empty(d_in, dtype=np.int32)
        self.cand = np.empty(d_in, dtype=np.int32)
        self.hist = np.empty(2048, dtype=np.int64)
        self.idx = np.empty((rows, d_in), dtype=np.int64)
        self.counts = np.empty(rows, dtype=np.int64)
        self.empty_scale = np.empty(0, dtype=np.float32)

    def topk(self, xs: np.ndarray, ks: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """Exact TopK positions for each k of ``ks`` (int64): rows of ``self.idx``, ``ks[r]`` entries each.

        ``scale`` (float32 ``[d_in]``): rank ``|x_i| * scale_i`` instead (WINA's scores).
        """
        nk = require_numba()
        nk.magnitude_keys(xs, self.empty_scale if scale is None else scale, self.keys)
        nk.select_topk(self.keys, ks, self.idx, self.hist, self.cand)
        return self.idx

    def threshold(self, xs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions with ``|x| > t`` for each float32 ``t``: ``(idx, counts)``, row ``r`` holds ``counts[r]``."""
        require_numba().select_threshold(xs, thresholds, self.idx, self.counts)
        return self.idx, self.counts


def gemv(w: np.ndarray, xs: np.ndarray, idx: np.ndarray, n: int, threads: int = 1,
         block: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """float32 ``[d_out]`` = the sum over the first ``n`` positions of ``idx`` of ``xs[i] * w[i, :]``.

    ``w`` from :func:`weight_array`; ``xs`` float32 ``[d_in]``; ``idx`` int64 (increasing positions);
    ``threads`` > 1 runs the parallel kernel (call :func:`set_threads` first); ``block``: columns per block.
    """
    nk = require_numba()
    d_out = w.shape[1]
    if out is None:
        out = np.empty(d_out, dtype=np.float32)
    block = int(block or DEFAULT_BLOCK)
    if threads > 1:
        share = -(-d_out // threads)
        block = min(block, -(-share // _ALIGN) * _ALIGN)
        nk.gemv_parallel(w, xs, idx, n, out, block)
    else:
        nk.gemv_serial(w, xs, idx, n, out, block)
    return out


_WORKSPACES: dict[int, Workspace] = {}
_ALL_ROWS: dict[int, np.ndarray] = {}


def all_positions(d_in: int) -> np.ndarray:
    """``arange(d_in)`` as int64 (cached): the dense product through the kernel (k = d_in)."""
    rows = _ALL_ROWS.get(d_in)
    if rows is None:
        rows = _ALL_ROWS[d_in] = np.arange(d_in, dtype=np.int64)
    return rows


def sparse_gemv_numba(x2d: torch.Tensor, w_t: torch.Tensor, k: int | None = None, threshold: float | None = None,
                      idx: torch.Tensor | None = None, threads: int | None = None,
                      block: int | None = None) -> torch.Tensor:
    """Sparse GEMV of each row of ``x2d`` ``[rows, d_in]`` through numba; ``[rows, d_out]`` in the weight dtype.

    Exactly one of ``k`` (exact TopK), ``threshold`` (keep ``|x| > threshold``, the threshold rounded to the
    activation dtype as torch does) or ``idx`` (positions ``[rows, n]``). Inputs are validated by the caller
    (``reference.check_inputs``) except what :func:`weight_array` checks. ``threads``: default numba's
    current thread count (``numba.get_num_threads()``).
    """
    w = weight_array(w_t)
    if threads is None:
        import numba

        threads = numba.get_num_threads()
    rows, d_in = x2d.shape
    work = _WORKSPACES.get(d_in)
    if work is None:
        work = _WORKSPACES[d_in] = Workspace(d_in)
    out = np.empty((rows, w.shape[1]), dtype=np.float32)
    thr = None if threshold is None else np.array([threshold_in_dtype(threshold, x2d.dtype)], dtype=np.float32)
    for r in range(rows):
        xs = activation_row(x2d[r])
        if idx is not None:
            pos = np.ascontiguousarray(np.sort(idx[r].detach().cpu().numpy().astype(np.int64)))
            n = pos.shape[0]
        elif thr is not None:
            got, counts = work.threshold(xs, thr)
            pos, n = got[0], int(counts[0])
        elif k >= d_in:
            pos, n = all_positions(d_in), d_in
        else:
            n = max(int(k), 0)
            pos = work.topk(xs, np.array([n], dtype=np.int64))[0] if n else all_positions(d_in)
        gemv(w, xs, pos, n, threads=threads, block=block, out=out[r])
    y = torch.from_numpy(out)
    return y if w_t.dtype == torch.float32 else y.to(w_t.dtype)
