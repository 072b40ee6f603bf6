"""WINA: weight-informed TopK, keeping per token the inputs with the largest ``|x_i| * ||W[:, i]||_2``.

WINA (Weight-Informed Neuron Activation; Chen et al., 2025, arXiv 2505.19427;
docs/method.md, "WINA") scores input ``i`` of a projection ``y = W x`` by the
input's magnitude times the l2 norm of the weight column it multiplies, and
keeps the ``k`` best scores per token. ``k`` is TopK's
(:func:`acttail_lab.sparsify.topk.keep_count`: ``k = round((1 - s) d_in)``), so the
kept count, the realised sparsity and the kernel speed are those of TopK; only
*which* inputs are kept changes. With uniform budgets this is WINA as published
(without its optional column-orthogonalising transform); any allocation
strategy can supply the budgets (``acttail[method=wina]``, ``teal-greedy[method=wina]``).

:class:`WinaSparsifier` is a :class:`acttail_lab.sparsify.topk.TopKSparsifier`
whose selection runs on the scores instead of ``|x|``:

* column norms are computed once per projection when the context is entered,
  from the weight the model runs at that moment (float32, on the weight's device),
  so inside :class:`RotatedWina` they are the norms of the rotated weights ``W Q``;
* every projection selects on its own: q/k/v (and gate/up) read the same input
  but multiply different weights, so they no longer share one selection (TopK
  shares it). On CPU the selection is TopK's integer introselect on the bit
  pattern of the float32 scores; elsewhere ``torch.topk``. The speed cost is
  measured by ``benchmarks/bench_wina_throughput.py`` (SmolLM2-135M, one CPU
  thread, uniform 0.5: 0.74x dense and 0.96x TopK in process-CPU throughput);
* ties at the cut keep the first positions (CPU), as in TopK. A projection with
  an all-zero weight column takes TopK's generic path, so the realised sparsity
  always counts zeros of the *input* after masking.

:func:`wina_mask` is the stand-alone selection (one row per token) used by the
tests and by the sparse decoding path (``kernels.decode``, ``selection="wina"``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.tensors import stored_weight
from .rotation import RotatedTopK, rotations_for
from .topk import _INT_VIEW, TopKSparsifier, _exact_mask, _kth_largest, _Site

__all__ = ["RotatedWina", "WinaSparsifier", "column_norms", "wina_mask", "wina_scores"]


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """``||W[:, i]||_2`` for every input ``i`` of an ``nn.Linear`` weight ``[d_out, d_in]``: float32 ``[d_in]``
    on the weight's device (computed in float32 whatever the weight's dtype)."""
    return torch.linalg.vector_norm(weight.detach().float(), dim=0)


def wina_scores(x: torch.Tensor, norms: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``|x| * norms`` in float32 (shape of ``x``; ``norms`` broadcast over the last dim)."""
    x = x.detach()
    if out is None:
        return x.float().abs().mul_(norms)
    if x.dtype == torch.float32:
        torch.abs(x, out=out)
    else:
        out.copy_(x).abs_()
    return out.mul_(norms)


def wina_mask(x: torch.Tensor, norms: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (shape of ``x``) keeping exactly the ``k`` entries of each row with the largest
    ``|x_i| * norms_i`` (ties at the cut: first positions on CPU)."""
    d = x.shape[-1]
    if k >= d:
        return torch.ones_like(x, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    scores = wina_scores(x, norms.to(x.device))
    if scores.device.type == "cpu":
        keys = scores.reshape(-1, d).view(torch.int32)
        return _exact_mask(keys, _kth_largest(keys, (k,))[k], k).view(x.shape)
    idx = scores.topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)


class WinaSparsifier(TopKSparsifier):
    """Context manager applying WINA (per-token TopK of ``|x| * ||W col||``) to the projection inputs.

    Args and usage as :class:`acttail_lab.sparsify.topk.TopKSparsifier` (allocation as a table, a dict
    or one float; protocol ``"all"`` / ``"last_half"``; ``realised()`` one row per projection with k,
    realised_sparsity and tokens). Column norms are read on entry (see the module doc).
    """

    def __init__(self, model: nn.Module, allocation, protocol: str = "all", record: bool = True):
        self._norms: dict[str, torch.Tensor] = {}
        self._generic: set[str] = set()
        super().__init__(model, allocation, protocol=protocol, record=record)

    def _plan_sites(self) -> dict[str, _Site]:
        sites = super()._plan_sites()
        for site in sites.values():  # each projection multiplies its own weight: no shared selection
            site.group, site.group_k = None, ()
        self._group_members = {}
        return sites

    def _hooks(self) -> tuple[list, list]:
        """Column norms of the weights as they are now (rotated, if a rotation was folded first), then TopK's hooks."""
        self._norms = {name: column_norms(stored_weight(self._modules[name])) for name in self._sites}
        self._generic = {name for name, n in self._norms.items() if bool((n == 0).any())}
        return super()._hooks()

    def _release(self) -> None:
        super()._release()
        self._norms, self._generic = {}, set()

    def norms(self) -> dict[str, torch.Tensor]:
        """The column norms in use (empty outside the ``with`` block)."""
        return dict(self._norms)

    def _shared(self, site: _Site, x: torch.Tensor, part: torch.Tensor):
        """Selection data of ``part`` from the WINA scores, in the forms ``TopKSparsifier._mask_part`` reads."""
        norms = self._norms[site.name]
        if norms.device != part.device:
            norms = self._norms[site.name] = norms.to(part.device)
        if part.device.type == "cpu" and part.dtype in _INT_VIEW and site.name not in self._generic:
            buffer = self._work.get(site.role + "score", part.shape, torch.float32)
            keys = wina_scores(part, norms, out=buffer).view(-1, site.d_in).view(torch.int32)
            return "cpu", keys, _kth_largest(keys, (site.k,), self._work, site.role)
        # a zero score means a zero input only when every column norm is positive: else count on x itself
        return "topk", wina_scores(part, norms).topk(site.k, dim=-1, sorted=False).indices


class RotatedWina(RotatedTopK):
    """WINA on LaRoSA-rotated inputs: :class:`acttail_lab.sparsify.rotation.Rotation` folds ``W Q`` into the
    weights first, then WINA scores ``Q^T x`` with the column norms of ``W Q`` (read after the fold)."""

    INNER = WinaSparsifier


# --------------------------------------------------------------------------- registration (sparsify.registry)
from .registry import register_method  # noqa: E402

register_method("wina", needs=None)(
    lambda model, allocation, *, protocol, stats, progress: WinaSparsifier(model, allocation, protocol=protocol))
register_method("rotated-wina", needs="moments")(
    lambda model, allocation, *, protocol, stats, progress: RotatedWina(
        model, allocation, rotations_for(model, stats, progress=progress), protocol=protocol))
