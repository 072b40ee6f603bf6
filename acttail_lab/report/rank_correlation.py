"""Spearman rank correlation with an interval, and p-values printed as "p < 0.001" rather than "p = 0.000".

Part of the verdict engine (:mod:`report.verdicts` re-exports it). Inputs: two equal-length sequences (NaN pairs
dropped). Output: :class:`Correlation` (rho, interval, n, p) and its one-line text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
EXACT_MAX_N = 8
"""Up to this many pairs, p is exact: over all n! orderings (8! = 40,320). scipy's t approximation is poor for few
pairs and gives p = 0 at rho = +-1 (3 runs in the same order would read "p < 0.001"; exactly, p = 1/3)."""


def format_p(p: float) -> str:
    """"p < 0.001" below 0.001, else "p = 0.012"; "p n/a" when undefined."""
    if p is None or not math.isfinite(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass(frozen=True)
class Correlation:
    """Spearman rho with its interval (``level``), sample size and two-sided p; ``method`` names the interval."""

    rho: float
    low: float
    high: float
    n: int
    p: float
    level: float = LEVEL
    method: str = "Fisher z"

    def text(self) -> str:
        """"rho = 0.71 [0.32, 0.90] (n = 10, p = 0.021)"."""
        if not math.isfinite(self.rho):
            return f"rho n/a (n = {self.n})"
        interval = f" [{self.low:.2f}, {self.high:.2f}]" if math.isfinite(self.low) else ""
        return f"rho = {self.rho:.2f}{interval} (n = {self.n}, {format_p(self.p)})"


def rank_correlation(x, y, level: float = LEVEL, method: str = "fisher", n_boot: int = 2000,
                     seed: int = 0) -> Correlation:
    """Spearman rank correlation of ``x`` and ``y`` with an interval.

    ``method="fisher"``: atanh(rho) +- z sqrt(1.06 / (n - 3)) (Fieller, Hartley & Pearson 1957; n >= 4);
    ``"bootstrap"``: percentile interval over ``n_boot`` resamples of the pairs. p is two-sided: exact
    (:func:`exact_p`) for n <= :data:`EXACT_MAX_N`, scipy's t approximation above.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    if n < 3:
        return Correlation(math.nan, math.nan, math.nan, n, math.nan, level, method)
    rho, p = spearmanr(x, y)
    rho, p = float(rho), float(p)
    if n <= EXACT_MAX_N and math.isfinite(rho):
        p = exact_p(x, y)
    low = high = math.nan
    if method == "fisher":  # none for n < 4, nor at |rho| = 1 (atanh is infinite there)
        low, high = fisher_interval(rho, n, level)
    elif method == "bootstrap":
        index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        boot = [spearmanr(x[i], y[i])[0] for i in index]
        boot = np.asarray([b for b in boot if np.isfinite(b)])
        if len(boot):
            low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return Correlation(rho, float(low), float(high), n, p, level, "Fisher z" if method == "fisher" else "bootstrap")


def exact_p(x, y) -> float:
    """Two-sided permutation p of Spearman's rho for few pairs: the share of the n! orderings of ``y``'s ranks
    whose |rho| is at least the observed one (ties keep their average ranks)."""
    from itertools import permutations

    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if scale == 0:
        return math.nan
    observed = abs(float(rx @ ry)) / scale
    orders = np.asarray(list(permutations(ry)))
    return float(np.mean(np.abs(orders @ rx) / scale >= observed - 1e-12))


def fisher_interval(rho: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Fisher-z interval of a Spearman ``rho`` over ``n`` pairs (as :func:`rank_correlation`); NaNs for n < 4
    and for |rho| = 1, where atanh is infinite (clamping it gave a false [1.00, 1.00])."""
    from scipy.stats import norm

    if n is None or n < 4 or not math.isfinite(rho) or abs(rho) >= 1 - 1e-12:
        return math.nan, math.nan
    z = math.atanh(rho)
    half = norm.ppf(0.5 + level / 2) * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


__all__ = ["LEVEL", "EXACT_MAX_N", "format_p", "Correlation", "rank_correlation", "exact_p", "fisher_interval"]
