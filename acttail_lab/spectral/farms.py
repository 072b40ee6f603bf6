"""FARMS: the pooled ESD of fixed-aspect-ratio windows of a weight matrix (an aspect-ratio-fair alpha).

The power-law alpha of a whole matrix's ESD depends on its aspect ratio as well
as on its training: square q/k/v/o and rectangular gate/up/down (1:2.67 in
SmolLM2) are not compared on equal terms. FARMS (Fixed-Aspect-Ratio Matrix
Subsampling; Hu et al., ICML 2025, arXiv 2506.06280; docs/method.md, "FARMS")
cuts every matrix into windows of ONE shape, takes the eigenvalues of each
window's Gram matrix, pools them into one ESD and fits that ESD with the usual
estimator (here :func:`acttail_lab.spectral.tails.fit_power_law`, any xmin rule).

Windows (all options are checked by :func:`check_farms_options`):

* the matrix is oriented short side first (``W`` or ``W^T``: the nonzero
  eigenvalues of a window and of its transpose are the same), shape ``[S, L]``;
* a window is ``rows x round(rows * aspect)`` (short side ``rows``, long side
  ``aspect`` times it; ``aspect=1``: square windows). ``rows=None`` in
  :func:`model_farms_spectra` = the smallest short side of the model's
  projections (every matrix then gets the same window; 192 in SmolLM2, the k/v
  width), capped at :data:`MAX_DEFAULT_ROWS`;
* ``sampling="grid"``: ``windows`` evenly spaced offsets per dimension (fewer
  when the matrix has fewer distinct offsets), all combinations, as in the
  paper's fixed sampling; ``sampling="random"``: ``windows ** 2`` uniformly
  random offsets from a generator seeded with ``seed`` (deterministic).

Each window gives ``rows`` eigenvalues (``eigvalsh`` of its ``rows x rows``
Gram, computed in batches), unnormalised (alpha does not depend on the scale).
:func:`model_farms_spectra` is cached on disk like the plain spectra
(``cache_dir("spectra")``), keyed by the projections' bytes, the dtype and the
resolved options, so a plain and a FARMS spectrum never share a key.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from ..core.errors import BadWeightsError, EstimatorError
from ..core.fingerprint import weights_fingerprint
from ..core.models import iter_projections, resolve_device, unwrap
from ..core.result_cache import ResultCache
from ..core.tensors import stored_weight, to_numpy

ESTIMATORS = ("plain", "farms")
"""Alpha estimators of ``spectra.analyze``: the whole matrix's ESD, or FARMS' pooled window ESD."""

FARMS_DEFAULTS = {"rows": None, "aspect": 1.0, "windows": 10, "sampling": "grid", "seed": 0}
"""Default FARMS options (module doc): square windows as wide as the narrowest projection, 10 x 10 grid."""

SAMPLINGS = ("grid", "random")
MAX_DEFAULT_ROWS = 1024
"""Cap on the default window side (``rows=None``), so 7B-70B models stay tractable on a CPU."""

_FORMAT = "farms-window-eigvalsh-v1"  # bump when the way windows or eigenvalues are computed changes
_BATCH_ELEMENTS = 1 << 24  # window entries per eigvalsh batch (~128 MB in float64)


def check_estimator(estimator) -> str:
    """``estimator`` if it is one of :data:`ESTIMATORS`, else EstimatorError naming them."""
    if estimator not in ESTIMATORS:
        raise EstimatorError(f"Unknown alpha estimator {estimator!r}. Fix: use one of {list(ESTIMATORS)} "
                             "(e.g. analyze(model, estimator='farms') or acttail[estimator=farms]).")
    return estimator


def check_farms_options(options=None) -> dict:
    """:data:`FARMS_DEFAULTS` overridden by ``options``, each checked; EstimatorError naming the fix otherwise."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(FARMS_DEFAULTS))
    if unknown:
        raise EstimatorError(f"Unknown FARMS option(s) {unknown}. Fix: use only {list(FARMS_DEFAULTS)}.")
    out = {**FARMS_DEFAULTS, **options}
    rows, windows, seed = out["rows"], out["windows"], out["seed"]
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 2):
        raise EstimatorError(f"FARMS rows={rows!r} must be an integer >= 2 (the window's short side) or None. "
                             "Fix: e.g. rows=128.")
    aspect = out["aspect"]
    if isinstance(aspect, bool) or not isinstance(aspect, (int, float, np.number)) or not np.isfinite(aspect) \
            or aspect < 1:
        raise EstimatorError(f"FARMS aspect={aspect!r} must be a finite number >= 1 (long side / short side "
                             "of a window). Fix: e.g. aspect=1.0 (square) or aspect=2.67.")
    if isinstance(windows, bool) or not isinstance(windows, (int, np.integer)) or windows < 1:
        raise EstimatorError(f"FARMS windows={windows!r} must be a positive integer (offsets per dimension). "
                             "Fix: e.g. windows=10.")
    if out["sampling"] not in SAMPLINGS:
        raise EstimatorError(f"FARMS sampling={out['sampling']!r} is not one of {list(SAMPLINGS)}. Fix: pick one.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EstimatorError(f"FARMS seed={seed!r} must be a non-negative integer. Fix: e.g. seed=0.")
    out.update(rows=None if rows is None else int(rows), aspect=float(aspect), windows=int(windows), seed=int(seed))
    return out


def window_shape(rows: int, aspect: float) -> tuple[int, int]:
    """``(rows, round(rows * aspect))``: the short and long side of every window."""
    return int(rows), int(round(rows * aspect))


def window_offsets(shape: tuple[int, int], rows: int, aspect: float = 1.0, windows: int = 10,
                   sampling: str = "grid", seed: int = 0, name: str | None = None) -> np.ndarray:
    """Top-left corners ``[n, 2]`` (short-side offset, long-side offset) of the windows of a matrix.

    ``shape`` is the matrix oriented short side first ``(S, L)``. EstimatorError when the window
    ``rows x round(rows * aspect)`` does not fit.
    """
    s, l_ = int(min(shape)), int(max(shape))
    r, c = window_shape(rows, aspect)
    if r > s or c > l_:
        label = f"Matrix {name}" if name else "The matrix"
        raise EstimatorError(f"{label} is {s} x {l_} (short x long side); a FARMS window of {r} x {c} does not fit. "
                             f"Fix: pass rows <= {s} and rows * aspect <= {l_} (e.g. rows={min(s, int(l_ / aspect))}).")
    if sampling == "random":
        rng = np.random.default_rng(seed)
        return np.stack([rng.integers(0, s - r + 1, windows * windows),
                         rng.integers(0, l_ - c + 1, windows * windows)], axis=1)
    first = np.unique(np.round(np.linspace(0, s - r, windows)).astype(np.int64))
    second = np.unique(np.round(np.linspace(0, l_ - c, windows)).astype(np.int64))
    return np.stack(np.meshgrid(first, second, indexing="ij"), axis=-1).reshape(-1, 2)


def farms_esd(weight, rows: int, aspect: float = 1.0, windows: int = 10, sampling: str = "grid", seed: int = 0,
              dtype: torch.dtype = torch.float64, device=None, name: str | None = None) -> np.ndarray:
    """The pooled ESD of one matrix: eigenvalues of every window's Gram, concatenated, ascending (float64).

    Args:
        weight: a 2-D matrix (torch tensor or numpy array), any orientation.
        rows, aspect, windows, sampling, seed: the window options (module doc).
        dtype: float64 (default) or float32. device: where to compute (None: the weight's own).
    Returns:
        ``n_windows * rows`` eigenvalues; roundoff negatives clamped to 0.
    """
    opts = check_farms_options({"rows": rows, "aspect": aspect, "windows": windows, "sampling": sampling,
                                "seed": seed})
    w = torch.as_tensor(weight).detach()
    if w.ndim != 2:
        raise BadWeightsError(f"Weight {name or ''} has shape {tuple(w.shape)}; FARMS needs a 2-D matrix. "
                              "Fix: pass the .weight of an nn.Linear.")
    w = w.to(device=w.device if device is None else resolve_device(device), dtype=dtype)
    if w.shape[0] > w.shape[1]:
        w = w.T  # short side first
    offsets = window_offsets(tuple(w.shape), opts["rows"], opts["aspect"], opts["windows"], opts["sampling"],
                             opts["seed"], name=name)
    r, c = window_shape(opts["rows"], opts["aspect"])
    # gather the windows as one [n, r, c] tensor: index rows then columns
    ri = torch.as_tensor(offsets[:, :1] + np.arange(r)[None, :], device=w.device)  # [n, r]
    ci = torch.as_tensor(offsets[:, 1:] + np.arange(c)[None, :], device=w.device)  # [n, c]
    out = []
    step = max(1, _BATCH_ELEMENTS // (r * c))
    for start in range(0, len(offsets), step):
        block = w[ri[start:start + step, :, None], ci[start:start + step, None, :]]  # [b, r, c]
        gram = block @ block.transpose(1, 2)
        if not bool(torch.isfinite(torch.diagonal(gram, dim1=1, dim2=2)).all()):
            raise BadWeightsError(f"Weight {name or ''} has NaN/inf entries (or overflows {dtype}). "
                                  "Fix: reload the checkpoint, or compute in float64.")
        out.append(to_numpy(torch.linalg.eigvalsh(gram)).reshape(-1))
    return np.sort(np.clip(np.concatenate(out), 0.0, None).astype(np.float64))


def default_rows(model: nn.Module) -> int:
    """The default window side: the smallest ``min(d_out, d_in)`` over the projections, capped at
    :data:`MAX_DEFAULT_ROWS`."""
    return min(MAX_DEFAULT_ROWS, min(min(row["d_out"], row["d_in"]) for row, _ in iter_projections(model)))


def resolved_farms_options(model: nn.Module, options=None) -> dict:
    """The checked FARMS options with ``rows=None`` replaced by :func:`default_rows` of ``model``."""
    opts = check_farms_options(options)
    if opts["rows"] is None:
        opts["rows"] = default_rows(model)
    return opts


def model_farms_spectra(model, dtype: torch.dtype = torch.float64, device="auto", cache: bool = True,
                        progress: bool = True, options=None) -> dict[str, np.ndarray]:
    """FARMS' pooled ESD of every projection, keyed by module name (forward order), cached on disk.

    ``options``: FARMS options (module doc; defaults :data:`FARMS_DEFAULTS`). The cache key is the
    projections' bytes, the dtype and the resolved options (``rows`` made concrete), so the plain
    spectra (``spectra.model_spectra``) and FARMS spectra with other options never collide.
    """
    from tqdm.auto import tqdm

    module = unwrap(model)
    opts = resolved_farms_options(module, options)
    dev = None if device is None else resolve_device(device)
    projections = list(iter_projections(module))
    names = [row["name"] for row, _ in projections]
    store = ResultCache("spectra", version=_FORMAT, fmt="npz", enabled=cache)
    key = weights_fingerprint(module, "projections",
                              salt=f"{_FORMAT}|{dtype}|{json.dumps(opts, sort_keys=True)}") if cache else None
    if key is not None:
        found = store.load(key, check=lambda arrays: all(n in arrays for n in names))
        if found is not None:
            return {n: np.asarray(found[n], dtype=np.float64) for n in names}
    spectra = {}
    for row, linear in tqdm(projections, desc="FARMS spectra", unit="matrix", disable=not progress):
        spectra[row["name"]] = farms_esd(stored_weight(linear), opts["rows"], opts["aspect"], opts["windows"],
                                         opts["sampling"], opts["seed"], dtype=dtype, device=dev, name=row["name"])
    if key is not None:
        store.save(key, spectra)
    return spectra
