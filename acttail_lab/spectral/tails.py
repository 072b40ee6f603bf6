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

_N_SAMPLES = 8  # segments per candidate tail for the coarse D bounds
_PER_ROUND = 4  # candidates per row evaluated exactly in each pruning round
_SLACK = 1e-6  # allowance for float32 roundoff in the bounds
_CHUNK = 2_000_000  # float64 elements per temporary array in the batched search


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
def _tail_stats(x: np.ndarray) -> dict:
    """Per-candidate statistics of sorted positive rows ``x`` (B, N).

    Candidate ``i`` uses the tail ``x[:, i:]``. Returns log values ``L`` (minus
    their row mean ``shift``, for precision), tail sizes ``n``, Hill ``alpha`` (inf where
    the tail is flat), ``suffix`` sums of ``L``, ``is_first`` (True where a value
    starts a run of ties) and ``first`` (index of the first copy of each value;
    None when there are no ties, then ``first[j] == j``).
    """
    B, N = x.shape
    L = np.log(x)
    shift = L.mean(axis=1)
    L -= shift[:, None]
    n = (N - np.arange(N)).astype(np.float64)
    suffix = np.cumsum(L[:, ::-1], axis=1)[:, ::-1]
    log_sum = suffix - n * L  # sum_{j >= i} ln(x_j / x_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(log_sum > 0, 1.0 + n / log_sum, np.inf)
    is_first = np.ones((B, N), dtype=bool)
    is_first[:, 1:] = x[:, 1:] != x[:, :-1]
    first = None
    if not is_first.all():
        first = np.maximum.accumulate(np.where(is_first, np.arange(N), 0), axis=1).ravel()
    return dict(L=L, Lflat=L.ravel(), shift=shift, n=n, alpha=alpha, first=first, is_first=is_first, suffix=suffix)


def _cdf_gaps(st: dict, rows: np.ndarray, idx: np.ndarray, pts: np.ndarray, alpha: np.ndarray,
              log_xmin: np.ndarray, fast: bool) -> tuple[np.ndarray, np.ndarray]:
    """Theoretical and empirical tail CDFs at positions ``pts`` (P, K) of (row, start) pairs.

    ``fast`` computes in float32 (error < 1e-6, used only for bounds); otherwise float64.
    """
    N = st["L"].shape[1]
    flat = rows[:, None] * N + pts
    arg = (1.0 - alpha)[:, None] * (np.take(st["Lflat"], flat) - log_xmin[:, None])
    below = (pts if st["first"] is None else np.take(st["first"], flat)) - idx[:, None]
    inv_n = 1.0 / (N - idx).astype(np.float64)
    if fast:
        theo = 1.0 - np.exp(arg.astype(np.float32))
        emp = below.astype(np.float32) * inv_n.astype(np.float32)[:, None]
    else:
        theo = -np.expm1(arg)
        emp = below * inv_n[:, None]
    return theo, emp


