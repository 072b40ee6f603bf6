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
``t >= T // 2`` are cut).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.errors import AllocationError
from ..core.models import iter_projections
from .calibration import SITE_OF, ActivationStats, mlp_act_fn, site_thresholds
from .topk import PROTOCOLS, resolve_allocation

_PCT_BINS = 200


@dataclass
class TokenSparsity:
    """Running per-token sparsity of one projection: sum, sum of squares and a 200-bin histogram over [0, 1]."""

    total: float = 0.0
    squares: float = 0.0
    count: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(_PCT_BINS, dtype=np.int64))

    def add(self, per_token: torch.Tensor) -> None:
        """Add a 1-D tensor of per-token zero fractions."""
        v = per_token.detach().double().cpu()
        self.total += float(v.sum())
        self.squares += float((v * v).sum())
        self.count += v.numel()
        self.hist += torch.histc(v.float(), bins=_PCT_BINS, min=0.0, max=1.0).to(torch.int64).numpy()

    def stats(self) -> dict:
        """mean, std, p05, p95 of the per-token sparsity (NaN before any token)."""
        if self.count == 0:
            return {"realised_sparsity": float("nan"), "realised_std": float("nan"),
                    "realised_p05": float("nan"), "realised_p95": float("nan")}
        mean = self.total / self.count
        var = max(self.squares / self.count - mean * mean, 0.0)
        cum = np.cumsum(self.hist) / self.count
        centres = (np.arange(_PCT_BINS) + 0.5) / _PCT_BINS
        pct = [float(centres[min(int(np.searchsorted(cum, q)), _PCT_BINS - 1)]) for q in (0.05, 0.95)]
        return {"realised_sparsity": mean, "realised_std": var ** 0.5, "realised_p05": pct[0], "realised_p95": pct[1]}


def _positions(x: torch.Tensor, protocol: str) -> torch.Tensor:
    """The part of ``x`` [..., T, d] that the protocol cuts (a view)."""
    if protocol == "last_half":
        if x.dim() < 2:
            raise AllocationError("protocol='last_half' needs inputs shaped [..., T, d]. Fix: use protocol='all'.")
        return x[..., x.shape[-2] // 2:, :]
    return x


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


class _HookedSparsifier:
    """Shared plumbing: hooks on/off, one :class:`TokenSparsity` per site, the realised table."""

    def __init__(self, model: nn.Module, table: pd.DataFrame, protocol: str, record: bool):
        if protocol not in PROTOCOLS:
            raise AllocationError(f"Unknown protocol {protocol!r}. Fix: choose one of {PROTOCOLS}.")
        self.model, self.table, self.protocol, self.record = model, table, protocol, record
        projections = list(iter_projections(model))
        self._modules = {row["name"]: module for row, module in projections}
        self._by_kind = {(row["layer"], row["projection"]): module for row, module in projections}
        self.counters: dict[str, TokenSparsity] = {}
        self._handles = []

    def _install(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        if self._handles:
            raise AllocationError("This sparsifier is already active. Fix: one `with` block at a time.")
        self.counters = {}
        try:
            self._install()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _counter(self, name: str) -> TokenSparsity | None:
        if not self.record:
            return None
        return self.counters.setdefault(name, TokenSparsity())

    def _measured(self, name: str) -> dict:
        counter = self.counters.get(name)
        if counter is None:
            return {"realised_sparsity": 0.0, "realised_std": 0.0, "realised_p05": 0.0, "realised_p95": 0.0,
                    "tokens": 0}
        return {**counter.stats(), "tokens": counter.count}

    def realised(self) -> pd.DataFrame:
        """One row per projection: identity columns, target_sparsity, threshold, realised mean/std/p05/p95, tokens."""
        cols = ["layer", "projection", "name", "d_in", "n_params"]
        out = self.table[cols].copy()
        out["target_sparsity"] = self.table["sparsity"].to_numpy()
        out["threshold"] = self.table["threshold"].to_numpy()
        measured = pd.DataFrame([self._measured(self._site_of(row)) for row in self.table.itertuples(index=False)])
        return pd.concat([out.reset_index(drop=True), measured], axis=1)

    def _site_of(self, row) -> str:
        return row.name


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

    def _install(self) -> None:
        for row in self.table.itertuples(index=False):
            if row.sparsity <= 0:
                continue
            counter, t = self._counter(row.name), float(row.threshold)

            def hook(module, args, counter=counter, t=t):
                return (_cut(args[0], lambda part: part.abs() > t, self.protocol, counter),) + tuple(args[1:])

            self._handles.append(self._modules[row.name].register_forward_pre_hook(hook))


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

    def _install(self) -> None:
        for row in self.table[self.table["projection"] == "down"].itertuples(index=False):
            if row.sparsity <= 0:
                continue
            act, counter, t = mlp_act_fn(self.model, row.layer), self._counter(f"{row.layer}:mlp"), float(row.threshold)
            gate = self._by_kind[(row.layer, "gate")]

            def hook(module, args, out, act=act, counter=counter, t=t):
                return _cut(out, lambda part: act(part).abs() > t, self.protocol, counter)

            self._handles.append(gate.register_forward_hook(hook))

    def _site_of(self, row) -> str:
        return f"{row.layer}:mlp" if row.projection in ("up", "down") else row.name
