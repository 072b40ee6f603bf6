"""Second moments a group of layers at a time, so every layer's moments are never alive at once.

Rotation (LaRoSA) needs ``E[x x^T]`` of every rotated input: float64 ``d x d`` per (layer, site), 1.37 GB per
LLaMA-2-7B layer (4096^2 x 3 sites + 11008^2 for down), 44 GB for the whole model. Collecting them all in one
pass and only then building the rotations holds all of that at once. Here the calibration windows are run
once per *group* of layers (:func:`layer_groups`: as many consecutive layers as fit in
:data:`MOMENT_BUDGET_BYTES`); each pass sums the moments of its group only and stops the forward pass after
the group's last layer, and the caller turns them into rotations and frees them before the next group.
Cost: the forward passes up to each group's end (one pass when the whole model fits the budget, as for
SmolLM2: 0.8 GB). Inputs: a model and calibration token ids ``[n, T]``; outputs: per-group
:class:`~.calibration.ActivationStats` with the moments of that group only (float64, on each layer's device).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..core.errors import StopForward
from ..core.hooks import hooks
from ..core.models import INPUT_SITES, decoder_layers, iter_projections, unwrap
from .calibration import ActivationStats, Collector

MOMENT_BUDGET_BYTES = 4 * 2 ** 30
"""Most bytes of float64 second moments alive at once (4 GiB: 3 LLaMA-2-7B layers of 1.37 GB, all 30 SmolLM2 layers)."""


def moment_bytes(model: nn.Module) -> list[int]:
    """Bytes of the float64 second moments of each decoder layer (sum over its rotatable input sites)."""
    per_layer: dict = {}
    for row, _ in iter_projections(unwrap(model)):
        per_layer.setdefault(row["layer"], {})[INPUT_SITES[row["projection"]]] = 8 * row["d_in"] ** 2
    return [sum(per_layer[layer].values()) for layer in sorted(per_layer)]


def layer_groups(model: nn.Module, budget_bytes: int | None = None) -> list[list[int]]:
    """Consecutive layers in groups whose moments fit ``budget_bytes`` (default :data:`MOMENT_BUDGET_BYTES`;
    at least one layer per group)."""
    budget_bytes = MOMENT_BUDGET_BYTES if budget_bytes is None else budget_bytes
    groups, current, used = [], [], 0
    for layer, size in enumerate(moment_bytes(model)):
        if current and used + size > budget_bytes:
            groups.append(current)
            current, used = [], 0
        current.append(layer)
        used += size
    return groups + ([current] if current else [])


def group_moments(model: nn.Module, windows: torch.Tensor, layers, batch_size: int = 4,
                  key: str = "") -> ActivationStats:
    """The second moments of ``layers`` only (no histograms), from one pass that stops after the last of them."""
    model = unwrap(model)
    last = decoder_layers(model)[max(layers)]

    def stop(module, args, output):
        raise StopForward

    device = next(model.parameters()).device
    with torch.inference_mode(), Collector(model, moments=True, moment_layers=layers, histograms=False) as got, \
            hooks(post=[(last, stop)]):
        for batch in windows.split(batch_size):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except StopForward:
                pass
    return ActivationStats(sites=got.sites, tokens=int(windows.numel()), key=key, has_moments=True)


def streamed_moments(model: nn.Module, windows: torch.Tensor, budget_bytes: int | None = None,
                     key: str = "") -> Iterator[tuple[list[int], ActivationStats]]:
    """Yield ``(layers, stats)`` per :func:`layer_groups` group; free each ``stats`` before asking for the next."""
    for layers in layer_groups(model, budget_bytes):
        yield layers, group_moments(model, windows, layers, key=key)
