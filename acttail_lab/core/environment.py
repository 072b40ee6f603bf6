"""What a number depends on beyond its inputs: the installed packages, the measuring code, the lock.

Every cached result is stamped with :func:`cache_stamp` (see :class:`acttail_lab.core.result_cache.ResultCache`),
so a result is found again only under the same

* **environment**: the versions of :data:`STAMPED_PACKAGES` (a change of transformers' GGUF
  dequantisation or torch's kernels moves TopK perplexities by tenths of a percent, since TopK
  amplifies tiny weight differences), and
* **code version** of its measuring path: a hash of the syntax trees (docstrings and comments
  left out) of the modules listed for its cache kind in :data:`MEASURING_PATHS`. Editing a docstring
  keeps the cache; changing how k is rounded or how the loss is summed invalidates it.

It also describes the locked environment (:func:`lock_info`: the SHA-256 of ``requirements/lock.txt``
and which installed packages differ from it) and the git state of the checkout (:func:`git_state`);
:mod:`acttail_lab.core.provenance` writes both into every sidecar.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The ``acttail_lab`` folder."""
REPO_ROOT = PACKAGE_ROOT.parent
LOCK_FILE = "requirements/lock.txt"
"""The lock (pip-compile output, relative to the repository root); ``make lock`` regenerates it."""
TORCH_PIN_FILE = "requirements/torch.in"
"""The one torch pin (installed first by ``make setup``, and the constraint the lock was resolved with)."""

PACKAGES = ("torch", "transformers", "tokenizers", "gguf", "safetensors", "numpy", "pandas", "acttail-lab")
"""Packages whose versions every sidecar records."""
STAMPED_PACKAGES = ("torch", "transformers", "tokenizers", "gguf", "safetensors", "numpy")
"""Packages whose versions every cache stamp includes: they load, dequantise, tokenise and compute.
(pandas and acttail-lab's own version number do not change a measured value.)"""
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")
"""Variables that choose which CPU kernels torch, MKL and oneDNN run; recorded when set."""

MEASURING_PATHS: dict[str, tuple[str, ...]] = {
    "spectra": ("spectral", "core/tensors.py"),
    "calibration": ("sparsify", "core/hooks.py"),
    "eval": ("sparsify", "core/hooks.py", "measure/perplexity.py"),
    "teal_greedy": ("sparsify", "core/hooks.py", "measure/perplexity.py", "measure/teal_greedy.py",
                    "allocation/greedy_path.py"),
    "sensitivity": ("sparsify", "core/hooks.py", "measure/perplexity.py", "measure/sensitivity.py"),
    "depth": ("sparsify", "core/hooks.py", "measure/perplexity.py", "measure/skip_layer.py"),
    "zeroshot": ("sparsify", "core/hooks.py", "measure/zeroshot.py", "measure/zeroshot_tasks.py",
                 "core/task_data.py"),
}
"""Per cache kind, the modules (files, or folders taken whole) whose code computes the cached value,
relative to the ``acttail_lab`` folder. Inputs that a cache key already holds (weights fingerprint, token
ids, allocation vector, method and calibration key) are not listed. A test checks that every cache kind
the package writes is listed here."""
NOT_MEASURING = ("sparsify/kernels",)
"""Folders inside a measuring path that never feed a cached number (the decode kernels)."""


def package_versions() -> dict[str, str | None]:
    """Installed versions of python and :data:`PACKAGES` (None when absent), e.g. ``{"torch": "2.13.0+cpu"}``."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        versions[name.replace("-", "_")] = _version(name)
    return versions


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def kernel_capability() -> dict[str, object]:
    """Which arithmetic kernels this process runs: torch's CPU capability (``"AVX2"``, ``"AVX512"``, ...), the
    ISA variables that override torch / MKL / oneDNN when set, and the CUDA devices' names when there are any.

    The same float32 model gives different low bits under AVX2 and AVX-512 kernels (other vector widths, other
    summation orders), and TopK at high sparsity amplifies them: SmolLM2 uniform@0.8 measured 4,773.7 on an
    AVX2-only CPU where an AVX-512 CPU gave another value. So results are only comparable within one capability.
    """
    import torch

    info: dict[str, object] = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    overrides = {name: os.environ[name] for name in ISA_VARIABLES if os.environ.get(name)}
    if overrides:
        info["isa_overrides"] = overrides
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


@functools.lru_cache(maxsize=1)
def environment_versions() -> dict[str, object]:
    """What a cache stamp covers besides the code: python's and :data:`STAMPED_PACKAGES`' versions and the
    :func:`kernel_capability` (read once per process)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in STAMPED_PACKAGES},
            "kernels": kernel_capability()}


