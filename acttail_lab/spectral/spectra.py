"""Eigenvalue spectra (ESDs) of every projection, and their power-law alphas.

``esd(weight)`` gives the eigenvalues of ``W^T W`` of one matrix;
``model_spectra(model)`` those of every q/k/v/o/gate/up/down projection (cached
on disk, keyed by a hash of the weights); ``analyze(model)`` fits a power law to
each and returns one tidy row per projection (see ``acttail_lab.spectral.tails`` for the
estimator and the xmin rules).

Eigenvalues are computed as ``eigvalsh`` of the smaller Gram matrix (``W W^T``
or ``W^T W``): the ``min(d_out, d_in)`` squared singular values, in ascending
order, without normalisation (alpha does not depend on the scale of ``W``). The
other ``|d_out - d_in|`` eigenvalues of ``W^T W`` are exact zeros and are left
out. On a CPU the Gram is one BLAS ``syrk`` (half the work of a matrix
product) and the eigenvalues come from LAPACK ``eigh``, about 3x faster than
an SVD; on a GPU both steps are torch calls. In float64 the result matches the
float64 SVD to ~1e-12 relative to ``lambda_max``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.errors import BadWeightsError, DegenerateSpectrumError
from ..core.fingerprint import weights_fingerprint
from ..core.models import (
    iter_projections,
    load_model,
    model_name,
    resolve_device,
    unwrap,
)
from ..core.result_cache import ResultCache
from ..core.tensors import stored_weight
from .farms import (
    check_estimator,
    check_farms_options,
    model_farms_spectra,
    resolved_farms_options,
)
from .tails import alpha_interval, check_xmin, fit_power_law

_FORMAT = "gram-eigvalsh-v1"  # bump when the way spectra are computed changes
_DTYPES = {"float64": torch.float64, "float32": torch.float32}

FIT_COLUMNS = ["alpha", "xmin", "ks_distance", "n_tail", "lambda_max", "sigma", "alpha_weighted",
               "stable_rank", "n_eigs", "tail_ok", "warning", "xmin_rule"]
ROBUST_COLUMNS = ["alpha_lo", "alpha_hi", "rel_width", "fragile"]


def as_torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``"float64"``/``"float32"`` or the torch dtype itself; anything else is refused."""
    dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dtype not in _DTYPES.values():
        raise ValueError(f"Spectra are computed in float64 or float32, not {dtype}. "
                         "Fix: pass dtype=torch.float64 (exact) or torch.float32 (faster on GPUs).")
    return dtype


# --------------------------------------------------------------------------- one matrix
def esd(weight: torch.Tensor | np.ndarray, dtype: torch.dtype | str = torch.float64,
        device: str | torch.device | None = None, name: str | None = None) -> np.ndarray:
    """Eigenvalues of ``W^T W`` (the ``min(d_out, d_in)`` nonzero-able ones), ascending.

    Args:
        weight: a 2-D matrix (torch tensor of any float dtype, or numpy array).
        dtype: compute dtype, float64 (default) or float32.
        device: where to compute; None = the weight's own device; ``"auto"`` =
            cuda when present.
        name: the matrix's name, used in error messages.

    Returns:
        float64 numpy array of length ``min(d_out, d_in)``; roundoff negatives
        are clamped to 0.

    Raises:
        BadWeightsError: the matrix is not 2-D, has NaN/inf entries, or its squared
            row/column norms overflow ``dtype``.
    """
    dtype = as_torch_dtype(dtype)
    w = torch.as_tensor(weight).detach()
    label = f"Weight matrix {name}" if name else "The weight matrix"
    if w.ndim != 2:
        raise BadWeightsError(f"{label} has shape {tuple(w.shape)}; a spectrum needs a 2-D matrix. "
                              "Fix: pass the .weight of an nn.Linear (or reshape conv kernels first).")
    dev = w.device if device is None else resolve_device(device)
    w = w.to(device=dev, dtype=dtype)
    if dev.type == "cpu":
        gram = _gram_cpu(w.numpy())  # cpu branch
        diag = np.diagonal(gram)
    else:
        gram = _gram_torch(w)
        diag = torch.diagonal(gram).cpu().numpy()
    # every entry of W is in exactly one diagonal entry (a squared row or column norm),
    # so NaN/inf anywhere in W shows up here, at a fraction of the cost of scanning W
    if not np.isfinite(diag).all():
        raise _bad_weights(weight, label, dtype)
    if dev.type == "cpu":
        from scipy.linalg import eigh

        eigs = eigh(gram, lower=False, eigvals_only=True, overwrite_a=True, check_finite=False)
    else:
        eigs = torch.linalg.eigvalsh(gram).cpu().numpy()
    return np.clip(eigs, 0.0, None).astype(np.float64)


