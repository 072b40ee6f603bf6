"""Random-matrix baselines for teaching HT-SR: Marchenko-Pastur and heavy-tailed matrices.

Normalisation (used everywhere in this module). For a weight ``W`` of shape
``(d_out, d_in)`` let ``N = max(d_out, d_in)`` and ``M = min(d_out, d_in)``,
``q = M / N`` in (0, 1]. ``spectra.esd(W)`` returns the M non-trivial
eigenvalues of ``W^T W`` (unnormalised). This module works with the same
eigenvalues divided by N, i.e. the eigenvalues of the correlation matrix
``X = W^T W / N``: that is what :func:`normalized_esd` returns. If the entries
of W are i.i.d. with mean 0 and variance ``sigma2``, the eigenvalues of X follow,
as M, N grow with M/N -> q, the Marchenko-Pastur (MP) law with support
``[sigma2 (1 - sqrt q)^2, sigma2 (1 + sqrt q)^2]`` and mean ``sigma2``.
Multiply by N to go back to ``esd()`` units. Power-law exponents (alpha) do not
depend on this scale.

Random matrices are numpy float64 arrays of shape ``(n_rows, n_cols)``, drawn
from a seeded ``numpy.random.Generator``.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import DegenerateSpectrumError


# --------------------------------------------------------------------------- MP law
def aspect_ratio(shape: tuple[int, int]) -> float:
    """``q = min(shape) / max(shape)``, the MP aspect ratio of a matrix of this shape."""
    rows, cols = int(shape[0]), int(shape[1])
    if rows <= 0 or cols <= 0:
        raise ValueError(f"Matrix shape {shape} has an empty dimension; a spectrum needs rows and columns.")
    return min(rows, cols) / max(rows, cols)


def _check_q(q: float, sigma2: float) -> None:
    if not 0.0 < q <= 1.0:
        raise ValueError(
            f"Aspect ratio q={q} is outside (0, 1]. Use q = min(d_out, d_in) / max(d_out, d_in) "
            "(see rmt.aspect_ratio)."
        )
    if not sigma2 > 0.0:
        raise ValueError(f"Variance sigma2={sigma2} must be positive.")


def mp_edges(q: float, sigma2: float = 1.0) -> tuple[float, float]:
    """Support ``(lambda_minus, lambda_plus)`` of the MP law of ``W^T W / N``.

    Args:
        q: aspect ratio ``M / N`` in (0, 1].
        sigma2: variance of the entries of W.
    Returns:
        ``(sigma2 (1 - sqrt q)^2, sigma2 (1 + sqrt q)^2)``, in units of eigenvalues of ``W^T W / N``.
    """
    _check_q(q, sigma2)
    root = np.sqrt(q)
    return float(sigma2 * (1 - root) ** 2), float(sigma2 * (1 + root) ** 2)


def mp_density(x, q: float, sigma2: float = 1.0) -> np.ndarray:
    """Marchenko-Pastur density of the eigenvalues of ``W^T W / N`` at ``x``.

    ``rho(x) = sqrt((l+ - x)(x - l-)) / (2 pi sigma2 q x)`` on ``[l-, l+]``, 0 outside.
    With ``q <= 1`` (M eigenvalues, M <= N) it has no atom at 0 and integrates to 1.

    Args:
        x: eigenvalue(s), same units as :func:`normalized_esd`.
        q: aspect ratio ``M / N`` in (0, 1].
        sigma2: variance of the entries of W.
    Returns:
        Density (per unit eigenvalue), an array of ``x``'s shape.
    """
    lo, hi = mp_edges(q, sigma2)
    x = np.asarray(x, dtype=float)
    inside = (x > lo) & (x < hi)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((hi - xi) * (xi - lo)) / (2 * np.pi * sigma2 * q * xi)
    return out


def mp_sigma2(eigs) -> float:
    """Entry variance implied by a spectrum of ``W^T W / N``: the mean eigenvalue.

    ``mean(eig(W^T W / N)) = sum(W**2) / (M N)``, the (uncentred) variance of
    the entries, which is the ``sigma2`` of the MP law a random matrix with the
    same entries' scale would follow. For a trained matrix the spikes inflate
    it a little; it is a baseline, not a bulk fit.
    """
    eigs = np.asarray(eigs, dtype=float)
    if eigs.size == 0:
        raise DegenerateSpectrumError("Empty spectrum: pass at least one eigenvalue.")
    return float(eigs.mean())


def count_above_mp(eigs, q: float, sigma2: float) -> int:
    """Number of eigenvalues above the MP upper edge ``sigma2 (1 + sqrt q)^2`` (the "spikes")."""
    return int(np.sum(np.asarray(eigs, dtype=float) > mp_edges(q, sigma2)[1]))


def normalized_esd(weight) -> np.ndarray:
    """Eigenvalues of ``W^T W / N`` (``spectra.esd(weight) / max(weight.shape)``), ascending.

    Args:
        weight: a 2-D array or torch tensor of shape ``(d_out, d_in)``.
    Returns:
        ``min(d_out, d_in)`` eigenvalues (float64) in the units of :func:`mp_density`.
    """
    from .spectra import esd

    return np.asarray(esd(weight), dtype=float) / max(weight.shape)


# --------------------------------------------------------------------------- random matrices
def gaussian_matrix(n_rows: int, n_cols: int, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """An ``(n_rows, n_cols)`` matrix of i.i.d. N(0, sigma^2) entries (float64, seeded).

    Its normalised ESD follows MP with ``q = aspect_ratio((n_rows, n_cols))`` and ``sigma2 = sigma**2``.
    """
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, sigma, size=(n_rows, n_cols))


def heavy_tailed_matrix(
    n_rows: int,
    n_cols: int,
    tail_index: float = 1.5,
    seed: int = 0,
    distribution: str = "student_t",
) -> np.ndarray:
    """An ``(n_rows, n_cols)`` matrix of i.i.d. heavy-tailed, symmetric entries (float64, seeded).

    The entries have tails ``P(|w| > t) ~ t^-tail_index``:

    - ``"student_t"``: Student-t with ``tail_index`` degrees of freedom;
    - ``"pareto"``: a random sign times a Pareto(``tail_index``) variable (>= 1).

    With ``tail_index < 2`` the entries have infinite variance and the ESD of
    ``W^T W`` has a power-law tail (the "very heavy-tailed" class of Martin &
    Mahoney); with ``tail_index > 4`` it falls back towards MP.
    """
    if not tail_index > 0:
        raise ValueError(f"tail_index={tail_index} must be positive (smaller = heavier tails).")
    rng = np.random.default_rng(seed)
    size = (n_rows, n_cols)
    if distribution == "student_t":
        return rng.standard_t(tail_index, size=size)
    if distribution == "pareto":
        signs = rng.choice((-1.0, 1.0), size=size)
        return signs * (1.0 + rng.pareto(tail_index, size=size))
    raise ValueError(f"Unknown distribution {distribution!r}; choose 'student_t' or 'pareto'.")


def tail_index_sweep(
    tail_indices=(1.0, 1.5, 2.0, 3.0, 4.0),
    n_rows: int = 1000,
    n_cols: int = 400,
    seed: int = 0,
    xmin="ks",
    distribution: str = "student_t",
):
    """Fit alpha to the ESD of heavy-tailed random matrices, one per entry tail index.

    Args:
        tail_indices: entry tail indices ``mu`` (see :func:`heavy_tailed_matrix`).
        n_rows, n_cols: matrix shape.
        seed: seed of every draw (the same seed for each ``mu``).
        xmin: xmin rule of ``tails.fit_power_law``.
    Returns:
        A DataFrame, one row per tail index: ``tail_index``, ``alpha``, ``xmin``,
        ``n_tail``, ``ks_distance``, and ``alpha_theory = 1 + mu / 2`` (Martin &
        Mahoney's large-matrix value for ``mu < 2``; NaN for ``mu >= 2``).
    """
    import pandas as pd

    from .spectra import esd
    from .tails import fit_power_law

    rows = []
    for mu in tail_indices:
        fit = fit_power_law(esd(heavy_tailed_matrix(n_rows, n_cols, mu, seed, distribution)), xmin=xmin)
        rows.append(dict(tail_index=float(mu), alpha=fit.alpha, xmin=fit.xmin, n_tail=fit.n_tail,
                         ks_distance=fit.ks_distance, alpha_theory=1 + mu / 2 if mu < 2 else np.nan))
    return pd.DataFrame(rows)