# --------------------------------------------------------------------------- code versions
def _source_files(entry: str) -> list[Path]:
    path = PACKAGE_ROOT / entry
    if path.is_dir():
        skip = [PACKAGE_ROOT / s for s in NOT_MEASURING]
        return sorted(p for p in path.rglob("*.py") if not any(s in p.parents for s in skip))
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"Measuring path entry {entry!r} does not exist under {PACKAGE_ROOT}. "
                            "Fix: update acttail_lab.core.environment.MEASURING_PATHS.")


def _code_tree(path: Path) -> str:
    """The module's syntax tree without docstrings (comments are not in it), as text."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@functools.lru_cache(maxsize=None)
def code_version(kind: str) -> str | None:
    """16-hex hash of the code of ``kind``'s measuring path (:data:`MEASURING_PATHS`); None for a kind with none.

    Docstrings, comments and formatting do not change it; any change of what the code does does.
    """
    entries = MEASURING_PATHS.get(kind)
    if entries is None:
        return None
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted({f for entry in entries for f in _source_files(entry)}):
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode())
        digest.update(_code_tree(path).encode())
    return digest.hexdigest()


def stamp_fields(kind: str, version) -> dict:
    """What a cache stamp of ``kind`` at format ``version`` covers: the format version, the environment
    versions and the code version (JSON-ready)."""
    return {"version": version, "env": environment_versions(), "code": code_version(kind)}


def cache_stamp(kind: str, version) -> str:
    """12-hex stamp of :func:`stamp_fields`: part of every cache file name of ``kind``."""
    from .cache import stable_hash

    return stable_hash(stamp_fields(kind, version), 12)


# --------------------------------------------------------------------------- lock and git
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def normalise(name: str) -> str:
    """PEP 503 normalised package name: ``Jinja2`` -> ``jinja2``, ``typing_extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: str | os.PathLike) -> dict[str, str]:
    """``{normalised name: version}`` of every ``name==version`` line of a requirements file."""
    pins = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


@functools.lru_cache(maxsize=1)
def lock_info() -> dict[str, object]:
    """The lock this checkout installs from and whether the running environment matches it.

    Returns ``{"file", "sha256", "matches", "mismatches"}``; ``mismatches`` lists up to 20
    ``"name: installed X, locked Y"`` strings (``installed None`` = missing). ``sha256`` is None (and
    ``matches`` None) when the package runs outside its repository (an installed wheel has no lock).
    """
    from .cache import sha256_of

    path = REPO_ROOT / LOCK_FILE
    if not path.exists():
        return {"file": LOCK_FILE, "sha256": None, "matches": None, "mismatches": []}
    mismatches = []
    for name, locked in sorted(read_pins(path).items()):
        installed = _version(name)
        if installed != locked:
            mismatches.append(f"{name}: installed {installed}, locked {locked}")
    torch_pin = REPO_ROOT / TORCH_PIN_FILE
    if torch_pin.exists():
        for name, pinned in read_pins(torch_pin).items():
            installed = _version(name)
            if installed is None or installed.split("+")[0] != pinned:
                mismatches.append(f"{name}: installed {installed}, pinned {pinned}")
    return {"file": LOCK_FILE, "sha256": sha256_of(path), "matches": not mismatches, "mismatches": mismatches[:20]}


RESULTS_PATHSPEC = "data/results"
"""Where result files live relative to the repository root (ignored by the dirty check)."""


def git_state(folder: str | os.PathLike | None = None) -> dict[str, object]:
    """``{"git_sha": ..., "git_dirty": ...}`` of the repository holding ``folder`` (the package by default).

    ``git_dirty`` says whether tracked files differ from the commit, except ``data/results/``: a
    reproduce script rewrites its own committed CSVs there while it runs (after each tier), and its
    own output must not mark the code that made it as dirty. Both are None when git or the
    repository is missing (e.g. an installed wheel).
    """
    folder = Path(folder) if folder is not None else PACKAGE_ROOT
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


@functools.lru_cache(maxsize=1)
def made_by() -> dict[str, object]:
    """Who makes results in this process: git SHA, dirty flag and lock hash (read once per process).

    Stored in every cache file, so a sidecar can say which code and lock made each reused result."""
    return {**git_state(), "lock_sha256": lock_info()["sha256"]}