def _gram_cpu(w: np.ndarray) -> np.ndarray:
    """Upper triangle of the smaller Gram matrix with one BLAS ``syrk`` (half the work of a product).

    ``w.T`` of a C-ordered matrix is Fortran-ordered, so BLAS reads it without a
    copy. With LAPACK ``eigh`` after it, ~1.6x faster than ``torch.mm`` +
    ``torch.linalg.eigvalsh`` on one CPU thread.
    """
    from scipy.linalg import blas

    syrk = blas.dsyrk if w.dtype == np.float64 else blas.ssyrk
    return syrk(1.0, w.T, trans=0 if w.shape[0] > w.shape[1] else 1)


def _gram_torch(w: torch.Tensor) -> torch.Tensor:
    """The smaller Gram matrix with ``torch.mm`` (the GPU route; ``eigvalsh`` follows)."""
    return w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w


def _bad_weights(weight, label: str, dtype: torch.dtype) -> BadWeightsError:
    """The error for a matrix whose Gram diagonal is not finite: NaN/inf entries, or overflow."""
    w = torch.as_tensor(weight).detach()
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        return BadWeightsError(
            f"{label} ({tuple(w.shape)}) has {bad} NaN/inf entries, so its spectrum is undefined. "
            "Fix: reload the checkpoint (it may be corrupt or badly converted), or load it in float32 "
            "instead of float16 if the values overflowed."
        )
    return BadWeightsError(
        f"{label} ({tuple(w.shape)}) is finite but its squared row/column norms overflow {dtype}. "
        "Fix: compute the spectrum in float64 (dtype=torch.float64), or check the weights' scale."
    )


# --------------------------------------------------------------------------- a whole model
def _resolve(model):
    """An nn.Module or LoadedModel as it is; a model name or path is loaded on the CPU first."""
    return load_model(str(model), device="cpu") if isinstance(model, (str, Path)) else model



def spectra_key(model: nn.Module, dtype: torch.dtype | str = torch.float64) -> str:
    """Cache key of a model's spectra: its projection weights (every byte) and the compute dtype."""
    return weights_fingerprint(model, "projections", salt=f"{_FORMAT}|{as_torch_dtype(dtype)}")


def spectra_cache(enabled: bool = True) -> ResultCache:
    """The on-disk cache of :func:`model_spectra`: ``cache_dir("spectra")/<spectra_key>.npz``."""
    return ResultCache("spectra", version=_FORMAT, fmt="npz", enabled=enabled)


def _read_cache(key: str, names: list[str]) -> dict[str, np.ndarray] | None:
    """The cached spectra of ``key``, or None if the file is missing, unreadable or incomplete."""
    found = spectra_cache().load(key, check=lambda arrays: all(name in arrays for name in names))
    return None if found is None else {name: np.asarray(found[name], dtype=np.float64) for name in names}


def model_spectra(model, dtype: torch.dtype | str = torch.float64, device: str | torch.device | None = "auto",
                  cache: bool = True, progress: bool = True) -> dict[str, np.ndarray]:
    """Eigenvalues of ``W^T W`` for every projection of a model, keyed by module name.

    Streams one matrix at a time to ``device`` (memory stays near one matrix).
    With ``cache=True`` the result is stored as one ``.npz`` under
    ``cache_dir("spectra")``, named by ``weights_fingerprint(model, "projections")`` (a blake2b hash of the
    weights and the dtype; not the device), written atomically; an unreadable
    cache file is recomputed and replaced.

    Args:
        model: nn.Module, LoadedModel or model name.
        dtype: float64 (default) or float32.
        device: ``"auto"`` (cuda when present), ``"cpu"``, ``"cuda"``, or None (where the weights are).
        cache: read and write the on-disk cache.
        progress: show a tqdm progress bar.

    Returns:
        ``{name: float64 array of min(d_out, d_in) eigenvalues, ascending}`` in forward order.
    """
    from tqdm.auto import tqdm

    module = unwrap(_resolve(model))
    dtype = as_torch_dtype(dtype)
    dev = None if device is None else resolve_device(device)
    projections = list(iter_projections(module))
    names = [row["name"] for row, _ in projections]
    key = spectra_key(module, dtype) if cache else None
    if key is not None:
        cached = _read_cache(key, names)
        if cached is not None:
            return cached
    spectra = {}
    for row, linear in tqdm(projections, desc="spectra", unit="matrix", disable=not progress):
        spectra[row["name"]] = esd(stored_weight(linear), dtype=dtype, device=dev, name=row["name"])
    if key is not None:
        spectra_cache().save(key, spectra)
    return spectra