def _max_gap(st: dict, rows: np.ndarray, idx: np.ndarray, alpha: np.ndarray, log_xmin: np.ndarray,
             start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 ``max |F - E|`` over positions ``start..stop`` (inclusive) of each pair's tail.

    A pair is a row, the index ``idx`` where its tail starts, its ``alpha`` and
    ``log_xmin`` (shifted like ``st["L"]``). Returns the maximum gap and the
    position where it occurs. Pairs are processed in chunks of similar length;
    shorter ranges repeat their last position (harmless for a maximum).
    """
    gap, where = np.empty(rows.size), np.empty(rows.size, dtype=np.int64)
    length = stop - start + 1
    order = np.argsort(-length, kind="stable")
    pos = 0
    while pos < order.size:
        width = int(length[order[pos]])
        sel = order[pos:pos + max(1, _CHUNK // width)]
        pts = np.minimum(start[sel, None] + np.arange(width)[None, :], stop[sel, None])
        theo, emp = _cdf_gaps(st, rows[sel], idx[sel], pts, alpha[sel], log_xmin[sel], fast=False)
        diff = np.abs(theo - emp)
        arg = diff.argmax(axis=1)
        gap[sel] = diff[np.arange(sel.size), arg]
        where[sel] = pts[np.arange(sel.size), arg]
        pos += sel.size
    return gap, where


def _exact_ks(st: dict, rows: np.ndarray, idx: np.ndarray, alpha: np.ndarray,
              log_xmin: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact KS distance of (row, start index) pairs over their whole tails, and its position."""
    N = st["L"].shape[1]
    if log_xmin is None:
        log_xmin = st["Lflat"][rows * N + idx]
    return _max_gap(st, rows, idx, alpha, log_xmin, idx, np.full(rows.size, N - 1))


def _coarse_bounds(st: dict, rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 lower and upper bounds on D of (row, start) pairs from ``_N_SAMPLES + 1`` tail points.

    The largest gap at the points is a lower bound. Between two points both CDFs
    are non-decreasing, so no gap inside a segment exceeds
    ``max(F_next - E_prev, E_next - F_prev)``: the largest of these is an upper bound.
    """
    N = st["L"].shape[1]
    k = np.arange(_N_SAMPLES + 1)
    lower, upper = np.empty(rows.size), np.empty(rows.size)
    step = max(1, _CHUNK // k.size)
    for s in range(0, rows.size, step):
        r, i = rows[s:s + step], idx[s:s + step]
        pts = i[:, None] + (k[None, :] * (N - 1 - i)[:, None]) // _N_SAMPLES
        theo, emp = _cdf_gaps(st, r, i, pts, st["alpha"][r, i], st["Lflat"][r * N + i], fast=True)
        lower[s:s + step] = np.abs(theo - emp).max(axis=1)
        upper[s:s + step] = np.maximum(theo[:, 1:] - emp[:, :-1], emp[:, 1:] - theo[:, :-1]).max(axis=1)
    return lower, upper


def _rank_within_rows(rows: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order sorting by (row, key), and each element's rank within its row in that order."""
    order = np.lexsort((key, rows))
    r = rows[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    rank = np.arange(r.size) - np.repeat(starts, np.diff(np.r_[starts, r.size]))
    return order, rank


def _search(st: dict, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the minimum-D candidate of each row (first on ties) and its exact D.

    Branch and bound, vectorised over all rows and candidates:

    1. coarse float32 bounds ``lower <= D <= upper`` for every candidate;
       ``threshold`` of a row = its smallest upper bound;
    2. in rounds: evaluate exactly the ``_PER_ROUND`` live candidates of each row
       with the smallest lower bounds (they are the likeliest minima), lower the
       row threshold to their exact D, then evaluate every other live candidate
       at the positions where these maxima occurred (the maximum gap of nearby
       candidates tends to sit at the same eigenvalue), raising its lower bound;
    3. drop candidates whose lower bound exceeds the threshold; stop when none is live.

    A dropped candidate has ``D > threshold >= min D``, so the minimum (and the
    first index on ties) is always among the exactly evaluated candidates
    (``_SLACK`` covers the float32 error of the bounds, < 3e-7). On SmolLM2
    spectra it ends after 1-6 rounds, evaluating 1-6% of the candidates exactly.
    """
    B, N = valid.shape
    rows, idx = np.nonzero(valid)
    lower, upper = _coarse_bounds(st, rows, idx)
    threshold = np.full(B, np.inf)
    np.minimum.at(threshold, rows, upper)
    D = np.full((B, N), np.inf)
    live = lower <= threshold[rows] + _SLACK
    rows, idx, lower = rows[live], idx[live], lower[live]
    while rows.size:
        order, rank = _rank_within_rows(rows, lower)
        rows, idx, lower = rows[order], idx[order], lower[order]
        pick = rank < _PER_ROUND
        pr, pi = rows[pick], idx[pick]
        gap, where = _exact_ks(st, pr, pi, st["alpha"][pr, pi])
        D[pr, pi] = gap
        np.minimum.at(threshold, pr, gap)
        hints = np.full((B, _PER_ROUND), -1)
        hints[pr, rank[pick]] = where
        rows, idx, lower = rows[~pick], idx[~pick], lower[~pick]
        at = hints[rows]
        at = np.where(at >= idx[:, None], at, idx[:, None])  # the gap at the tail start is 0
        theo, emp = _cdf_gaps(st, rows, idx, at, st["alpha"][rows, idx], st["Lflat"][rows * N + idx], fast=True)
        lower = np.maximum(lower, np.abs(theo - emp).max(axis=1))
        live = lower <= threshold[rows] + _SLACK
        rows, idx, lower = rows[live], idx[live], lower[live]
    best = D.argmin(axis=1)
    return best, D[np.arange(B), best]


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
