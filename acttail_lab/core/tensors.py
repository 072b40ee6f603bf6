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
