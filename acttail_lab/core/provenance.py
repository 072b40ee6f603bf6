"""Provenance of a result file: what code, on what machine, with which settings.

:func:`provenance` returns a JSON-serialisable dict (versions of python, torch,
transformers, numpy, pandas and acttail_lab; the device; the seed; the git
commit of the working tree with a dirty flag; the command line; a UTC
timestamp). :func:`write_sidecar` writes it as ``<file>.json`` next to a
result file, atomically.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from .cache import atomic_write_text

_PACKAGES = ("torch", "transformers", "tokenizers", "gguf", "safetensors", "numpy", "pandas", "acttail-lab")
"""Everything a number can depend on: ``gguf`` dequantises the built-in model and ``tokenizers`` makes the
token windows. The same code in a newer environment (model re-dequantised) moved SmolLM2's dense perplexity
by 9e-6 and its TopK perplexities by up to 0.4%: TopK amplifies tiny weight differences."""


def package_versions() -> dict[str, str | None]:
    """Installed versions of python and the packages results depend on (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    return versions


def describe_device(device: str | torch.device | None = None) -> str:
    """Readable description: ``"cpu (x86_64, 2 cores, 1 torch thread)"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, torch cuda {torch.version.cuda})"
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return str(device)


RESULTS_PATHSPEC = "data/results"
"""Where result files live relative to the repository root (ignored by the dirty check)."""


def git_state(folder: str | os.PathLike | None = None) -> dict[str, object]:
    """``{"git_sha": ..., "git_dirty": ...}`` of the repository holding ``folder`` (the package by default).

    ``git_dirty`` says whether tracked files differ from the commit, except ``data/results/``: a
    reproduce script rewrites its own committed CSVs there while it runs (after each tier), and its
    own output must not mark the code that made it as dirty. Both are None when git or the
    repository is missing (e.g. an installed wheel).
    """
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                 f":(top,exclude){RESULTS_PATHSPEC}"], cwd=folder, capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


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
