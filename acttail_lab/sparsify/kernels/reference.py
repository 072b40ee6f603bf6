"""PyTorch sparse GEMV (the fallback backend) and the input checks shared by every backend.

A sparse GEMV computes, for each row ``x`` (one token) and an input-major
weight ``w_t = W^T`` of shape ``[d_in, d_out]``::

    y = sum over active inputs i of  x[i] * w_t[i, :]      (= x_masked @ W^T)

Active inputs are either the ``k`` largest ``|x|`` of the row (TopK, exact
count, ties at the cut keep the first positions, like
``acttail_lab.sparsify.topk.topk_mask``) or those with ``|x| > threshold``.

The fallback gathers only the active rows of ``w_t``: ``F.embedding_bag``
with ``per_sample_weights=x[active]`` and ``mode="sum"`` reads row ``i`` of
``w_t`` for each active ``i`` and accumulates in fp32 (checked: its error on
fp16/bf16 equals the rounding of the fp32 result), without materialising the
gathered rows. It works on CPU and CUDA tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...core.errors import KernelInputError
from ..topk import keep_count, topk_mask

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""Weight / activation dtypes of every backend (accumulation is always fp32)."""


def input_major(weight: torch.Tensor) -> torch.Tensor:
    """``W^T`` of an ``nn.Linear`` weight ``[d_out, d_in]``, contiguous ``[d_in, d_out]`` (a copy)."""
    return weight.detach().t().contiguous()


def input_major_of(name: str, weight: torch.Tensor, weights: dict | None = None) -> torch.Tensor:
    """``W^T`` of projection ``name`` for a decoding context: from ``weights`` (made there once and kept, so
    repeated contexts share it) when given, else one fresh copy (the Linear views it while swapped out)."""
    if weights is None:
        return input_major(weight)
    if weights.get(name) is None:
        weights[name] = input_major(weight)
    return weights[name]


