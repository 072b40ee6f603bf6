"""Content keys of weights and token windows: the one place every cache key is built from.

:func:`weights_fingerprint` hashes a model's weights in one of three explicit modes,
:func:`tokens_key` hashes token windows. Both return hex strings; equal inputs give
equal keys on any device, different inputs different keys (up to hash collisions).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from .cache import hash_bytes, stable_hash
from .models import iter_projections
from .tensors import offloaded_tensors, stored_weight

MODES = ("sampled", "full", "projections")
"""``sampled``: names, shapes, dtypes, a strided sample and the sum of every tensor (fast on 7B-70B models;
tells checkpoints apart in practice). ``full``: every byte of every parameter and buffer (~0.5 s per GB).
``projections``: every byte of the seven projections' weights only (what a spectrum depends on)."""


def weights_fingerprint(model: nn.Module, mode: str = "sampled", *, samples: int = 4096, salt: str = "") -> str:
    """Hex key of ``model``'s weights in ``mode`` (one of :data:`MODES`); ``salt`` is mixed in (e.g. a dtype).

    Weights that accelerate offloads (``device_map`` with CPU/disk offload: a meta parameter, values in the
    module's offload map) are read from where they are stored; other meta tensors contribute their name,
    shape and dtype only.
    """
    if mode == "sampled":
        return _sampled(model, samples, salt)
    if mode == "full":
        stored = offloaded_tensors(model)
        tensors = _unique(list(model.named_parameters()) + list(model.named_buffers()))
        return _full([(name, stored.get(name, t)) for name, t in tensors], type(model).__name__ + salt)
    if mode == "projections":
        return _full([(row["name"], stored_weight(m)) for row, m in iter_projections(model)], salt)
    raise ValueError(f"Unknown fingerprint mode {mode!r}. Fix: use one of {', '.join(MODES)}.")


def tokens_key(windows: torch.Tensor | np.ndarray) -> str:
    """Hex key of token windows: their shape and their ids as int64 (dtype and device do not matter)."""
    ids = torch.as_tensor(windows).detach().to("cpu", torch.int64).contiguous()
    return stable_hash([list(ids.shape), hash_bytes(ids.numpy().tobytes())], 32)  # ids are on the cpu


def _unique(named):
    seen, out = set(), []
    for name, tensor in named:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append((name, tensor))
    return out


def _full(named, salt: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(salt.encode())
    for name, tensor in named:
        digest.update(f"|{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        if tensor.device.type != "meta" and tensor.numel():
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy())  # flat is on the cpu
    return digest.hexdigest()


def _sampled(model: nn.Module, samples: int, salt: str) -> str:
    parts = [salt] if salt else []
    stored = offloaded_tensors(model)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            tensor = stored.get(name, tensor)
            entry = [name, list(tensor.shape), str(tensor.dtype)]
            if tensor.device.type != "meta" and tensor.numel() > 0 and tensor.is_floating_point():
                flat = tensor.reshape(-1)
                step = max(1, flat.numel() // samples)
                sample = flat[::step][:samples].double().cpu().numpy()
                entry.append(hash_bytes(sample.tobytes()))
                entry.append(repr(float(flat.sum(dtype=torch.float64))))
            parts.append(entry)
    return stable_hash(parts)
