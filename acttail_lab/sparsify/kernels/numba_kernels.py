"""Numba kernels of the CPU sparse GEMV: selection of the kept inputs, and the row-gather product.

Imported only where numba is installed (``cpu_gemv.numba_available()``); the
torch-facing wrapper is :mod:`acttail_lab.sparsify.kernels.cpu_gemv`.

Product (:func:`gemv_serial`, :func:`gemv_parallel`)::

    out[c] = sum over j < n of  xs[idx[j]] * w[idx[j], c]      (c = 0 .. d_out - 1)

``w`` is the input-major weight ``[d_in, d_out]`` (C order), float32 or the
uint16 bit patterns of bfloat16 (widened to float32 in registers: bits << 16);
``xs`` the activation row in float32; ``idx`` the kept positions (int64, in
increasing order, so the kept rows are read front to back). The sum is taken in
float32, one kept row after another in the order of ``idx`` (no reassociation,
no FMA contraction: ``fastmath`` is off), so the result does not depend on the
column blocking or on the number of threads. Columns are cut into blocks of
``block`` columns (``cpu_gemv.DEFAULT_BLOCK``: the whole width on one thread); four kept rows are
read per pass over a block. The parallel variant spreads the blocks over
numba's threads (``numba.set_num_threads``).

Selection (exact TopK, same set as :func:`acttail_lab.sparsify.topk.topk_mask` on
CPU): magnitudes are compared as the int32 bit patterns of ``|x|`` (same order
as the values; NaN above inf), the k-th largest key is found by a 2048-bin
histogram of bits 30-20 (2048 bins) and a partition of the keys in its bin, and ties at
the cut keep the first positions. Threshold selection keeps ``|x| > t``
(float32 comparison; NaN never kept, as in torch).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

_HIST_BINS = 2048  # key >> 20 of a non-negative int32: 8 exponent bits + 3 mantissa bits


@intrinsic
def _widen(typingctx, value):
    """float32 -> itself; uint16/int16 bfloat16 bits -> float32 (zero-extend, shift left 16, bitcast)."""
    if isinstance(value, types.Float) and value.bitwidth == 32:
        def codegen(context, builder, signature, args):
            return args[0]
        return types.float32(value), codegen
    if isinstance(value, types.Integer) and value.bitwidth == 16:
        def codegen(context, builder, signature, args):
            wide = builder.zext(args[0], ir.IntType(32))
            wide = builder.shl(wide, ir.Constant(ir.IntType(32), 16))
            return builder.bitcast(wide, ir.FloatType())
        return types.float32(value), codegen
    return None


@njit(cache=True, nogil=True)
def _gemv_block(w, xs, idx, n, out, c0, c1):
    """``out[c0:c1] = sum_j xs[idx[j]] * w[idx[j], c0:c1]``, kept rows in order, four per pass."""
    m = c1 - c0
    o = out[c0:c1]
    for c in range(m):
        o[c] = np.float32(0.0)
    j = 0
    while j + 4 <= n:
        r0, r1, r2, r3 = idx[j], idx[j + 1], idx[j + 2], idx[j + 3]
        a0, a1, a2, a3 = xs[r0], xs[r1], xs[r2], xs[r3]
        w0, w1, w2, w3 = w[r0, c0:c1], w[r1, c0:c1], w[r2, c0:c1], w[r3, c0:c1]
        for c in range(m):
            t = o[c]
            t += a0 * _widen(w0[c])
            t += a1 * _widen(w1[c])
            t += a2 * _widen(w2[c])
            t += a3 * _widen(w3[c])
            o[c] = t
        j += 4
    while j < n:
        r0 = idx[j]
        a0 = xs[r0]
        w0 = w[r0, c0:c1]
        for c in range(m):
            o[c] += a0 * _widen(w0[c])
        j += 1


@njit(cache=True, nogil=True)
def gemv_serial(w, xs, idx, n, out, block):
    """One thread: :func:`_gemv_block` over column blocks of ``block`` columns (``out``: float32 ``[d_out]``)."""
    d_out = out.shape[0]
    for c0 in range(0, d_out, block):
        _gemv_block(w, xs, idx, n, out, c0, min(d_out, c0 + block))


@njit(cache=True, nogil=True, parallel=True)
def gemv_parallel(w, xs, idx, n, out, block):
    """As :func:`gemv_serial`, the column blocks spread over numba's threads (same result, bit for bit)."""
    d_out = out.shape[0]
    n_blocks = (d_out + block - 1) // block
    for b in prange(n_blocks):
        c0 = b * block
        _gemv_block(w, xs, idx, n, out, c0, min(d_out, c0 + block))


@njit(cache=True, nogil=True)
def magnitude_keys(xs, scale, keys):
    """``keys[i]`` = int32 bit pattern of ``|xs[i]| * scale[i]`` (float32); ``scale`` of length 0: ``|xs[i]|``."""
    f = keys.view(np.float32)
    if scale.shape[0] == 0:
        for i in range(xs.shape[0]):
            f[i] = abs(xs[i])
    else:
        for i in range(xs.shape[0]):
            f[i] = abs(xs[i]) * scale[i]


@njit(cache=True, nogil=True)
def _kth_key(keys, k, hist, cand):
    """The ``k``-th largest of the non-negative int32 ``keys`` (``0 < k <= len``); ``hist`` is filled already."""
    b = _HIST_BINS - 1
    above = 0
    while above + hist[b] < k:
        above += hist[b]
        b -= 1
    m = 0
    for i in range(keys.shape[0]):
        if (keys[i] >> 20) == b:
            cand[m] = keys[i]
            m += 1
    rank = m - (k - above)  # position of the k-th largest among the bin's keys, in increasing order
    return np.partition(cand[:m], rank)[rank]


@njit(cache=True, nogil=True)
def _collect(keys, kth, k, idx):
    """Positions of the keys above ``kth`` plus the first ties at ``kth``: exactly ``k``, increasing order."""
    greater = 0
    for i in range(keys.shape[0]):
        if keys[i] > kth:
            greater += 1
    ties = k - greater
    n = 0
    for i in range(keys.shape[0]):
        key = keys[i]
        if key > kth or (key == kth and ties > 0):
            if key == kth:
                ties -= 1
            idx[n] = i
            n += 1
    return n


@njit(cache=True, nogil=True)
def select_topk(keys, ks, idx, hist, cand):
    """Exact TopK for each ``ks[r]``: ``idx[r, :ks[r]]`` the kept positions in increasing order.

    ``keys``: int32 ``[d_in]`` from :func:`magnitude_keys`; ``ks``: int64 (``0 <= k <= d_in``);
    ``idx``: int64 ``[len(ks), d_in]``; ``hist``: int64 ``[2048]``; ``cand``: int32 ``[d_in]`` scratch.
    One histogram serves every k.
    """
    d = keys.shape[0]
    hist[:] = 0
    for i in range(d):
        hist[keys[i] >> 20] += 1
    for r in range(ks.shape[0]):
        k = ks[r]
        if k >= d:
            for i in range(d):
                idx[r, i] = i
        elif k > 0:
            _collect(keys, _kth_key(keys, k, hist, cand), k, idx[r])


@njit(cache=True, nogil=True)
def select_threshold(xs, thresholds, idx, counts):
    """For each ``thresholds[r]`` (float32), ``idx[r, :counts[r]]`` = the positions with ``|xs| > t``."""
    for r in range(thresholds.shape[0]):
        t = thresholds[r]
        n = 0
        for i in range(xs.shape[0]):
            if abs(xs[i]) > t:
                idx[r, n] = i
                n += 1
        counts[r] = n
