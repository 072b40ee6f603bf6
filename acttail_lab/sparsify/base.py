"""The base class of every sparsifier: :class:`Sparsifier`, a context manager over hooks.

A sparsifier holds a projection table (one row per projection of the model:
layer, projection, name, d_in, n_params, sparsity, plus its own columns such
as ``k`` or ``threshold``), a protocol and a ``record`` flag. While its
``with`` block runs, its hooks (from :meth:`Sparsifier._hooks`) are installed
through :func:`acttail_lab.core.hooks.hooks` and its counters measure the
realised sparsity; :meth:`Sparsifier.realised` reports it, one row per
projection. Entering a sparsifier that is already active, or a second one on
a model that has one active, raises :class:`SparsifierStateError` (stacking two
would sparsify each input twice).

Protocols (:data:`PROTOCOLS`, which sequence positions are sparsified):

* ``"all"``: every position.
* ``"last_half"``: TEAL's prefill rule; only positions ``t >= T // 2`` of a
  sequence of length ``T`` are sparsified, earlier positions stay dense.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.errors import AllocationError, SparsifierStateError
from ..core.hooks import hooks
from ..core.tensors import to_numpy

PROTOCOLS = ("all", "last_half")
"""Which sequence positions are sparsified: every one, or t >= T // 2 (TEAL prefill)."""

