"""TopK activation sparsification of the seven projection inputs.

:class:`TopKSparsifier` is a context manager. While active, a forward
pre-hook on each sparsified projection (q, k, v, o, gate, up, down of every
decoder layer, found with :func:`acttail_lab.core.models.iter_projections`) keeps,
for every token, the ``k = round((1 - s) * d_in)`` entries of the projection
input with the largest ``|x|`` and zeroes the rest. Exactly ``k`` entries are
kept per token even when magnitudes tie at the cut (on CPU the first tied
entries by position are kept; on GPU ``torch.topk`` picks), so the sparsity is
exact and needs no calibration data (docs/method.md, "TopK").

Protocols (which sequence positions are sparsified):

* ``"all"``: every position.
* ``"last_half"``: TEAL's prefill rule; only positions ``t >= T // 2`` of a
  sequence of length ``T`` are sparsified, earlier positions stay dense.

Speed (measured on SmolLM2-135M, one CPU thread: a sparsified forward pass
costs ~1.2x the CPU time of a dense one; benchmarks/bench_topk_throughput.py):

* projections that read the same input tensor (q/k/v read the post-norm
  hidden state, gate/up the post-attention-norm hidden state) share one
  selection;
* on CPU the k-th largest ``|x|`` of each row comes from numpy's SIMD
  introselect (``ndarray.partition``) on the integer bit pattern of ``|x|``
  (same order as the magnitudes), 3-5x faster than ``torch.topk``; the mask
  is ``|x| >= threshold`` with ties at the threshold trimmed to exactly ``k``;
* scratch buffers are reused between calls (fresh multi-MB tensors
  page-fault on every call); on GPU plain ``torch.topk`` + scatter is used.

Realised sparsity is measured while running: per projection, the fraction of
exactly-zero entries of the input after masking, over the sparsified
positions only (entries that were already zero before masking count as
zeros too, so it can exceed the target, never fall below it).

The lifecycle (hooks through :func:`acttail_lab.core.hooks.hooks`, one active
sparsifier per model, the realised table) is :class:`acttail_lab.sparsify.base.Sparsifier`'s.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.errors import AllocationError
from ..core.models import INPUT_SITES, iter_projections
from .base import PROTOCOLS, Sparsifier, ZeroCount, check_protocol

__all__ = ["PROTOCOLS", "TopKSparsifier", "keep_count", "resolve_allocation", "topk_mask", "topk_sparsify",
           "weighted_sparsity"]

_SHARED_INPUT = {kind: site for kind, site in INPUT_SITES.items() if site != kind}
"""Projections that read the same input tensor in every supported architecture (q/k/v, gate/up)."""

_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16,
             torch.bfloat16: torch.int16, torch.float64: torch.int64}


# --------------------------------------------------------------------------- allocation
def keep_count(sparsity: float, d_in: int) -> int:
    """Entries kept per token: ``k = round((1 - sparsity) * d_in)`` (Python rounding)."""
    return int(round((1.0 - float(sparsity)) * d_in))


def _check_sparsity(name: str, value) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise AllocationError(f"Sparsity of {name} is {value!r}, not a number. Fix: give a float in [0, 1).")
    if not (0.0 <= s < 1.0):  # also rejects NaN
        raise AllocationError(
            f"Sparsity of {name} is {value!r}, outside [0, 1). Fix: give each projection a fraction "
            "of zeroed inputs in [0, 1) (0 = dense; 1 would zero the whole input)."
        )
    return s


def resolve_allocation(model: nn.Module, allocation) -> pd.DataFrame:
    """Projection table of ``model`` with a validated ``sparsity`` and ``k`` column.

    Args:
        model: a supported causal LM.
        allocation: a DataFrame with ``name`` and ``sparsity`` columns, a dict
            ``{projection name: sparsity}``, or one float (uniform). Names are
            those of :func:`acttail_lab.core.models.projection_table`; every
            projection must be listed (give 0.0 to keep one dense).
    Returns:
        DataFrame: layer, projection, name, d_out, d_in, n_params, sparsity
        (target fraction in [0, 1)), k (entries kept per token).
    """
    rows = [row for row, _ in iter_projections(model)]
    names = [r["name"] for r in rows]
    if isinstance(allocation, pd.DataFrame):
        missing_cols = {"name", "sparsity"} - set(allocation.columns)
        if missing_cols:
            raise AllocationError(
                f"Allocation table lacks the column(s) {sorted(missing_cols)}. "
                "Fix: pass the output of allocation.allocate(...) or a DataFrame with name and sparsity."
            )
        if allocation["name"].duplicated().any():
            dup = allocation.loc[allocation["name"].duplicated(), "name"].tolist()[:3]
            raise AllocationError(f"Allocation lists projections more than once: {dup}. Fix: one row per projection.")
        mapping = dict(zip(allocation["name"], allocation["sparsity"]))
    elif isinstance(allocation, Mapping):
        mapping = dict(allocation)
    elif isinstance(allocation, (int, float, np.floating, np.integer)) and not isinstance(allocation, bool):
        mapping = {n: allocation for n in names}
    else:
        raise AllocationError(
            f"Cannot read an allocation from a {type(allocation).__name__}. "
            "Fix: pass a DataFrame (name, sparsity), a dict name -> sparsity, or one float."
        )
    unknown = sorted(set(mapping) - set(names))
    missing = [n for n in names if n not in mapping]
    if unknown or missing:
        raise AllocationError(
            f"Allocation does not match the model's projections: unknown {unknown[:3]}"
            f"{'...' if len(unknown) > 3 else ''}, missing {missing[:3]}{'...' if len(missing) > 3 else ''}. "
            "Fix: build it from projection_table(model) / allocate(...) for this same model "
            "(list every projection; 0.0 keeps one dense)."
        )
    table = pd.DataFrame(rows)
    table["sparsity"] = [_check_sparsity(n, mapping[n]) for n in names]
    table["k"] = [keep_count(s, d) for s, d in zip(table["sparsity"], table["d_in"])]
    return table


# --------------------------------------------------------------------------- top-k kernels
class _Workspace:
    """Scratch tensors reused across calls (CPU): fresh multi-MB allocations page-fault on
    every call and cost more than the arithmetic. Keyed by role, shape and dtype."""

    def __init__(self):
        self._buffers: dict = {}

    def get(self, role: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        key = (role, tuple(shape), dtype)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.empty(shape, dtype=dtype)
        return buf

    def clear(self) -> None:
        self._buffers.clear()


def _magnitude_keys(x: torch.Tensor, work: _Workspace | None = None, role: str = "") -> torch.Tensor:
    """``|x|`` as an integer tensor that sorts like the magnitudes (2-D: rows x d).

    Non-negative IEEE floats order exactly like their bit patterns read as
    signed integers (NaN above inf), so selection can run on integers.
    """
    x = x.detach()  # selection needs no gradient (the masked output keeps it)
    if work is None:
        a = x.abs()
    else:
        a = torch.abs(x, out=work.get(role + "abs", x.shape, x.dtype))
    return a.reshape(-1, x.shape[-1]).view(_INT_VIEW[a.dtype])


def _kth_largest(keys: torch.Tensor, ks, work: _Workspace | None = None, role: str = "") -> dict[int, torch.Tensor]:
    """Per row, the k-th largest key for each k in ``ks``, as [rows, 1] tensors.

    ``k <= 0`` (a sparsity so close to 1 that round((1-s) d) = 0) gives a key above every
    magnitude, so nothing is kept; ``k >= d`` one below every magnitude, so everything is.

    Uses numpy's SIMD introselect (``ndarray.partition``), several times faster
    than ``torch.topk`` on CPU. Several k are served by partitioning only the
    top section left by the previous (larger) k.
    """
    source = keys.numpy()  # cpu-only path: keys come from a CPU tensor
    scratch = source.copy() if work is None else work.get(role + "part", keys.shape, keys.dtype).numpy()  # cpu
    if work is not None:
        np.copyto(scratch, source)
    out = {}
    limits = torch.iinfo(keys.dtype)
    for k in [k for k in set(ks) if k <= 0 or k >= source.shape[-1]]:  # keep none / keep all
        out[k] = torch.full((source.shape[0], 1), limits.max if k <= 0 else limits.min, dtype=keys.dtype)
    for k in sorted((k for k in set(ks) if 0 < k < source.shape[-1]), reverse=True):
        width = scratch.shape[-1]
        scratch.partition(width - k, axis=-1)
        scratch = scratch[:, width - k:]  # the k largest, k-th largest first
        out[k] = torch.from_numpy(np.ascontiguousarray(scratch[:, :1]))
    return out


def _exact_mask(keys: torch.Tensor, threshold: torch.Tensor, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of exactly ``k`` entries per row: keys above ``threshold`` plus ties at it.

    ``threshold`` is the k-th largest key of each row, so ``keys >= threshold``
    keeps at least ``k``; on ties it keeps more. Rows with ties keep the first
    tied entries (by position) needed to reach exactly ``k``.
    """
    mask = torch.ge(keys, threshold, out=out) if out is not None else keys >= threshold
    over = mask.view(torch.uint8).sum(-1, dtype=torch.int32) != k
    if bool(over.any()):
        rows = over.nonzero().squeeze(1)
        sub, thr = keys[rows], threshold[rows]
        above = sub > thr
        tied = sub == thr
        need = k - above.sum(-1, keepdim=True)
        mask[rows] = above | (tied & (tied.cumsum(-1) <= need))
    return mask


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (shape of ``x``) selecting exactly the ``k`` largest-``|x|`` entries of each row (last dim)."""
    d = x.shape[-1]
    if k >= d:
        return torch.ones_like(x, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    if x.device.type == "cpu" and x.dtype in _INT_VIEW:
        keys = _magnitude_keys(x)
        return _exact_mask(keys, _kth_largest(keys, (k,))[k], k).view(x.shape)
    idx = x.abs().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)


def topk_sparsify(x: torch.Tensor, k: int) -> torch.Tensor:
    """A copy of ``x`` with all but the ``k`` largest-``|x|`` entries of each row (last dim) zeroed."""
    return x * topk_mask(x, k)


# --------------------------------------------------------------------------- hooks
@dataclass
class _Site:
    """One hooked projection: its k, its shared-input group and its counters."""

    name: str
    k: int
    d_in: int
    group: str | None  # projections of one layer reading the same tensor
    role: str  # input kind ("attn_in", "o", "mlp_in", "down"), names reusable scratch buffers
    group_k: tuple = ()  # every k of the group (for the shared selection)
    counter: ZeroCount | None = None  # zeros after masking and positions seen (restarts at each entry)


class TopKSparsifier(Sparsifier):
    """Context manager applying exact per-token TopK to the projection inputs of a model.

    Args:
        model: a supported causal LM (LLaMA, Mistral, Qwen2/3, Gemma 2/3).
        allocation: DataFrame (``name``, ``sparsity``), dict name -> sparsity,
            or one float for a uniform allocation. Sparsity in [0, 1).
        protocol: ``"all"`` or ``"last_half"`` (see module doc).
        record: count zeros to measure the realised sparsity (a small extra cost).

    Usage::

        with TopKSparsifier(model, alloc) as sp:
            model(ids)
        sp.realised()   # one row per projection

    Projections whose ``k`` equals ``d_in`` (e.g. sparsity 0) get no hook.
    Counters restart each time the context is entered. Entering an active
    sparsifier again, or a second one on the same model, raises
    :class:`SparsifierStateError`.
    """

    TABLE_COLUMNS = ("k",)

    def __init__(self, model: nn.Module, allocation, protocol: str = "all", record: bool = True):
        check_protocol(protocol)
        super().__init__(model, resolve_allocation(model, allocation), protocol, record)
        self._modules = {row["name"]: module for row, module in iter_projections(model)}
        self._sites = self._plan_sites()
        self._memo: dict = {}
        self._work = _Workspace()
        self._reset()

    # ------------------------------------------------------------------ set-up
    def _plan_sites(self) -> dict[str, _Site]:
        sites = {}
        for row in self.table.itertuples(index=False):
            if row.k >= row.d_in:
                continue
            role = _SHARED_INPUT.get(row.projection, row.projection)
            group = f"{row.layer}:{role}" if row.projection in _SHARED_INPUT else None
            sites[row.name] = _Site(name=row.name, k=int(row.k), d_in=int(row.d_in), group=group, role=role)
        groups: dict[str, list[_Site]] = {}
        for site in sites.values():
            if site.group is not None:
                groups.setdefault(site.group, []).append(site)
        for members in groups.values():
            ks = tuple(sorted(s.k for s in members))
            for site in members:
                site.group_k = ks
        self._group_members = {g: tuple(s.name for s in members) for g, members in groups.items()}
        return sites

    def _reset(self) -> None:
        super()._reset()
        self._memo.clear()
        for site in self._sites.values():
            site.counter = self.counters[site.name] = ZeroCount(site.d_in)

    def _hooks(self) -> tuple[list, list]:
        return [(self._modules[site.name], self._make_hook(site)) for site in self._sites.values()], []

    def _release(self) -> None:
        self._memo.clear()
        self._work.clear()

    # ------------------------------------------------------------------ the hook
    def _shared(self, site: _Site, x: torch.Tensor, part: torch.Tensor):
        """Selection data for ``part`` (a slice of the hook input ``x``), shared within a group.

        Projections of one layer that receive the very same tensor ``x`` (checked
        by identity; q/k/v and gate/up in every supported model) reuse one
        selection: on CPU the integer keys and the k-th largest key of every
        k of the group, elsewhere one ``topk`` of the group's largest k, sorted
        when the k differ so that each member takes a prefix.
        """
        memo = self._memo.get(site.group) if site.group is not None else None
        if memo is not None and memo[0] is x:
            memo[2].discard(site.name)
            if not memo[2]:
                del self._memo[site.group]
            return memo[1]
        ks = site.group_k or (site.k,)
        if part.device.type == "cpu" and part.dtype in _INT_VIEW:
            keys = _magnitude_keys(part, self._work, site.role)
            data = ("cpu", keys, _kth_largest(keys, ks, self._work, site.role))
        else:
            data = ("topk", part.detach().abs().topk(max(ks), dim=-1, sorted=len(set(ks)) > 1).indices)
        if site.group is not None and len(ks) > 1:
            pending = set(self._group_members[site.group]) - {site.name}
            self._memo[site.group] = (x, data, pending)
        return data

    def _mask_part(self, site: _Site, x: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """Boolean mask (shape of ``part``) keeping ``site.k`` entries per row; updates the counters."""
        data = self._shared(site, x, part)
        rows = part.numel() // site.d_in
        if data[0] == "cpu":
            keys, thresholds = data[1], data[2]
            threshold = thresholds[site.k]
            # Autograd saves the mask for the backward pass: reuse a buffer only without grad.
            buffer = None if part.requires_grad else self._work.get("mask", keys.shape, torch.bool)
            mask = _exact_mask(keys, threshold, site.k, out=buffer)
            if self.record:
                # Kept entries are >= the threshold, so kept zeros exist only
                # in rows whose threshold is zero.
                zeros = rows * (site.d_in - site.k)
                zero_rows = (threshold == 0).squeeze(1)
                if bool(zero_rows.any()):
                    zeros += int((mask[zero_rows] & (keys[zero_rows] == 0)).sum())
            mask = mask.view(part.shape)
        else:
            idx = data[1] if data[1].shape[-1] == site.k else data[1][..., : site.k]
            mask = torch.zeros_like(part, dtype=torch.bool).scatter_(-1, idx, True)
            if self.record:
                zeros = (part.gather(-1, idx) == 0).sum() + rows * (site.d_in - site.k)
        if self.record:
            site.counter.add(zeros, rows)
        return mask

    def _make_hook(self, site: _Site):
        last_half = self.protocol == "last_half"

        def hook(module, args):
            x = args[0]
            if last_half:
                if x.dim() < 2:
                    raise AllocationError(
                        "protocol='last_half' needs inputs shaped [..., T, d] with a sequence dimension. "
                        "Fix: use protocol='all' for unbatched vectors."
                    )
                half = x.shape[-2] // 2
                out = x.clone()
                out[..., half:, :].mul_(self._mask_part(site, x, x[..., half:, :]))
            else:
                out = x * self._mask_part(site, x, x)
            return (out,) + tuple(args[1:])

        return hook

    def realised(self) -> pd.DataFrame:
        """Measured sparsity, one row per projection.

        Columns: layer, projection, name, d_in, n_params, target_sparsity,
        k (kept per token), realised_sparsity (zero fraction of the input after
        masking, over sparsified positions; 0.0 for unhooked projections, NaN
        for hooked ones before any token), tokens (sparsified positions seen;
        0 when unhooked or not yet run).
        """
        return super().realised()


def weighted_sparsity(table: pd.DataFrame, column: str = "realised_sparsity") -> float:
    """Parameter-weighted mean of a sparsity column (``n_params`` weights): the fraction of weight columns skipped."""
    weights = table["n_params"].to_numpy(dtype=float)
    return float(np.dot(table[column].to_numpy(dtype=float), weights) / weights.sum())


# --------------------------------------------------------------------------- registration (sparsify.registry)
from .registry import register_method  # noqa: E402

register_method("topk", needs=None)(
    lambda model, allocation, *, protocol, stats, progress: TopKSparsifier(model, allocation, protocol=protocol))
