"""Power-law fits of eigenvalue tails (HT-SR alpha), vectorised and pure numpy.

Input everywhere is a 1-D array of eigenvalues ``lambda`` of ``W^T W`` (squared
singular values; any order, any positive scale: alpha does not depend on it).

The estimator is the continuous power-law fit of Clauset et al., as used by
WeightWatcher, ``powerlaw`` and AlphaPruning. For a tail ``{lambda_j >= xmin}`` of
``n`` values, sorted ascending and numbered ``j = 0 .. n-1``:

* Hill / maximum likelihood: ``alpha = 1 + n / sum_j ln(lambda_j / xmin)``;
* Kolmogorov-Smirnov distance:
  ``D = max_j |1 - (lambda_j / xmin)^(1 - alpha) - j / n|``. The empirical CDF
  ``j / n`` counts the tail values strictly below ``lambda_j`` (``powerlaw``'s
  ``statistics.cdf``; WeightWatcher's ``arange(n) / n`` is the same when the
  values are distinct, which real spectra are). With tied values (bootstrap
  resamples) every copy of a value takes the CDF of its first copy.

``xmin`` rules (``XMIN_RULES``):

* ``"ks"``: full search, WeightWatcher's default. Every distinct eigenvalue
  except the largest is a candidate (tails of at least 2 values), and the one
  with the smallest ``D`` wins (first one on ties). This is WeightWatcher 0.7.7's
  candidate set. ``powerlaw.Fit`` also drops the second-largest value (tail of
  2); that candidate always has ``D = 1 - e^-2 - 1/2 = 0.365``, so both agree
  whenever the best ``D`` is below 0.365 (every real spectrum seen so far).
* ``"peak"``: AlphaPruning's ``xmin_peak`` (its default, "PL_Alpha_Hill"). Take a
  100-bin histogram of ``log10(lambda)``; ``peak`` = left edge of the tallest
  bin (in lambda units). The KS search runs only over candidates
  ``log10(0.95 * peak) <= lambda <= 1.5 * peak``, as in AlphaPruning's
  ``net_esd_estimator`` (the source of the published alphas). The odd lower
  bound (a log10 value compared with eigenvalues) is AlphaPruning's code, kept
  for exact agreement; it removes candidates only when ``peak > 1/0.95``.
  (WeightWatcher's ``fix_fingers='xmin_peak'`` differs slightly: it hands the
  window to ``powerlaw``, which excludes the upper end and its last candidate.)
* ``"median"``: AlphaPruning's ``xmin_mid``: ``xmin`` = the sorted eigenvalue at
  index ``n_eigs // 2`` (the upper median), no search.
* a float: fixed ``xmin`` (it need not be an eigenvalue).

The search is exact but fast (see ``_search``): cheap bounds on ``D`` for every
candidate, then branch and bound that evaluates ``D`` exactly only for the few
candidates that can still be the minimum. Candidates are never looped over in
Python, and many spectra (bootstrap replicates) are fitted in one batch: one
576-eigenvalue fit takes ~0.7 ms, 200 replicates ~50 ms (one CPU thread).

Robustness (``alpha_interval``): refit ``n_boot`` replicates in one batch and
report the central 90% interval. ``"bootstrap"`` resamples the eigenvalues with
replacement (Clauset et al.'s uncertainty of the whole estimator, xmin search
included); ``"perturb"`` multiplies them by ``exp(N(0, 1e-3))`` (a re-quantisation
sized jitter: does the KS search jump?). ``fragile`` flags an interval wider than
``FRAGILE_REL_WIDTH`` (25%) of alpha. On SmolLM2 (ks rule) the bootstrap flags
every matrix (median width ~100% of alpha: 576-eigenvalue tails are short),
perturb flags 6%; with the peak rule 98% and 48%.

Cleaning (``clean_spectrum``): eigenvalues at or below ``ZERO_FLOOR * lambda_max``
(exact zeros of rank-deficient matrices, roundoff) are dropped before fitting;
at least ``MIN_EIGS`` must remain. Bad input raises ``DegenerateSpectrumError``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..core.errors import DegenerateSpectrumError
from .ks_search import _exact_ks, _search, _tail_stats

XMIN_RULES = ("ks", "peak", "median")
MIN_EIGS = 10
"""Fewest positive eigenvalues a spectrum must have to be fitted at all."""
MIN_TAIL = 10
"""Fits whose tail has fewer eigenvalues than this get ``tail_ok=False`` (the Hill
estimate's standard error ``(alpha-1)/sqrt(n)`` is then > 30% of ``alpha-1``)."""
ZERO_FLOOR = 1e-12
"""Eigenvalues <= ZERO_FLOOR * lambda_max are treated as zeros and dropped."""
PEAK_BINS = 100
FRAGILE_REL_WIDTH = 0.25
"""An alpha whose interval width exceeds this fraction of alpha is ``fragile``."""


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class PowerLawFit:
    """One power-law fit of one spectrum.

    ``alpha`` (dimensionless exponent), ``xmin`` (same units as the eigenvalues),
    ``ks_distance`` (0..1), ``n_tail`` eigenvalues ``>= xmin`` of ``n_eigs`` fitted
    (after dropping zeros), ``sigma = (alpha-1)/sqrt(n_tail)`` (standard error),
    ``lambda_max``, ``alpha_weighted = alpha*log10(lambda_max)``,
    ``stable_rank = sum(lambda)/lambda_max``, ``tail_ok`` (``n_tail >= MIN_TAIL``)
    and ``warning`` ("" when fine).
    """

    alpha: float
    xmin: float
    xmin_rule: str
    ks_distance: float
    n_tail: int
    n_eigs: int
    sigma: float
    lambda_max: float
    alpha_weighted: float
    stable_rank: float
    tail_ok: bool
    warning: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AlphaInterval:
    """How much alpha moves when the spectrum is resampled or perturbed.

    ``alpha`` is the fit of the unperturbed spectrum; ``alpha_lo``/``alpha_hi`` the
    central ``level`` percentile interval of the replicate alphas and
    ``alpha_median`` their median; ``rel_width = (alpha_hi - alpha_lo) / alpha``;
    ``fragile = rel_width > FRAGILE_REL_WIDTH``.
    """

    alpha: float
    alpha_lo: float
    alpha_hi: float
    alpha_median: float
    rel_width: float
    fragile: bool
    method: str
    level: float
    n_boot: int
    xmin_rule: str

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- input checks
def clean_spectrum(eigs) -> np.ndarray:
    """Validate eigenvalues; return the positive ones, sorted ascending, as float64.

    Drops values ``<= ZERO_FLOOR * max(eigs)`` (zeros and roundoff). Raises
    ``DegenerateSpectrumError`` for non-1-D or non-finite input, clearly negative
    values, fewer than ``MIN_EIGS`` positive values, or all-equal values.
    """
    x = np.asarray(eigs, dtype=np.float64)
    if x.ndim != 1:
        raise DegenerateSpectrumError(
            f"Expected a 1-D array of eigenvalues, got shape {x.shape}. "
            "Fix: pass the eigenvalues of one matrix, e.g. acttail_lab.spectral.spectra.esd(weight)."
        )
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise DegenerateSpectrumError(
            f"{bad} of {x.size} eigenvalues are NaN or inf. "
            "Fix: check the weights for NaN/inf (esd() reports them), or compute the spectrum in float64."
        )
    top = float(x.max()) if x.size else 0.0
    floor = ZERO_FLOOR * top if top > 0 else 0.0
    if x.size and x.min() < -max(floor, 1e-300):
        raise DegenerateSpectrumError(
            f"Negative eigenvalue {x.min():.3g} (largest {top:.3g}): eigenvalues of W^T W are >= 0. "
            "Fix: pass squared singular values (esd() returns them), not singular values of a signed matrix."
        )
    kept = np.sort(x[x > floor])
    if kept.size < MIN_EIGS:
        dropped = x.size - kept.size
        raise DegenerateSpectrumError(
            f"Only {kept.size} positive eigenvalues ({x.size} given, {dropped} zero or below "
            f"{ZERO_FLOOR:g} x lambda_max dropped); a power-law fit needs at least {MIN_EIGS}. "
            "Fix: analyse a larger matrix, or check that the weights are not (nearly) all zero / rank-deficient."
        )
    if kept[0] == kept[-1]:
        raise DegenerateSpectrumError(
            f"All {kept.size} positive eigenvalues equal {kept[0]:.6g}: a flat spectrum has no tail to fit "
            "(an orthogonal or scaled-identity matrix?). Fix: skip this matrix; alpha is undefined for it."
        )
    return kept


def check_xmin(xmin) -> None:
    """Raise ValueError unless ``xmin`` is one of ``XMIN_RULES`` or a positive finite number."""
    if isinstance(xmin, str):
        if xmin not in XMIN_RULES:
            raise ValueError(f"Unknown xmin rule {xmin!r}; use one of {XMIN_RULES} or a positive number.")
        return
    if isinstance(xmin, bool) or not isinstance(xmin, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(xmin) and xmin > 0):
        raise ValueError(f"A fixed xmin must be a positive finite number, got {xmin!r}; "
                         f"or use a rule: {XMIN_RULES}.")


# --------------------------------------------------------------------------- batched engine


def _peak_window(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AlphaPruning's xmin_peak candidate window ``(lo, hi)`` per row, in eigenvalue units.

    Bins ``log10(x)`` exactly like ``np.histogram(log10(x), bins=100)`` (same
    edges, same edge corrections), vectorised over rows.
    """
    B, N = x.shape
    logs = np.log10(x)
    first, last = logs[:, :1], logs[:, -1:]
    same = last == first  # np.histogram widens a zero range by 0.5 on each side
    first, last = np.where(same, first - 0.5, first), np.where(same, last + 0.5, last)
    edges = np.arange(PEAK_BINS + 1) * ((last - first) / PEAK_BINS) + first
    edges[:, -1:] = last
    bins = (((logs - first) / (last - first)) * PEAK_BINS).astype(np.intp)
    bins[bins == PEAK_BINS] -= 1
    rows = np.arange(B)[:, None]
    bins[logs < edges[rows, bins]] -= 1
    bins[(logs >= edges[rows, bins + 1]) & (bins != PEAK_BINS - 1)] += 1
    counts = np.zeros((B, PEAK_BINS), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(B), N), bins.ravel()), 1)
    peak = 10.0 ** edges[np.arange(B), counts.argmax(axis=1)]
    return np.log10(0.95 * peak), 1.5 * peak


def _fit_sorted(x: np.ndarray, xmin) -> dict:
    """Fit every row of sorted, positive ``x`` (B, N) with one xmin rule; arrays per row."""
    B, N = x.shape
    st = _tail_stats(x)
    rows = np.arange(B)
    fallback = np.zeros(B, dtype=bool)
    if isinstance(xmin, str) and xmin in ("ks", "peak"):
        valid = st["is_first"] & (st["n"] >= 2)[None, :] & np.isfinite(st["alpha"])
        if xmin == "peak":
            lo, hi = _peak_window(x)
            window = valid & (x >= lo[:, None]) & (x <= hi[:, None])
            fallback = ~window.any(axis=1)
            valid = np.where(fallback[:, None], valid, window)
        idx, D = _search(st, valid)
        alpha, xmin_val = st["alpha"][rows, idx], x[rows, idx]
    elif xmin == "median":
        idx = (x < x[:, N // 2:N // 2 + 1]).sum(axis=1)  # first copy of the upper median
        alpha, xmin_val = st["alpha"][rows, idx], x[rows, idx]
        D = _exact_ks(st, rows, idx, alpha)[0]
    else:
        xmin_val = np.full(B, float(xmin))
        idx = (x < xmin).sum(axis=1)
        empty = idx >= N  # xmin above the largest value: no tail, alpha NaN
        idx = np.minimum(idx, N - 1)
        log_xmin = np.log(xmin_val) - st["shift"]
        log_sum = st["suffix"][rows, idx] - (N - idx) * log_xmin
        with np.errstate(divide="ignore"):
            alpha = np.where(empty, np.nan, np.where(log_sum > 0, 1.0 + (N - idx) / log_sum, np.inf))
        D = np.where(empty, np.nan, _exact_ks(st, rows, idx, np.where(empty, 2.0, alpha), log_xmin=log_xmin)[0])
        idx = np.where(empty, N, idx)
    return dict(alpha=alpha, xmin=xmin_val, D=D, n_tail=N - idx, fallback=fallback)


# --------------------------------------------------------------------------- public API
def fit_power_law(eigs, xmin="ks") -> PowerLawFit:
    """Fit a power law to the tail of one spectrum.

    Args:
        eigs: eigenvalues of ``W^T W`` (1-D, any order; zeros are dropped).
        xmin: ``"ks"``, ``"peak"``, ``"median"`` or a positive float (see module doc).

    Returns:
        A ``PowerLawFit``. ``tail_ok`` is False (and ``warning`` says why) when
        the tail has fewer than ``MIN_TAIL`` eigenvalues.
    """
    check_xmin(xmin)
    x = clean_spectrum(eigs)
    res = {k: v[0] for k, v in _fit_sorted(x[None, :], xmin).items()}
    alpha, n_tail = float(res["alpha"]), int(res["n_tail"])
    if n_tail == 0:
        raise DegenerateSpectrumError(
            f"Fixed xmin={xmin:g} is above the largest eigenvalue {x[-1]:.6g}: the tail is empty. "
            "Fix: choose a smaller xmin, or a rule ('ks', 'peak', 'median')."
        )
    lam_max = float(x[-1])
    warnings = []
    if n_tail < MIN_TAIL:
        warnings.append(f"short tail: {n_tail} < {MIN_TAIL} eigenvalues, alpha unreliable")
    if not np.isfinite(alpha):
        warnings.append("flat tail: all tail eigenvalues equal, alpha infinite")
    if res["fallback"]:
        warnings.append("peak window held no candidate; used the full KS search")
    rule = xmin if isinstance(xmin, str) else "fixed"
    return PowerLawFit(
        alpha=alpha, xmin=float(res["xmin"]), xmin_rule=rule, ks_distance=float(res["D"]),
        n_tail=n_tail, n_eigs=int(x.size), sigma=float((alpha - 1.0) / np.sqrt(n_tail)),
        lambda_max=lam_max, alpha_weighted=float(alpha * np.log10(lam_max)),
        stable_rank=float(x.sum() / lam_max), tail_ok=bool(n_tail >= MIN_TAIL and np.isfinite(alpha)),
        warning="; ".join(warnings),
    )


def ks_curve(eigs) -> pd.DataFrame:
    """KS distance and alpha for every ``"ks"`` candidate xmin (for a D-vs-xmin plot).

    Returns a DataFrame with columns ``xmin, alpha, ks_distance, n_tail``, one
    row per candidate, ascending xmin. Its minimum-D row is ``fit_power_law(eigs)``.
    """
    x = clean_spectrum(eigs)[None, :]
    st = _tail_stats(x)
    valid = st["is_first"][0] & (st["n"] >= 2) & np.isfinite(st["alpha"][0])
    idx = np.nonzero(valid)[0]
    rows = np.zeros(idx.size, dtype=np.int64)
    alpha = st["alpha"][0, idx]
    D = _exact_ks(st, rows, idx, alpha)[0]
    return pd.DataFrame({"xmin": x[0, idx], "alpha": alpha, "ks_distance": D,
                         "n_tail": (x.shape[1] - idx).astype(np.int64)})


def alpha_interval(eigs, xmin="ks", n_boot: int = 200, seed: int = 0, method: str = "bootstrap",
                   level: float = 0.9, noise: float = 1e-3) -> AlphaInterval:
    """How stable is alpha? Refit ``n_boot`` replicates of the spectrum (one batch).

    Args:
        eigs: eigenvalues of one matrix.
        xmin: the rule to refit with (each replicate searches its own xmin).
        n_boot: number of replicates.
        seed: seed of the numpy generator (results are reproducible).
        method: ``"bootstrap"`` (resample the eigenvalues with replacement) or
            ``"perturb"`` (multiply each eigenvalue by ``exp(N(0, noise))``: a
            ``noise`` relative jitter, like re-quantising the weights).
        level: coverage of the percentile interval (0.9 = 5th to 95th percentile).
        noise: relative noise of ``"perturb"`` (standard deviation of the log).

    Returns:
        An ``AlphaInterval``; ``fragile`` when the interval is wider than
        ``FRAGILE_REL_WIDTH`` x alpha.
    """
    check_xmin(xmin)
    if method not in ("bootstrap", "perturb"):
        raise ValueError(f"Unknown method {method!r}; use 'bootstrap' or 'perturb'.")
    if not 0 < level < 1 or n_boot < 2:
        raise ValueError(f"Need 0 < level < 1 and n_boot >= 2, got level={level}, n_boot={n_boot}.")
    x = clean_spectrum(eigs)
    point = float(_fit_sorted(x[None, :], xmin)["alpha"][0])
    rng = np.random.default_rng(seed)
    if method == "bootstrap":
        reps = np.sort(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
        flat = reps[:, 0] == reps[:, -1]
        reps[flat] = x  # a resample of one repeated value has no tail: keep the original
    else:
        reps = np.sort(x[None, :] * np.exp(rng.normal(0.0, noise, size=(n_boot, x.size))), axis=1)
    alphas = _fit_sorted(reps, xmin)["alpha"]
    lo, med, hi = np.nanquantile(alphas, [(1 - level) / 2, 0.5, (1 + level) / 2])  # NaN: empty fixed-xmin tail
    rel = float((hi - lo) / point) if np.isfinite(point) else np.inf
    rule = xmin if isinstance(xmin, str) else "fixed"
    return AlphaInterval(alpha=point, alpha_lo=float(lo), alpha_hi=float(hi), alpha_median=float(med),
                         rel_width=rel, fragile=bool(rel > FRAGILE_REL_WIDTH), method=method,
                         level=float(level), n_boot=int(n_boot), xmin_rule=rule)