# --------------------------------------------------------------------------- alpha table
def analyze(model, xmin="ks", robust: bool = False, n_boot: int = 200, seed: int = 0,
            robust_method: str = "bootstrap", dtype: torch.dtype | str = torch.float64,
            device: str | torch.device | None = "auto", cache: bool = True,
            progress: bool = True, estimator: str = "plain", farms: dict | None = None) -> pd.DataFrame:
    """Power-law fit of every projection's spectrum: one row per projection.

    Args:
        model: nn.Module, LoadedModel, or a model name (``load_model`` on the CPU).
        xmin: ``"ks"``, ``"peak"``, ``"median"`` or a fixed float (see ``acttail_lab.spectral.tails``).
        robust: also fit ``n_boot`` replicates per matrix (``alpha_interval``) and
            add ``alpha_lo, alpha_hi, rel_width, fragile`` (90% interval).
        n_boot, seed, robust_method: replicates per matrix, seed (the same for every
            matrix), ``"bootstrap"`` or ``"perturb"``.
        dtype, device, cache, progress: as in ``model_spectra``.
        estimator: which spectrum is fitted (``farms.ESTIMATORS``): ``"plain"`` (default) the whole
            matrix's ESD; ``"farms"`` the pooled ESD of fixed-aspect-ratio windows
            (``spectral/farms.py``; ``n_eigs`` is then the pooled count), with the window options
            ``farms`` (defaults ``farms.FARMS_DEFAULTS``). Same columns either way.

    Returns:
        DataFrame with columns ``layer, projection, name, d_out, d_in, n_params``,
        then ``FIT_COLUMNS`` (alpha, xmin, ks_distance, n_tail, lambda_max, sigma,
        alpha_weighted, stable_rank, n_eigs, tail_ok, warning, xmin_rule) and,
        if ``robust``, ``ROBUST_COLUMNS``. ``attrs`` holds model, xmin, dtype, estimator (and the
        resolved FARMS options as JSON when ``estimator="farms"``).

    Raises:
        DegenerateSpectrumError: naming the projection whose spectrum cannot be fitted.
    """
    from tqdm.auto import tqdm

    check_xmin(xmin)
    check_estimator(estimator)
    if farms is not None and estimator != "farms":
        raise ValueError(f"farms={farms!r} only applies with estimator='farms'. Fix: drop it or pass estimator='farms'.")
    check_farms_options(farms)
    if robust_method not in ("bootstrap", "perturb"):
        raise ValueError(f"Unknown robust_method {robust_method!r}; use 'bootstrap' or 'perturb'.")
    if robust and (isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2):
        raise ValueError(f"n_boot={n_boot!r}: robust fits need at least 2 replicates. Fix: pass e.g. n_boot=200.")
    model = _resolve(model)  # checks above run before a model name is loaded
    module, name = unwrap(model), model_name(model)
    farms_opts = resolved_farms_options(module, farms) if estimator == "farms" else None
    spectra = (model_spectra(module, dtype=dtype, device=device, cache=cache, progress=progress)
               if estimator == "plain" else
               model_farms_spectra(module, dtype=as_torch_dtype(dtype), device=device, cache=cache,
                                   progress=progress, options=farms_opts))
    rows = []
    projections = [row for row, _ in iter_projections(module)]
    for row in tqdm(projections, desc="alpha", unit="matrix", disable=not (progress and robust)):
        eigs = spectra[row["name"]]
        try:
            fit = fit_power_law(eigs, xmin=xmin).as_dict()
            if robust:
                ci = alpha_interval(eigs, xmin=xmin, n_boot=n_boot, seed=seed, method=robust_method)
                fit.update({k: getattr(ci, k) for k in ROBUST_COLUMNS})
        except DegenerateSpectrumError as exc:
            raise DegenerateSpectrumError(f"Projection {row['name']}: {exc}") from exc
        rows.append({**row, **fit})
    columns = list(projections[0]) + FIT_COLUMNS + (ROBUST_COLUMNS if robust else [])
    table = pd.DataFrame(rows)[columns]
    table.attrs.update(model=name, xmin=str(xmin), dtype=str(as_torch_dtype(dtype)),
                       robust_method=robust_method if robust else None, estimator=estimator)
    if farms_opts is not None:
        table.attrs["farms"] = json.dumps(farms_opts, sort_keys=True)
    return table
