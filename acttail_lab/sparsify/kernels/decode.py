"""Sparse decoding for a whole model: every projection through the sparse GEMV.

``with sparse_decoding(model, allocation): ...`` swaps each sparsified
projection (q, k, v, o, gate, up, down of every layer, as listed by
``models.iter_projections``) for a :class:`SparseLinear` holding the
input-major weight ``W^T`` and that projection's ``k`` (from the allocation,
``k = round((1 - s) d_in)``), and puts the original ``nn.Linear`` modules back
on exit. Projections at sparsity 0 stay plain ``nn.Linear`` (dense BLAS is the
right kernel for them).

A :class:`SparseLinear` runs one token (one row, batch-1 decoding) through
:func:`acttail_lab.sparsify.kernels.sparse_gemv`; several rows at once (a prefill)
are masked with the same TopK rule and multiplied densely, since a prefill is
compute-bound and has no weight reads to skip. Either way the output equals
the dense model under ``sparsity.TopKSparsifier(model, allocation)`` (protocol
``"all"``) up to floating-point summation order: both keep, per token, the
``k`` largest ``|x|`` with ties at the cut broken by position.

Memory: one copy of each swapped weight. On entry the input-major ``W^T`` is
made and the original ``nn.Linear``'s weight becomes a transposed *view* of it
(same values, its row-major storage freed); on exit the weight is made
contiguous again, one projection at a time, so the peak is the weights plus one
matrix. With a shared ``weights`` dict (several allocations reusing one ``W^T``)
the dict's copies come on top (about 2x the projection weights).

``mode="threshold"`` instead keeps ``|x| > threshold`` with per-projection
thresholds from :func:`calibrate_thresholds` (TEAL's scheme: no selection pass,
the kept count varies per token around the target).

``mode="wina"`` keeps the ``k`` largest ``|x_i| * ||W[:, i]||`` (WINA,
:mod:`acttail_lab.sparsify.wina`; column norms of the weight as it is on entry).
Only the scores differ: the token is masked by WINA's selection and the masked
row goes through the same ``k``-sparse GEMV, which then reads exactly the
selected rows of ``W^T`` (the kept entries are the row's only nonzeros; a kept
entry that is itself zero contributes nothing either way). The output equals
the dense model under ``wina.WinaSparsifier`` up to summation order.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...core.errors import AllocationError
from ...core.hooks import hooks
from ...core.models import iter_projections
from ..topk import resolve_allocation, topk_mask
from ..wina import column_norms, wina_mask
from .dispatch import choose_backend, sparse_gemv
from .reference import input_major, input_major_of

MODES = ("topk", "threshold", "wina")


class SparseLinear(nn.Module):
    """A projection for decoding: ``y = x_active @ W^T + b`` with per-token TopK or a fixed threshold.

    Args:
        linear: the ``nn.Linear`` it replaces (weight copied to input-major ``w_t``).
        k: inputs kept per token (TopK mode).
        threshold: keep ``|x| > threshold`` (threshold mode); give exactly one of ``k``/``threshold``.
        backend: ``sparse_gemv`` backend (``"auto"``, ``"triton"``, ``"torch"``).
        name: the projection's module name (for messages and tables).
        w_t: the input-major weight if already made (shared, not copied); default ``input_major(linear.weight)``.
        norms: column norms ``||W[:, i]||`` (float32 ``[d_in]``): select by WINA's scores (with ``k``).
    """

    def __init__(self, linear: nn.Linear, k: int | None = None, threshold: float | None = None,
                 backend: str = "auto", name: str = "", w_t: torch.Tensor | None = None,
                 norms: torch.Tensor | None = None):
        super().__init__()
        if (k is None) == (threshold is None):
            raise AllocationError(f"SparseLinear {name!r}: give exactly one of k or threshold.")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if w_t is None:
            w_t = input_major(linear.weight)
        elif w_t.shape != (self.in_features, self.out_features):
            raise AllocationError(f"SparseLinear {name!r}: w_t is {tuple(w_t.shape)}, expected "
                                  f"{(self.in_features, self.out_features)} (input-major).")
        self.register_buffer("w_t", w_t, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)
        self.k = None if k is None else int(k)
        self.threshold = None if threshold is None else float(threshold)
        self.backend = backend
        self.name = name
        if norms is not None and (self.k is None or norms.shape != (self.in_features,)):
            raise AllocationError(f"SparseLinear {name!r}: WINA norms need k and shape ({self.in_features},).")
        self.register_buffer("norms", norms, persistent=False)

    def extra_repr(self) -> str:
        rule = f"k={self.k}" if self.k is not None else f"threshold={self.threshold:.4g}"
        return f"in={self.in_features}, out={self.out_features}, {rule}, backend={self.backend}"

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        if self.norms is not None:
            return wina_mask(x, self.norms, self.k)
        if self.k is not None:
            return topk_mask(x, self.k)
        return x.abs() > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == self.in_features:  # one token: the decoding step
            if self.norms is not None:  # WINA: mask by its scores; the GEMV then reads exactly those rows
                x = x * self._mask(x)
            return sparse_gemv(x, self.w_t, k=self.k, threshold=self.threshold, bias=self.bias,
                               backend=self.backend)
        y = (x * self._mask(x)) @ self.w_t  # several tokens (prefill): mask, then one dense product
        return y if self.bias is None else y + self.bias


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name), attr


def _thresholds_for(table: pd.DataFrame, thresholds) -> list[float]:
    if thresholds is None:
        raise AllocationError("mode='threshold' needs thresholds. Fix: thresholds=calibrate_thresholds(model, "
                              "allocation, input_ids) (a DataFrame with name and threshold).")
    mapping = dict(zip(thresholds["name"], thresholds["threshold"])) if isinstance(thresholds, pd.DataFrame) \
        else dict(thresholds)
    missing = [n for n, s in zip(table["name"], table["sparsity"]) if s > 0 and n not in mapping]
    if missing:
        raise AllocationError(f"No threshold for {missing[:3]}{'...' if len(missing) > 3 else ''}. "
                              "Fix: calibrate thresholds for this model and allocation.")
    return [float(mapping.get(n, -1.0)) for n in table["name"]]


@contextlib.contextmanager
def sparse_decoding(model: nn.Module, allocation, backend: str = "auto", mode: str = "topk",
                    thresholds=None, weights: dict | None = None) -> Iterator[pd.DataFrame]:
    """Route the model's projections through the sparse GEMV while the block runs.

    Args:
        model: a supported causal LM (LLaMA-style, ``models.iter_projections``).
        allocation: per-projection sparsity: an ``allocate(...)`` table, a dict
            ``name -> sparsity`` or one float (see ``sparsity.resolve_allocation``).
        backend: ``"auto"`` (Triton on CUDA when installed, else PyTorch),
            ``"triton"`` (DeviceError at entry when it cannot run) or ``"torch"``.
        mode: ``"topk"`` (exact per token), ``"wina"`` (exact per token, WINA's scores) or ``"threshold"``
            (needs ``thresholds``).
        thresholds: DataFrame (name, threshold) or dict, for ``mode="threshold"``.
        weights: a dict ``name -> W^T`` reused across calls (filled here on
            first use), so that several allocations share one input-major
            copy instead of making a new one each time.
    Yields:
        The resolved allocation (layer, projection, name, d_out, d_in, n_params,
        sparsity, k) with a ``swapped`` column (False where sparsity is 0).
    """
    if mode not in MODES:
        raise AllocationError(f"mode={mode!r} is not one of {MODES}.")
    table = resolve_allocation(model, allocation)
    device = next(model.parameters()).device
    chosen = choose_backend(backend, device)
    thr = _thresholds_for(table, thresholds) if mode == "threshold" else [None] * len(table)
    originals: list[tuple[nn.Module, str, nn.Module]] = []
    swapped = []
    try:
        for (row, linear), k, t in zip(iter_projections(model), table["k"], thr):
            if k >= row["d_in"]:
                swapped.append(False)
                continue
            parent, attr = _parent(model, row["name"])
            norms = column_norms(linear.weight) if mode == "wina" else None
            w_t = input_major_of(row["name"], linear.weight, weights)
            if weights is None:  # one copy: the Linear views W^T while swapped out (its row-major storage is freed)
                linear.weight.data = w_t.t()
            sparse = SparseLinear(linear, k=None if mode == "threshold" else int(k), threshold=t,
                                  backend=chosen, name=row["name"], w_t=w_t, norms=norms)
            originals.append((parent, attr, linear))
            setattr(parent, attr, sparse)
            swapped.append(True)
        yield table.assign(swapped=swapped, backend=chosen, mode=mode)
    finally:
        for parent, attr, linear in reversed(originals):
            setattr(parent, attr, linear)
            if not linear.weight.is_contiguous():  # back to row-major, one matrix at a time
                linear.weight.data = linear.weight.data.contiguous()


@torch.no_grad()
def calibrate_thresholds(model: nn.Module, allocation, input_ids: torch.Tensor) -> pd.DataFrame:
    """Per-projection thresholds that zero a ``sparsity`` share of the inputs seen on ``input_ids``.

    Runs the dense model once on ``input_ids`` (``[batch, T]``), collects
    ``|x|`` of every projection input, and sets the threshold to the
    ``sparsity``-quantile (inputs with ``|x| > threshold`` are kept). Returns
    the resolved allocation with ``threshold`` and ``calibrated_sparsity``
    (the share zeroed on the calibration tokens themselves).
    """
    table = resolve_allocation(model, allocation)
    sparsity = dict(zip(table["name"], table["sparsity"]))
    seen: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(module, args):
            seen[name] = args[0].detach().abs().reshape(-1).float().cpu()
        return hook

    with hooks(pre=[(module, hook_for(row["name"])) for row, module in iter_projections(model)]):
        model(input_ids=input_ids, use_cache=False)
    thresholds, realised = [], []
    for name in table["name"]:
        values = seen[name].sort().values
        cut = int(round(sparsity[name] * values.numel()))
        t = -1.0 if cut == 0 else float(values[cut - 1])
        thresholds.append(t)
        realised.append(float((values <= t).float().mean()) if cut else 0.0)
    return table.assign(threshold=np.asarray(thresholds), calibrated_sparsity=np.asarray(realised))
