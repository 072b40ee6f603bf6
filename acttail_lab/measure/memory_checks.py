"""Memory a measurement will need, checked before it starts: a clear error instead of the kernel's OOM killer.

:func:`rotation_bytes` counts what rotated methods (LaRoSA) keep alive for a whole evaluation: one orthogonal ``Q``
per (layer, input site), ``d x d`` in :func:`sparsify.rotation.q_dtype` (float64 for float32 weights, the model's
dtype for 16-bit ones; ``sparsify/rotation.py``), plus the rotated projections' original weights, kept on the CPU
to put back bit for bit. :func:`check_rotation_memory` compares the CPU-resident part with the memory the system
has available (``MemAvailable`` of ``/proc/meminfo``; no check where it cannot be read).

Example: Qwen2.5-Coder-1.5B in float32 needs 19.6 GB of ``Q`` (28 layers x (8960^2 + 3 x 1536^2) x 8 bytes) plus
5.2 GB of kept weights, beside its own 7.1 GB: more than a 24 GB machine has.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.errors import CalibrationError
from ..core.models import iter_projections
from ..sparsify.calibration import SITE_OF
from ..sparsify.methods import get_method
from ..sparsify.rotation import q_dtype


def rotation_bytes(model: torch.nn.Module) -> dict[str, int]:
    """``{"q": bytes of every Q on the CPU, "kept": bytes of the kept original weights}`` for ``model``."""
    sites, kept = {}, 0
    for row, module in iter_projections(model):
        weight = module.weight
        key = (row["layer"], SITE_OF[row["projection"]])
        if weight.device.type == "cpu":
            size = torch.empty((), dtype=q_dtype(weight.dtype)).element_size()
            sites[key] = weight.shape[1] ** 2 * size
        kept += weight.numel() * weight.element_size()
    return {"q": sum(sites.values()), "kept": kept}


def available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes, or None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_rotation_memory(model: torch.nn.Module, methods, available: int | None = None) -> None:
    """A CalibrationError naming the fix when a rotated method in ``methods`` cannot fit; nothing otherwise."""
    if not any(get_method(m).needs == "moments" for m in methods):
        return
    available = available_bytes() if available is None else available
    if available is None:
        return
    need = rotation_bytes(model)
    total = need["q"] + need["kept"]
    if total > available:
        raise CalibrationError(
            f"Rotation (LaRoSA) keeps one Q per layer and input site for the whole run: {need['q'] / 1e9:.1f} GB of Q "
            f"in {q_dtype(next(model.parameters()).dtype)} plus {need['kept'] / 1e9:.1f} GB of original weights kept "
            f"to put back, more than the {available / 1e9:.1f} GB this machine has available. Fix: load the model in "
            "bfloat16 (Q then takes the model's dtype: a quarter of float64), spread it over GPUs with "
            "device_map='auto', or leave the rotated strategies out.")
