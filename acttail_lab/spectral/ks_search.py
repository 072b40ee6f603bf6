"""The batched KS search behind :func:`acttail_lab.spectral.tails.fit_power_law`: every xmin candidate at once.

Inputs: sorted positive eigenvalues (rows of a 2-D array for many spectra). Outputs: per row the KS-optimal
candidate and its alpha/D. Coarse lower/upper bounds on D prune candidates, then the survivors are
evaluated exactly; memory is bounded by ``_CHUNK`` float64 elements per temporary array.
"""
from __future__ import annotations

import numpy as np

_N_SAMPLES = 8  # segments per candidate tail for the coarse D bounds


_PER_ROUND = 4  # candidates per row evaluated exactly in each pruning round


_SLACK = 1e-6  # allowance for float32 roundoff in the bounds


_CHUNK = 2_000_000  # float64 elements per temporary array in the batched search


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