_PCT_BINS = 200
_IDENTITY = ["layer", "projection", "name", "d_in", "n_params"]


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`; else :class:`AllocationError`."""
    if protocol not in PROTOCOLS:
        raise AllocationError(f"Unknown protocol {protocol!r}. Fix: choose one of {PROTOCOLS}.")
    return protocol


def protocol_part(x: torch.Tensor, protocol: str) -> torch.Tensor:
    """The part of ``x`` [..., T, d] that the protocol sparsifies (a view; ``x`` itself for ``"all"``)."""
    if protocol == "last_half":
        if x.dim() < 2:
            raise AllocationError("protocol='last_half' needs inputs shaped [..., T, d]. Fix: use protocol='all'.")
        return x[..., x.shape[-2] // 2:, :]
    return x


# --------------------------------------------------------------------------- counters
class ZeroCount:
    """Zeros after masking and sparsified positions (tokens) of one projection with ``d_in`` inputs."""

    __slots__ = ("d_in", "tokens", "zeros")

    def __init__(self, d_in: int):
        self.d_in = int(d_in)
        self.zeros = None  # int on CPU, a tensor on the input's device elsewhere
        self.tokens = 0

    def add(self, zeros, rows: int) -> None:
        """Add ``zeros`` zero entries seen over ``rows`` sparsified positions."""
        self.zeros = zeros if self.zeros is None else self.zeros + zeros
        self.tokens += rows

    def stats(self) -> dict:
        """realised_sparsity (zero fraction; NaN before any token) and tokens."""
        if self.tokens == 0 or self.zeros is None:
            return {"realised_sparsity": float("nan"), "tokens": 0}
        return {"realised_sparsity": float(self.zeros) / (self.tokens * self.d_in), "tokens": self.tokens}


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
        self.hist += to_numpy(torch.histc(v.float(), bins=_PCT_BINS, min=0.0, max=1.0), np.int64)

    def stats(self) -> dict:
        """realised_sparsity (mean), realised_std, realised_p05, realised_p95 (NaN before any token), tokens."""
        if self.count == 0:
            return {"realised_sparsity": float("nan"), "realised_std": float("nan"),
                    "realised_p05": float("nan"), "realised_p95": float("nan"), "tokens": 0}
        mean = self.total / self.count
        var = max(self.squares / self.count - mean * mean, 0.0)
        cum = np.cumsum(self.hist) / self.count
        centres = (np.arange(_PCT_BINS) + 0.5) / _PCT_BINS
        pct = [float(centres[min(int(np.searchsorted(cum, q)), _PCT_BINS - 1)]) for q in (0.05, 0.95)]
        return {"realised_sparsity": mean, "realised_std": var ** 0.5, "realised_p05": pct[0],
                "realised_p95": pct[1], "tokens": self.count}


# --------------------------------------------------------------------------- the base class
class Sparsifier:
    """Context manager installing a sparsifier's hooks; holds its counters and its realised table.

    Args:
        model: the model the hooks go on (one active sparsifier per model).
        table: one row per projection with layer, projection, name, d_in,
            n_params, sparsity and the columns named in ``TABLE_COLUMNS``.
        protocol: one of :data:`PROTOCOLS`. record: measure the realised sparsity.

    Subclasses give :meth:`_hooks` (the hooks to install) and may extend
    :meth:`_reset` (run on entry, after the state checks) and :meth:`_release`
    (run on exit, after the hooks are removed). Counters, one per site key
    (``self.counters``), restart at each entry.
    """

    _ACTIVE_ATTR = "_acttail_active_sparsifier"
    TABLE_COLUMNS: ClassVar[tuple] = ()
    """Method-specific columns of ``table`` copied into :meth:`realised` after target_sparsity."""
    UNHOOKED: ClassVar[dict] = {"realised_sparsity": 0.0, "tokens": 0}
    """Measured columns of a projection without a counter (not sparsified, or nothing recorded)."""

    def __init__(self, model: nn.Module, table: pd.DataFrame, protocol: str = "all", record: bool = True):
        self.protocol = check_protocol(protocol)
        self.model, self.table, self.record = model, table, record
        self.counters: dict = {}
        self._stack: contextlib.ExitStack | None = None

    # ------------------------------------------------------------------ subclass API
    def _hooks(self) -> tuple[list, list]:  # pragma: no cover - overridden
        """``(pre, post)``: the hooks to install, in the forms :func:`acttail_lab.core.hooks.hooks` takes."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Called on entry before the hooks are installed: counters restart."""
        self.counters = {}

    def _release(self) -> None:
        """Called on exit (and after a failed entry) once the hooks are removed."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def active(self) -> bool:
        """True inside the ``with`` block."""
        return self._stack is not None

    def __enter__(self):
        name = type(self).__name__
        if self._stack is not None:
            raise SparsifierStateError(
                f"This {name} is already active (nested `with` on the same object). "
                "Fix: use one `with` block at a time; create a second sparsifier for a different allocation.")
        other = getattr(self.model, self._ACTIVE_ATTR, None)
        if other is not None:
            raise SparsifierStateError(
                f"Another {type(other).__name__} is already active on this model; stacking two would sparsify "
                "each input twice. Fix: leave the first `with` block before entering the second.")
        stack = contextlib.ExitStack()
        try:
            self._reset()
            pre, post = self._hooks()
            stack.enter_context(hooks(pre=pre, post=post))
        except BaseException:
            stack.close()
            self._release()
            raise
        self._stack = stack
        setattr(self.model, self._ACTIVE_ATTR, self)
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                stack.close()
        finally:
            self._release()
            if getattr(self.model, self._ACTIVE_ATTR, None) is self:
                delattr(self.model, self._ACTIVE_ATTR)

    # ------------------------------------------------------------------ results
    def _site_of(self, row) -> str:
        """Counter key of a table row (default: the projection name)."""
        return row.name

    def _counter(self, key: str, factory=TokenSparsity):
        """The counter of ``key`` (created by ``factory()``); None when not recording."""
        if not self.record:
            return None
        return self.counters.setdefault(key, factory())

    def _measured(self, key: str) -> dict:
        counter = self.counters.get(key)
        return dict(self.UNHOOKED) if counter is None else counter.stats()

    def realised(self) -> pd.DataFrame:
        """Measured sparsity, one row per projection.

        Columns: layer, projection, name, d_in, n_params, target_sparsity, the
        method's own columns (``TABLE_COLUMNS``: k for TopK, threshold for
        thresholds), realised_sparsity (zero fraction of the input over the
        sparsified positions), the method's extra statistics, tokens
        (sparsified positions seen).
        """
        out = self.table[_IDENTITY].copy().reset_index(drop=True)
        out["target_sparsity"] = self.table["sparsity"].to_numpy()
        for col in self.TABLE_COLUMNS:
            out[col] = self.table[col].to_numpy()
        measured = pd.DataFrame([self._measured(self._site_of(row)) for row in self.table.itertuples(index=False)])
        return pd.concat([out, measured], axis=1)
