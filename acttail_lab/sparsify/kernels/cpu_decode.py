"""Batch-1 sparse decoding on CPU through the numba kernel, one selection per shared input.

``with cpu_sparse_decoding(model, allocation) as run: ...`` swaps the sparsified
projections of every layer for :class:`GroupedSparseLinear` modules, like
:func:`acttail_lab.sparsify.kernels.decode.sparse_decoding` (same memory rule:
one input-major copy of each swapped weight, the ``nn.Linear`` views it while
swapped; originals back on exit), with three differences for CPU decoding:

* projections that read the same input (q/k/v of a layer, gate/up of a layer;
  ``core.models.INPUT_SITES``) form a :class:`SelectionGroup`. On the first
  member's call the group converts the token once, selects once (one histogram
  serves every k of the group: the TopK sets of different k are nested), runs
  every member's GEMV and keeps the outputs; the other members return theirs
  (the tensor object and its version must match, else the group recomputes);
* ``mode="threshold"`` keeps ``|x| > t`` with calibrated thresholds
  (``decode.calibrate_thresholds``) instead of TopK; ``mode="wina"`` ranks
  ``|x_i| * ||W[:, i]||`` per member (no shared selection: the scores differ);
* every group counts the nanoseconds it spends selecting, in GEMVs and in the
  rest of its call (conversions, output tensors): :meth:`CpuDecoding.stats`.

Outputs equal the dense model under ``TopKSparsifier`` (``WinaSparsifier``, or
threshold masking) up to the order of float32 summation: the kept sets are the
same (ties at the cut: first positions). Several tokens at once (a prefill) are
masked and multiplied densely by ``SparseLinear.forward``.

``dense_through_kernel=True`` also swaps projections at sparsity 0 (k = d_in:
all rows, no selection): the dense model through the kernel. ``backend``:
``"numba"`` (DeviceError naming the fix without numba), ``"auto"`` (numba when
it imports and the weights are float32 / bfloat16, else the PyTorch path of
``sparse_decoding`` with a warning saying why), ``"torch"`` (that path).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...core.errors import AllocationError
from ...core.models import INPUT_SITES, iter_projections
from ..topk import resolve_allocation
from ..wina import column_norms
from . import cpu_gemv
from .decode import MODES, SparseLinear, _parent, _thresholds_for, sparse_decoding
from .reference import input_major_of

STAT_KEYS = ("select_ns", "gemv_ns", "wrap_ns", "calls", "tokens", "read_bytes", "dense_bytes")


class SelectionGroup:
    """Projections reading one input tensor: one conversion and one selection per token, every GEMV.

    Args:
        mode: ``"topk"``, ``"threshold"`` or ``"wina"``.
        d_in: the shared input width.
        threads: numba threads of the GEMVs (1: the serial kernel).
        block: output columns per block of the kernel (None: ``cpu_gemv.DEFAULT_BLOCK``).
    Members are added with :meth:`add` (weights as ``cpu_gemv.weight_array`` views, never copied).
    """

    def __init__(self, mode: str, d_in: int, threads: int = 1, block: int | None = None):
        self.mode, self.d_in, self.threads, self.block = mode, int(d_in), int(threads), block
        self.weights: list[np.ndarray] = []
        self.dtypes: list[torch.dtype] = []
        self.biases: list[torch.Tensor | None] = []
        self.keep: list[float] = []  # k (topk, wina) or the threshold (threshold mode)
        self.scales: list[np.ndarray | None] = []
        self.row_bytes: list[int] = []
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self._key = None
        self._outputs: list[torch.Tensor] = []

    def add(self, w_t: torch.Tensor, keep: float, bias: torch.Tensor | None = None,
            norms: torch.Tensor | None = None) -> int:
        """Add a member (input-major ``w_t``, its k or threshold, bias, WINA norms); return its slot."""
        self.weights.append(cpu_gemv.weight_array(w_t))
        self.dtypes.append(w_t.dtype)
        self.biases.append(None if bias is None else bias.detach().float())
        self.keep.append(keep)
        self.scales.append(None if norms is None else norms.detach().float().contiguous().cpu().numpy())
        self.row_bytes.append(w_t.shape[1] * w_t.element_size())
        self._plan()
        return len(self.weights) - 1

    def configure(self, mode: str, keep: list, scales: list | None = None) -> None:
        """New selection rule for every member: ``mode``, each member's k or threshold, WINA scales."""
        self.mode, self.keep = mode, list(keep)
        self.scales = list(scales) if scales is not None else [None] * len(self.keep)
        self._key, self._outputs = None, []
        self._plan()

    def _plan(self) -> None:
        self.work = cpu_gemv.Workspace(self.d_in, rows=max(1, len(self.keep)))
        if self.mode == "threshold":
            self.thresholds = np.array(self.keep, dtype=np.float32)
            return
        ks = sorted({int(k) for k in self.keep if 0 < k < self.d_in}, reverse=True)
        self.ks = np.array(ks, dtype=np.int64)
        self.row_of = {k: r for r, k in enumerate(ks)}

    def output(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        """Member ``slot``'s output for one token ``x`` (``[..., d_in]``, one row): ``[..., d_out]``."""
        key = (id(x), x._version)
        if key != self._key:
            self._outputs = self._run(x)
            self._key = key
            self._x = x  # holds the tensor, so its id cannot be reused while the key stands
        return self._outputs[slot]

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        t0 = time.perf_counter_ns()
        xs = cpu_gemv.activation_row(x)
        select = gemv = 0
        s0 = time.perf_counter_ns()
        if self.mode == "topk" and len(self.ks):
            idx = self.work.topk(xs, self.ks)
        elif self.mode == "threshold":
            idx, counts = self.work.threshold(xs, self.thresholds)
        select += time.perf_counter_ns() - s0
        outs, read = [], 0
        for m, w in enumerate(self.weights):
            s0 = time.perf_counter_ns()
            if self.mode == "threshold":
                pos, n = idx[m], int(counts[m])
            elif self.keep[m] >= self.d_in:
                pos, n = cpu_gemv.all_positions(self.d_in), self.d_in
            elif self.keep[m] <= 0:
                pos, n = cpu_gemv.all_positions(self.d_in), 0
            elif self.mode == "wina":
                k = int(self.keep[m])
                pos, n = self.work.topk(xs, np.array([k], dtype=np.int64), scale=self.scales[m])[0], k
            else:
                pos, n = idx[self.row_of[int(self.keep[m])]], int(self.keep[m])
            g0 = time.perf_counter_ns()
            y = cpu_gemv.gemv(w, xs, pos, n, threads=self.threads, block=self.block)
            g1 = time.perf_counter_ns()
            select += g0 - s0
            gemv += g1 - g0
            read += n * self.row_bytes[m]
            out = torch.from_numpy(y)
            if self.biases[m] is not None:
                out = out + self.biases[m]
            if self.dtypes[m] != torch.float32:
                out = out.to(self.dtypes[m])
            outs.append(out.view(*x.shape[:-1], w.shape[1]))
        st = self.stats
        st["select_ns"] += select
        st["gemv_ns"] += gemv
        st["wrap_ns"] += time.perf_counter_ns() - t0 - select - gemv
        st["calls"] += len(self.weights)
        st["tokens"] += 1
        st["read_bytes"] += read
        st["dense_bytes"] += self.d_in * sum(self.row_bytes)
        return outs

    def reset_stats(self) -> None:
        self.stats = dict.fromkeys(STAT_KEYS, 0)


class GroupedSparseLinear(SparseLinear):
    """A projection whose one-token calls go through its :class:`SelectionGroup` (slot ``slot``).

    Several tokens (a prefill) take ``SparseLinear``'s path: mask by the same rule, one dense product.
    """

    def __init__(self, linear: nn.Linear, group: SelectionGroup, slot: int, **kwargs):
        super().__init__(linear, backend="numba", **kwargs)
        self.group, self.slot = group, slot
        self.wina_norms = self.norms  # kept across reconfigure() calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == self.in_features:
            return self.group.output(x, self.slot)
        return super().forward(x)


def _release(sparse: GroupedSparseLinear) -> None:
    """Drop every reference the decoding context holds to a projection's input-major copy (its module's buffers
    and its group's weight view), so the copy is freed when the projection gets its row-major weight back, not
    when the last reference to the yielded :class:`CpuDecoding` goes (which, in a loop of contexts, kept two or
    three copies of every weight alive: 1.6 GB per LLaMA-2-7B layer in float32 instead of 0.8)."""
    sparse.group.weights[sparse.slot] = None
    sparse.w_t = sparse.norms = sparse.wina_norms = None


@dataclass
class CpuDecoding:
    """What :func:`cpu_sparse_decoding` yields: the resolved allocation and the groups (for time stats)."""

    table: pd.DataFrame
    groups: list[SelectionGroup] = field(default_factory=list)
    backend: str = "numba"
    modules: dict = field(default_factory=dict)  # name -> GroupedSparseLinear

    def stats(self) -> dict[str, float]:
        """Seconds spent in selection, GEMVs and the groups' other work since the last reset; GEMV and group
        calls; ``read_fraction``: weight bytes the GEMVs read / the bytes of the same GEMVs dense."""
        total = dict.fromkeys(STAT_KEYS, 0)
        for g in self.groups:
            for key in STAT_KEYS:
                total[key] += g.stats[key]
        return dict(select_s=total["select_ns"] / 1e9, gemv_s=total["gemv_ns"] / 1e9,
                    wrap_s=total["wrap_ns"] / 1e9, gemv_calls=total["calls"], group_calls=total["tokens"],
                    read_bytes=total["read_bytes"], dense_bytes=total["dense_bytes"],
                    read_fraction=total["read_bytes"] / max(total["dense_bytes"], 1))

    def reconfigure(self, allocation, mode: str = "topk", thresholds=None) -> pd.DataFrame:
        """Switch every swapped projection to another allocation / mode without re-making any weight.

        Needs every projection swapped (``dense_through_kernel=True`` on entry); a projection at sparsity 0
        keeps all rows (k = d_in). Same arguments as :func:`cpu_sparse_decoding`; returns the resolved table.
        """
        if mode not in MODES:
            raise AllocationError(f"mode={mode!r} is not one of {MODES}.")
        names = list(self.table["name"])
        if set(names) - set(self.modules):
            raise AllocationError("reconfigure needs every projection swapped: enter cpu_sparse_decoding with "
                                  "dense_through_kernel=True.")
        table = self.table[["name", "d_in"]].assign(sparsity=0.0)
        table = _resolve_names(allocation, names, table)
        thr = _thresholds_for(table, thresholds) if mode == "threshold" else [None] * len(table)
        plans: dict[int, list] = {}
        for name, k, t in zip(table["name"], table["k"], thr):
            module = self.modules[name]
            module.k, module.threshold = (None, float(t)) if mode == "threshold" else (int(k), None)
            if mode == "wina" and module.wina_norms is None:  # ||W[:, i]|| = norm of row i of W^T
                module.wina_norms = torch.linalg.vector_norm(module.w_t.float(), dim=1)
            norms = module.norms = module.wina_norms if mode == "wina" else None
            keep = float(cpu_gemv.threshold_in_dtype(t, module.w_t.dtype)) if mode == "threshold" else int(k)
            plans.setdefault(id(module.group), [module.group, {}])[1][module.slot] = (keep, norms)
        for group, slots in plans.values():
            keep = [slots[i][0] for i in range(len(slots))]
            scales = [None if slots[i][1] is None else slots[i][1].contiguous().cpu().numpy()
                      for i in range(len(slots))]
            group.configure(mode, keep, scales)
        return table.assign(mode=mode)

    def reset_stats(self) -> None:
        for g in self.groups:
            g.reset_stats()


def _resolve_names(allocation, names: list[str], table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (name, d_in) with ``sparsity`` and ``k`` from an allocation table, dict or float over ``names``."""
    from ..topk import keep_count

    if isinstance(allocation, pd.DataFrame):
        mapping = dict(zip(allocation["name"], allocation["sparsity"]))
    elif isinstance(allocation, dict):
        mapping = dict(allocation)
    else:
        mapping = dict.fromkeys(names, float(allocation))
    missing = [n for n in names if n not in mapping]
    if missing:
        raise AllocationError(f"The allocation lacks {missing[:3]}. Fix: list every projection (0.0 = dense).")
    sparsity = [float(mapping[n]) for n in names]
    if any(not 0.0 <= s < 1.0 for s in sparsity):
        raise AllocationError("Sparsities must lie in [0, 1).")
    return table.assign(sparsity=sparsity, k=[keep_count(s, d) for s, d in zip(sparsity, table["d_in"])])


def numba_usable(model: nn.Module) -> tuple[bool, str]:
    """Whether the numba path can run this model, and if not why (numba missing, dtype, device)."""
    weight = next(model.parameters())
    if not cpu_gemv.numba_available():
        return False, "numba is not installed. " + cpu_gemv.NUMBA_FIX
    if weight.device.type != "cpu":
        return False, f"the model is on {weight.device}, the numba kernel runs on CPU"
    if weight.dtype not in cpu_gemv.NUMBA_DTYPES:
        return False, f"the model is {weight.dtype}; the numba kernel takes float32 or bfloat16"
    return True, ""


@contextlib.contextmanager
def cpu_sparse_decoding(model: nn.Module, allocation, mode: str = "topk", thresholds=None, backend: str = "auto",
                        threads: int = 1, block: int | None = None, dense_through_kernel: bool = False,
                        weights: dict | None = None) -> Iterator[CpuDecoding]:
    """Route the model's projections through the numba kernel with shared selections while the block runs.

    Args:
        model: a supported causal LM on CPU, float32 or bfloat16 weights.
        allocation: per-projection sparsity (an ``allocate(...)`` table, a dict or one float).
        mode: ``"topk"``, ``"threshold"`` (needs ``thresholds``: ``decode.calibrate_thresholds``) or ``"wina"``.
        backend: ``"auto"``, ``"numba"`` or ``"torch"`` (module doc).
        threads: numba threads per GEMV (``cpu_gemv.set_threads`` is called on entry).
        block: the kernel's output columns per block (None: default).
        dense_through_kernel: swap projections at sparsity 0 too (k = d_in).
        weights: a dict ``name -> W^T`` shared across calls (as in ``sparse_decoding``).
    Yields:
        :class:`CpuDecoding`: ``table`` (the resolved allocation with ``swapped``, ``group``) and the groups.
    """
    if mode not in MODES:
        raise AllocationError(f"mode={mode!r} is not one of {MODES}.")
    if backend not in ("auto", "numba", "torch"):
        raise AllocationError(f"backend={backend!r} is not one of ('auto', 'numba', 'torch').")
    usable, why = numba_usable(model)
    if backend == "numba" and not usable:
        cpu_gemv.require_numba()
        raise AllocationError(f"backend='numba' cannot run this model: {why}. Fix: backend='torch'.")
    if backend == "torch" or not usable:
        if backend == "auto":
            warnings.warn(f"cpu_sparse_decoding falls back to the PyTorch kernel: {why}.", stacklevel=3)
        with sparse_decoding(model, allocation, backend="torch", mode=mode, thresholds=thresholds,
                             weights=weights) as table:
            yield CpuDecoding(table, [], "torch")
        return
    table = resolve_allocation(model, allocation)
    thr = _thresholds_for(table, thresholds) if mode == "threshold" else [None] * len(table)
    cpu_gemv.set_threads(threads)
    groups: dict[tuple, SelectionGroup] = {}
    originals: list[tuple[nn.Module, str, nn.Module, GroupedSparseLinear]] = []
    swapped, group_names = [], []
    try:
        for (row, linear), k, t in zip(iter_projections(model), table["k"], thr):
            if k >= row["d_in"] and not dense_through_kernel:
                swapped.append(False)
                group_names.append("")
                continue
            site = (row["layer"], INPUT_SITES[row["projection"]])
            group = groups.get(site)
            if group is None:
                group = groups[site] = SelectionGroup(mode, row["d_in"], threads=threads, block=block)
            parent, attr = _parent(model, row["name"])
            norms = column_norms(linear.weight) if mode == "wina" else None
            w_t = input_major_of(row["name"], linear.weight, weights)
            if weights is None:  # one copy: the Linear views W^T while swapped out (its row-major storage is freed)
                linear.weight.data = w_t.t()
            keep = float(cpu_gemv.threshold_in_dtype(t, linear.weight.dtype)) if mode == "threshold" else int(k)
            slot = group.add(w_t, keep, bias=linear.bias, norms=norms)
            sparse = GroupedSparseLinear(linear, group, slot, k=None if mode == "threshold" else int(k),
                                         threshold=t, name=row["name"], w_t=w_t, norms=norms)
            originals.append((parent, attr, linear, sparse))
            setattr(parent, attr, sparse)
            swapped.append(True)
            group_names.append(f"{site[0]}.{site[1]}")
        final = table.assign(swapped=swapped, group=group_names, backend="numba", mode=mode)
        modules = {n: model.get_submodule(n) for n, s in zip(final["name"], final["swapped"]) if s}
        yield CpuDecoding(final, list(groups.values()), "numba", modules)
    finally:
        for parent, attr, linear, sparse in reversed(originals):
            setattr(parent, attr, linear)
            if not linear.weight.is_contiguous():
                linear.weight.data = linear.weight.data.contiguous()
            _release(sparse)  # the W^T copy goes now: peak memory stays one matrix above the weights
