"""The one crossing from torch tensors to numpy arrays.

``.numpy()`` fails on a CUDA tensor, on a tensor that requires grad and on bfloat16;
every stage that needs numpy values of a tensor that may sit on a GPU goes through
:func:`to_numpy`, which detaches, moves to the CPU and, for dtypes numpy lacks, widens.
"""
from __future__ import annotations

import numpy as np
import torch

_WIDEN = {torch.bfloat16: torch.float32}


def to_numpy(t: torch.Tensor, dtype: np.dtype | type | None = None) -> np.ndarray:
    """``t`` as a numpy array on the CPU (same values; bfloat16 widened to float32).

    Inputs: any tensor (any device, grad or not). ``dtype``: optional numpy dtype of the result.
    A CPU tensor that needs no conversion shares its memory with the result.
    """
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.dtype in _WIDEN:
        t = t.to(_WIDEN[t.dtype])
    out = t.numpy()
    return out if dtype is None else out.astype(dtype, copy=False)


def is_offloaded(module: torch.nn.Module) -> bool:
    """True when ``module``'s weight sits on the meta device and is read from accelerate's offload map
    (``device_map="auto"`` with CPU or disk offload) only while the module runs."""
    hook = getattr(module, "_hf_hook", None)
    return (module.weight.device.type == "meta" and hook is not None
            and getattr(hook, "weights_map", None) is not None)


def stored_weight(module: torch.nn.Module) -> torch.Tensor:
    """The weight values of ``module`` wherever they are stored: the parameter itself, or, for a module
    offloaded by accelerate (:func:`is_offloaded`), the tensor in its offload map (CPU memory or a disk
    memmap). Read-only use: writing to it does not change what the module runs.

    Raises ValueError for a weight on the meta device with nothing stored behind it.
    """
    if is_offloaded(module):
        return module._hf_hook.weights_map["weight"]
    if module.weight.device.type == "meta":
        raise ValueError("This module's weight is on the meta device with no offloaded copy (an empty model). "
                         "Fix: load the weights (from_pretrained, or device_map with an offload folder).")
    return module.weight


def offloaded_tensors(model: torch.nn.Module) -> dict:
    """``{state-dict name: stored tensor}`` of every parameter that accelerate keeps off the module (meta
    parameter, values in the module's offload map); empty for a model without offload."""
    out = {}
    for prefix, module in model.named_modules():
        weights_map = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        if weights_map is None:
            continue
        for name, param in module.named_parameters(recurse=False):
            if param.device.type == "meta":
                out[f"{prefix}.{name}" if prefix else name] = weights_map[name]
    return out