def check_inputs(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[int, int]:
    """Validate a sparse GEMV call; return ``(d_in, d_out)``.

    ``x``: ``[..., d_in]``; ``w_t``: input-major ``[d_in, d_out]`` with
    contiguous rows; same dtype (fp16, bf16 or fp32) and device; ``bias``:
    ``[d_out]`` or None. Raises KernelInputError naming the problem and the fix.
    """
    for name, t in (("x", x), ("w_t", w_t)):
        if not isinstance(t, torch.Tensor):
            raise KernelInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dtype not in SUPPORTED_DTYPES:
            raise KernelInputError(
                f"{name} has dtype {t.dtype}; sparse GEMV supports fp16, bf16 and fp32 "
                f"(fp32 accumulation). Fix: convert with .to(torch.float16) / .to(torch.bfloat16) / .float().")
    if w_t.dim() != 2:
        raise KernelInputError(f"w_t must be 2-D [d_in, d_out], got shape {tuple(w_t.shape)}.")
    d_in, d_out = w_t.shape
    if x.dim() == 0 or x.shape[-1] != d_in:
        hint = ""
        if x.dim() > 0 and x.shape[-1] == d_out:
            hint = (" It looks like an output-major nn.Linear weight [d_out, d_in]: pass "
                    "kernels.input_major(linear.weight) (= weight.t().contiguous()).")
        raise KernelInputError(
            f"Shape mismatch: x is {tuple(x.shape)} but w_t is {tuple(w_t.shape)}; the last dim of x must "
            f"equal d_in = w_t.shape[0] = {d_in}.{hint}")
    if w_t.stride(1) != 1 or w_t.stride(0) < d_out:
        raise KernelInputError(
            "w_t must be input-major with contiguous rows (stride (d_out, 1)) so that each active input "
            f"reads one contiguous row; got strides {w_t.stride()}. Fix: w_t = w_t.contiguous(), or "
            "kernels.input_major(linear.weight).")
    if x.dtype != w_t.dtype:
        raise KernelInputError(f"x is {x.dtype} but w_t is {w_t.dtype}. Fix: x = x.to(w_t.dtype).")
    if x.device != w_t.device:
        raise KernelInputError(f"x is on {x.device} but w_t on {w_t.device}. Fix: move both to one device.")
    if bias is not None and (bias.shape != (d_out,) or bias.device != w_t.device):
        raise KernelInputError(
            f"bias must have shape ({d_out},) on {w_t.device}; got {tuple(bias.shape)} on {bias.device}.")
    return d_in, d_out


def resolve_selection(d_in: int, sparsity=None, k=None, threshold=None) -> tuple[int | None, float | None]:
    """``(k, threshold)`` from exactly one of ``sparsity`` (``k = round((1 - s) d_in)``), ``k`` or ``threshold``."""
    given = [name for name, v in (("sparsity", sparsity), ("k", k), ("threshold", threshold)) if v is not None]
    if len(given) != 1:
        raise KernelInputError(
            f"Give exactly one of sparsity, k or threshold (got {given or 'none'}). "
            "Fix: e.g. sparse_gemv(x, w_t, sparsity=0.5); sparsity=0.0 is dense.")
    if sparsity is not None:
        s = float(sparsity)
        if not 0.0 <= s < 1.0:
            raise KernelInputError(f"sparsity={sparsity!r} is outside [0, 1). Fix: pass the fraction of inputs "
                                   "to skip, e.g. 0.5.")
        return keep_count(s, d_in), None
    if k is not None:
        if isinstance(k, bool) or int(k) != k or not 0 <= int(k) <= d_in:
            raise KernelInputError(f"k={k!r} must be an integer in [0, d_in={d_in}] (inputs kept per row).")
        return int(k), None
    t = float(threshold)
    if t != t:
        raise KernelInputError("threshold is NaN. Fix: pass a magnitude >= 0 (inputs with |x| > threshold are kept).")
    return None, t


def topk_indices(x2d: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` largest ``|x|`` per row, int64 ``[rows, k]``, in no particular order.

    Same set as ``sparsity.topk_mask`` (ties at the cut keep the first tied
    positions): ``torch.topk`` is used when the cut is unambiguous (exactly
    ``k`` entries reach the k-th largest magnitude in every row); with ties at
    the cut, or NaN, the positions come from ``topk_mask`` itself.
    """
    a = x2d.abs()
    values, idx = a.topk(k, dim=-1, sorted=False)
    kth = values.min(dim=-1, keepdim=True).values
    reach = (a >= kth).sum(dim=-1)
    if (int(reach) == k) if reach.numel() == 1 else bool((reach == k).all()):
        return idx
    return topk_mask(x2d, k).nonzero()[:, 1].view(x2d.shape[0], k)


_BAG_SUM = getattr(torch.ops.aten, "_embedding_bag_forward_only", None)
"""The inference-only aten op behind ``F.embedding_bag`` (no Python argument handling: ~8 us less per
call on CPU); ``F.embedding_bag`` is used where it is missing or a gradient is needed."""


def _bag_sum(w_t: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``sum_j weights[j] * w_t[idx[j]]`` per bag; 1-D ``idx``/``weights``, bag ``b`` starts at ``offsets[b]``."""
    if _BAG_SUM is not None and not (torch.is_grad_enabled() and (w_t.requires_grad or weights.requires_grad)):
        return _BAG_SUM(w_t, idx, offsets, False, 0, False, weights, False, -1)[0]
    return F.embedding_bag(idx, w_t, offsets=offsets, per_sample_weights=weights, mode="sum")


_ZERO_OFFSETS: dict = {}


def _row_offsets(rows: int, k: int, device) -> torch.Tensor:
    """Bag starts ``0, k, 2k, ...`` (a cached ``[0]`` for one row: one tensor creation less per call)."""
    if rows > 1:
        return torch.arange(0, rows * k, k, device=device)
    zero = _ZERO_OFFSETS.get(device)
    if zero is None:
        zero = _ZERO_OFFSETS[device] = torch.zeros(1, dtype=torch.long, device=device)
    return zero


def sparse_gemv_torch(x2d: torch.Tensor, w_t: torch.Tensor, k: int | None = None,
                      threshold: float | None = None, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse GEMV of each row of ``x2d`` ``[rows, d_in]``; returns ``[rows, d_out]`` in the weight dtype.

    Exactly one of ``k`` (TopK), ``threshold`` (keep ``|x| > threshold``) or
    ``idx`` (precomputed positions ``[rows, k]``). Inputs are not validated
    here (see :func:`check_inputs`).
    """
    rows, d_in = x2d.shape
    if threshold is not None:
        keep = x2d.abs() > threshold
        if rows == 1:
            where = keep[0].nonzero()[:, 0]
            return _bag_sum(w_t, where, x2d[0, where], _row_offsets(1, 0, x2d.device))
        where = keep.nonzero()
        counts = keep.sum(dim=1)
        offsets = torch.cumsum(counts, 0) - counts
        return _bag_sum(w_t, where[:, 1], x2d[where[:, 0], where[:, 1]], offsets)
    if idx is None:
        if k <= 0:
            return torch.zeros((rows, w_t.shape[1]), dtype=w_t.dtype, device=w_t.device)
        if k >= d_in:
            idx = torch.arange(d_in, device=x2d.device).expand(rows, d_in)
        elif x2d.device.type == "cpu":
            idx = topk_indices(x2d, k)
        else:
            idx = x2d.abs().topk(k, dim=-1, sorted=False).indices
    idx = idx.long()
    return _bag_sum(w_t, idx.reshape(-1), x2d.gather(1, idx).reshape(-1), _row_offsets(rows, idx.shape[1], x2d.device))
