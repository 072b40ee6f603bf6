"""Calibrated magnitude thresholds: TEAL-style per-projection cuts, CATS gate cuts, FFN-only cuts.

Unlike TopK, a threshold keeps the entries with ``|x| > t`` for a fixed ``t``
calibrated on held-out text (:func:`acttail_lab.sparsify.calibration.site_thresholds`:
``t`` is the magnitude below which a fraction ``s`` of the calibration entries
fall). The realised sparsity then varies from token to token; both
sparsifiers here record, per projection, the mean, the standard deviation and
the 5th / 95th percentiles of the per-token sparsity.

* :class:`ThresholdSparsifier` (TEAL; "FFN thresholding" when only gate/up/down
  get a budget): a forward pre-hook zeroes ``|x| <= t`` in a projection's input.
* :class:`CatsSparsifier` (CATS, MLP only): a forward hook on ``gate_proj``
  zeroes the gate pre-activations whose activation ``|act(g)|`` is ``<= t``,
  so ``act(g) * up(x)`` is zero there: those neurons skip a row of ``W_up``
  and a column of ``W_down``. Its realised sparsity counts both (``up`` and
  ``down`` rows of the table; ``gate`` is read in full).

Protocols as for TopK: ``"all"`` or ``"last_half"`` (only positions
``t >= T // 2`` are cut). Both subclass :class:`acttail_lab.sparsify.base.Sparsifier`
(one active per model; entering twice raises :class:`SparsifierStateError`).
"""
from __future__ import annotations

from typing import ClassVar

import pandas as pd
import torch
from torch import nn

from ..core.errors import AllocationError
from ..core.models import iter_projections
from .base import PROTOCOLS, Sparsifier, TokenSparsity
from .base import protocol_part as _positions
from .calibration import SITE_OF, ActivationStats, mlp_act_fn, site_thresholds
from .topk import resolve_allocation

__all__ = ["PROTOCOLS", "CatsSparsifier", "ThresholdSparsifier", "TokenSparsity"]


def _cut(x: torch.Tensor, keep_of, protocol: str, counter: TokenSparsity | None) -> torch.Tensor:
    """``x`` with the entries outside ``keep_of(part)`` zeroed on the protocol's positions; counts zeros."""
    out = x.clone() if protocol == "last_half" else x
    part = _positions(out, protocol)
    keep = keep_of(part)
    if counter is not None:
        counter.add(((~keep) | (part == 0)).float().mean(-1).reshape(-1))
    if protocol == "last_half":
        part.mul_(keep)
        return out
    return x * keep


class _HookedSparsifier(Sparsifier):
    """Shared plumbing of the threshold sparsifiers: one :class:`TokenSparsity` per site, a threshold column."""

    TABLE_COLUMNS = ("threshold",)
    UNHOOKED: ClassVar[dict] = {"realised_sparsity": 0.0, "realised_std": 0.0, "realised_p05": 0.0, "realised_p95": 0.0,
                "tokens": 0}

    def __init__(self, model: nn.Module, table: pd.DataFrame, protocol: str, record: bool):
        super().__init__(model, table, protocol, record)
        projections = list(iter_projections(model))
        self._modules = {row["name"]: module for row, module in projections}
        self._by_kind = {(row["layer"], row["projection"]): module for row, module in projections}


class ThresholdSparsifier(_HookedSparsifier):
    """TEAL-style calibrated thresholds on the projection inputs.

    Args:
        model: a supported causal LM.
        allocation: per-projection target sparsities (anything ``resolve_allocation`` accepts).
        stats: :class:`ActivationStats` from calibration text (histograms are enough).
        protocol: ``"all"`` or ``"last_half"``. record: measure the per-token sparsity.
    """

    def __init__(self, model: nn.Module, allocation, stats: ActivationStats, protocol: str = "all",
                 record: bool = True):
        table = site_thresholds(stats, resolve_allocation(model, allocation))
        super().__init__(model, table, protocol, record)

    def _hooks(self) -> tuple[list, list]:
        pre = []
        for row in self.table.itertuples(index=False):
            if row.sparsity <= 0:
                continue
            counter, t = self._counter(row.name), float(row.threshold)

            def hook(module, args, counter=counter, t=t):
                return (_cut(args[0], lambda part: part.abs() > t, self.protocol, counter),) + tuple(args[1:])

            pre.append((self._modules[row.name], hook))
        return pre, []


class CatsSparsifier(_HookedSparsifier):
    """CATS: zero the MLP neurons whose gate activation ``|act(gate(x))|`` is at most a calibrated threshold.

    The budget is read from the ``down`` rows of ``allocation`` (the fraction
    of gated neurons to silence in each layer); every other row must be 0.
    """

    def __init__(self, model: nn.Module, allocation, stats: ActivationStats, protocol: str = "all",
                 record: bool = True):
        table = resolve_allocation(model, allocation)
        others = table[(table["projection"] != "down") & (table["sparsity"] > 0)]
        if len(others):
            raise AllocationError(
                f"CATS thresholds only the MLP gate activation; the allocation also gives {others['name'].iloc[0]} "
                "a budget. Fix: allocate to down only (kinds=down), e.g. the preset 'cats'.")
        table = site_thresholds(stats, table, site_of={**SITE_OF, "down": "gate_act"})
        budget = table.set_index(["layer", "projection"])["sparsity"]
        cuts = table.set_index(["layer", "projection"])["threshold"]
        # up rows are skipped with the same neurons: show the same target and threshold there
        is_up = table["projection"] == "up"
        table.loc[is_up, "sparsity"] = [budget[(layer, "down")] for layer in table.loc[is_up, "layer"]]
        table.loc[is_up, "threshold"] = [cuts[(layer, "down")] for layer in table.loc[is_up, "layer"]]
        super().__init__(model, table, protocol, record)

    def _hooks(self) -> tuple[list, list]:
        post = []
        for row in self.table[self.table["projection"] == "down"].itertuples(index=False):
            if row.sparsity <= 0:
                continue
            act, counter, t = mlp_act_fn(self.model, row.layer), self._counter(f"{row.layer}:mlp"), float(row.threshold)
            gate = self._by_kind[(row.layer, "gate")]

            def hook(module, args, out, act=act, counter=counter, t=t):
                return _cut(out, lambda part: act(part).abs() > t, self.protocol, counter)

            post.append((gate, hook))
        return [], post

    def _site_of(self, row) -> str:
        return f"{row.layer}:mlp" if row.projection in ("up", "down") else row.name


# --------------------------------------------------------------------------- registration (sparsify.registry)
from .registry import register_method  # noqa: E402

register_method("threshold", needs="histograms")(
    lambda model, allocation, *, protocol, stats, progress: ThresholdSparsifier(model, allocation, stats,
                                                                                protocol=protocol))
register_method("cats", needs="histograms")(
    lambda model, allocation, *, protocol, stats, progress: CatsSparsifier(model, allocation, stats,
                                                                           protocol=protocol))
