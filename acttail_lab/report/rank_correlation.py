"""Spearman rank correlation with an interval, and p-values printed as "p < 0.001" rather than "p = 0.000".

Part of the verdict engine (:mod:`report.verdicts` re-exports it). Inputs: two equal-length sequences (NaN pairs
dropped). Output: :class:`Correlation` (rho, interval, n, p) and its one-line text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


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
    ``"bootstrap"``: percentile interval over ``n_boot`` resamples of the pairs. p is scipy's two-sided p.
    """
    from scipy.stats import norm, spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    if n < 3:
        return Correlation(math.nan, math.nan, math.nan, n, math.nan, level, method)
    rho, p = spearmanr(x, y)
    rho, p = float(rho), float(p)
    low = high = math.nan
    if method == "fisher" and n >= 4 and math.isfinite(rho):
        z = math.atanh(max(min(rho, 0.999999), -0.999999))
        half = norm.ppf(0.5 + level / 2) * math.sqrt(1.06 / (n - 3))
        low, high = math.tanh(z - half), math.tanh(z + half)
    elif method == "bootstrap":
        index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        boot = [spearmanr(x[i], y[i])[0] for i in index]
        boot = np.asarray([b for b in boot if np.isfinite(b)])
        if len(boot):
            low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return Correlation(rho, float(low), float(high), n, p, level, "Fisher z" if method == "fisher" else "bootstrap")


def fisher_interval(rho: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Fisher-z interval of a Spearman ``rho`` over ``n`` pairs (as :func:`rank_correlation`); NaNs for n < 4."""
    from scipy.stats import norm

    if n is None or n < 4 or not math.isfinite(rho):
        return math.nan, math.nan
    z = math.atanh(max(min(rho, 0.999999), -0.999999))
    half = norm.ppf(0.5 + level / 2) * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


__all__ = ["LEVEL", "format_p", "Correlation", "rank_correlation", "fisher_interval"]
