"""Provenance of a result file: what code, on what machine, with which settings.

:func:`provenance` returns a JSON-serialisable dict (versions of python, torch,
transformers, numpy, pandas and acttail_lab; the lock file's SHA-256 and whether the
environment matches it; what came from the caches and who made it (``cache``: ``state`` is
``"empty"`` when every result was computed in this run); the device; the seed; the git
commit of the working tree with a dirty flag; the command line; a UTC timestamp).
:func:`write_sidecar` writes it as ``<file>.json`` next to a result file, atomically.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from . import environment
from .cache import atomic_write_text
from .result_cache import cache_summary


def package_versions() -> dict[str, str | None]:
    """Installed versions of python and the packages results depend on (None when absent)."""
    return environment.package_versions()


def describe_device(device: str | torch.device | None = None) -> str:
    """Readable description: ``"cpu (x86_64, AVX2 kernels, 2 cores, 1 torch threads)"`` or
    ``"cuda:0 (NVIDIA H100 80GB HBM3, torch cuda 12.8)"``. A CPU's kernel capability is part of it: float32
    results differ in their low bits between AVX2 and AVX-512 kernels."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, torch cuda {torch.version.cuda})"
    if device.type == "cpu":
        return (f"cpu ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()} kernels, {os.cpu_count()} "
                f"cores, {torch.get_num_threads()} torch threads)")
    return str(device)


RESULTS_PATHSPEC = environment.RESULTS_PATHSPEC
git_state = environment.git_state


def provenance(seed: int | None = None, device: str | torch.device | None = None,
               command: str | None = None, **extra) -> dict[str, object]:
    """Everything needed to say where a result came from, as a JSON-ready dict.

    Args:
        seed: the seed the run used.
        device: the torch device it ran on (described with :func:`describe_device`).
        command: the command line (default: ``sys.argv`` joined, shell-quoted).
        extra: more JSON-serialisable fields (e.g. model, corpus, protocol); they
            are stored under ``"settings"``.
    """
    return {
        "versions": package_versions(),
        "lock": environment.lock_info(),
        "cache": cache_summary(),
        "device": describe_device(device),
        "seed": seed,
        **git_state(),
        "command": command if command is not None else shlex.join(sys.argv),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": extra,
    }


def sidecar_path(path: str | os.PathLike) -> Path:
    """``results.csv`` -> ``results.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | os.PathLike, **fields) -> Path:
    """Write :func:`provenance` (``fields`` passed through) as ``<path>.json``; return that path."""
    target = sidecar_path(path)
    atomic_write_text(target, json.dumps(provenance(**fields), indent=2, sort_keys=True, default=str) + "\n")
    return target
