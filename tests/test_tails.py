"""Power-law fits: hand-computed values, brute-force and powerlaw/WeightWatcher agreement, rules, errors."""
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from acttail_lab.core.errors import DegenerateSpectrumError
from acttail_lab.spectral.tails import (
    FRAGILE_REL_WIDTH,
    MIN_EIGS,
    MIN_TAIL,
    _fit_sorted,
    alpha_interval,
    clean_spectrum,
    fit_power_law,
    ks_curve,
)

E = np.e


def pareto(n, alpha, seed=0, xmin=1.0):
    """Classical Pareto sample with density exponent ``alpha`` (p(x) ~ x^-alpha, x >= xmin)."""
    return xmin * (np.random.default_rng(seed).pareto(alpha - 1, size=n) + 1.0)


def spectrum_like(seed=0, n=400):
    """A Marchenko-Pastur-like bulk plus a heavy tail: the shape of a trained layer's ESD."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, 2 * n)) / np.sqrt(2 * n)
    bulk = np.linalg.eigvalsh(w @ w.T)
    bulk[-40:] *= pareto(40, 2.5, seed)[np.argsort(np.argsort(bulk[-40:]))] * 3
    return bulk


def brute_force_ks(eigs):
    """Reference full KS search, one candidate at a time (powerlaw's CDF definition, ties included)."""
    x = np.sort(np.asarray(eigs, dtype=float))
    best = None
    for xmin in np.unique(x)[:-1]:
        tail = x[x >= xmin]
        n = tail.size
        alpha = 1 + n / np.sum(np.log(tail / xmin))
        emp = np.searchsorted(tail, tail, side="left") / n
        D = np.max(np.abs(1 - (tail / xmin) ** (1 - alpha) - emp))
        if best is None or D < best[2]:
            best = (alpha, xmin, D, n)
    return best


def alphapruning_peak(eigs):
    """AlphaPruning's ``net_esd_estimator(fix_fingers='xmin_peak')`` loop, translated to numpy."""
    x = np.sort(eigs)
    N = len(x)
    log_x = np.log(x)
    h = np.histogram(np.log10(x), bins=100)
    xmin2 = 10 ** h[1][np.argmax(h[0])]
    xmin_min, xmin_max = np.log10(0.95 * xmin2), 1.5 * xmin2
    alphas, Ds = np.zeros(N - 1), np.ones(N - 1)
    for i, xmin in enumerate(x[:-1]):
        if xmin < xmin_min:
            continue
        if xmin > xmin_max:
            break
        n = float(N - i)
        alpha = 1 + n / (np.sum(log_x[i:]) - n * log_x[i])
        alphas[i] = alpha
        if alpha > 1:
            Ds[i] = np.max(np.abs(1 - (x[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    i = np.argmin(Ds)
    return alphas[i], x[i], xmin_max


# --------------------------------------------------------------------------- hand-computed values
def test_fixed_xmin_alpha_by_hand():
    eigs = E ** np.arange(10.0)  # ln(lambda / 1) = 0..9, sum 45
    fit = fit_power_law(eigs, xmin=1.0)
    assert fit.alpha == pytest.approx(1 + 10 / 45, abs=1e-13)
    assert fit.n_tail == 10 and fit.n_eigs == 10 and fit.xmin_rule == "fixed"
    assert fit.sigma == pytest.approx((10 / 45) / np.sqrt(10))
    assert fit.lambda_max == pytest.approx(E ** 9)
    assert fit.alpha_weighted == pytest.approx(fit.alpha * 9 / np.log(10))
    assert fit.stable_rank == pytest.approx(eigs.sum() / E ** 9)


def test_median_rule_by_hand():
    eigs = E ** np.arange(10.0)
    fit = fit_power_law(eigs[::-1], xmin="median")  # order must not matter
    # xmin = sorted[10 // 2] = e^5; tail e^5..e^9: sum ln = 0+1+2+3+4 = 10, alpha = 1 + 5/10
    assert fit.xmin == pytest.approx(E ** 5)
    assert fit.alpha == pytest.approx(1.5, abs=1e-13)
    # F = 1 - e^(-j/2), E = j/5 for j = 0..4: the largest gap is at j = 2: 1 - e^-1 - 0.4
    assert fit.ks_distance == pytest.approx(0.6 - np.exp(-1), abs=1e-13)
    assert not fit.tail_ok and "short tail" in fit.warning


def test_fixed_xmin_between_eigenvalues():
    eigs = E ** np.arange(12.0)
    fit = fit_power_law(eigs, xmin=E ** 1.5)  # tail e^2..e^11: ln ratios 0.5..9.5, sum 50
    assert fit.n_tail == 10
    assert fit.alpha == pytest.approx(1 + 10 / 50, abs=1e-13)
    assert fit.xmin == pytest.approx(E ** 1.5)


# --------------------------------------------------------------------------- full search is exact
@pytest.mark.parametrize("seed", range(12))
def test_ks_search_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(MIN_EIGS, 250))
    eigs = pareto(n, rng.uniform(1.5, 6), seed) * rng.lognormal(0, 0.3, n)
    if seed % 3 == 0:  # bootstrap-style ties
        eigs = rng.choice(eigs, n)
    ref_alpha, ref_xmin, ref_D, ref_n = brute_force_ks(eigs)
    fit = fit_power_law(eigs, xmin="ks")
    assert fit.xmin == ref_xmin and fit.n_tail == ref_n
    assert fit.alpha == pytest.approx(ref_alpha, rel=1e-11)
    assert fit.ks_distance == pytest.approx(ref_D, abs=1e-12)


def test_batch_equals_single_fits():
    rows = np.sort(np.stack([pareto(300, a, seed) for seed, a in enumerate([1.8, 2.5, 4.0, 7.0])]), axis=1)
    for rule in ("ks", "peak", "median", 1.5):
        batch = _fit_sorted(rows, rule)
        for b, row in enumerate(rows):
            single = fit_power_law(row, xmin=rule)
            assert batch["alpha"][b] == single.alpha and batch["xmin"][b] == single.xmin


def test_agrees_with_powerlaw_package():
    powerlaw = pytest.importorskip("powerlaw")
    eigs = np.concatenate([np.random.default_rng(3).lognormal(0, 0.5, 300), pareto(120, 3.5, seed=3, xmin=2.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(eigs, parameter_ranges={"alpha": [1, None]}, verbose=False)
    fit = fit_power_law(eigs, xmin="ks")
    assert fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.alpha, abs=1e-9)
    assert fit.ks_distance == pytest.approx(ref.D, abs=1e-9)
    assert fit.n_tail == int(np.sum(eigs >= ref.xmin))


def test_agrees_with_weightwatcher_fitter():
    ww_powerlaw = pytest.importorskip("weightwatcher.WW_powerlaw")
    for seed in range(3):
        eigs = spectrum_like(seed)
        ref = ww_powerlaw.WWFit(eigs)
        fit = fit_power_law(eigs, xmin="ks")
        assert fit.xmin == ref.xmin
        assert fit.alpha == pytest.approx(ref.alpha, abs=1e-10)


def test_recovers_known_alpha_on_big_pareto_sample():
    eigs = pareto(20000, 2.5, seed=7)
    assert fit_power_law(eigs, xmin=1.0).alpha == pytest.approx(2.5, rel=0.02)
    assert fit_power_law(eigs, xmin="ks").alpha == pytest.approx(2.5, rel=0.05)


# --------------------------------------------------------------------------- xmin rules
def test_rules_differ_and_peak_respects_its_window():
    eigs = spectrum_like(1)
    fits = {rule: fit_power_law(eigs, xmin=rule) for rule in ("ks", "peak", "median")}
    assert len({f.xmin for f in fits.values()}) == 3
    assert len({round(f.alpha, 6) for f in fits.values()}) == 3
    alpha, xmin, bound = alphapruning_peak(eigs)
    assert fits["peak"].xmin == xmin and fits["peak"].xmin <= bound
    assert fits["peak"].alpha == pytest.approx(alpha, rel=1e-11)
    assert fits["median"].xmin == np.sort(eigs)[len(eigs) // 2]
    assert all(f.xmin_rule == rule for rule, f in fits.items())


@pytest.mark.parametrize("seed", range(4))
def test_peak_matches_alphapruning_reference(seed):
    eigs = spectrum_like(seed + 10, n=200) * 10.0 ** (seed - 1)  # scales put the peak below and above 1
    alpha, xmin, _ = alphapruning_peak(eigs)
    fit = fit_power_law(eigs, xmin="peak")
    assert fit.xmin == xmin and fit.alpha == pytest.approx(alpha, rel=1e-11)


def test_peak_window_excludes_a_tail_that_starts_above_it():
    # bulk peaked near 1 and a power-law tail from 1.6: the full search finds the tail start,
    # the peak window (<= 1.5 x peak edge) cannot reach it
    rng = np.random.default_rng(0)
    eigs = np.concatenate([rng.lognormal(0, 0.15, 300), pareto(150, 3.0, seed=0, xmin=1.6)])
    alpha, xmin, bound = alphapruning_peak(eigs)
    ks, peak = fit_power_law(eigs, xmin="ks"), fit_power_law(eigs, xmin="peak")
    assert ks.xmin > bound >= peak.xmin
    assert peak.xmin == xmin and peak.alpha == pytest.approx(alpha, rel=1e-11)


def test_ks_curve_minimum_is_the_fit():
    eigs = spectrum_like(2)
    curve = ks_curve(eigs)
    assert list(curve.columns) == ["xmin", "alpha", "ks_distance", "n_tail"]
    assert len(curve) == len(eigs) - 1 and curve["xmin"].is_monotonic_increasing
    assert (np.diff(curve["n_tail"]) == -1).all() and curve["n_tail"].iloc[-1] == 2
    best = curve.loc[curve["ks_distance"].idxmin()]
    fit = fit_power_law(eigs)
    assert best["xmin"] == fit.xmin and best["alpha"] == pytest.approx(fit.alpha, rel=1e-12)


def test_zeros_are_dropped_and_tail_flags():
    eigs = spectrum_like(0)
    with_zeros = np.concatenate([eigs, np.zeros(50), [1e-20]])
    a, b = fit_power_law(eigs), fit_power_law(with_zeros)
    assert a.alpha == b.alpha and b.n_eigs == len(eigs)
    top = np.sort(eigs)[-5]
    short = fit_power_law(eigs, xmin=top)
    assert short.n_tail == 5 < MIN_TAIL and not short.tail_ok and "short tail" in short.warning
    assert a.tail_ok and a.warning == ""
    assert set(a.as_dict()) >= {"alpha", "xmin", "ks_distance", "n_tail", "sigma", "tail_ok", "warning"}


# --------------------------------------------------------------------------- robustness
def test_alpha_interval_is_seeded_ordered_and_fast():
    eigs = spectrum_like(4, n=576)
    start = time.process_time()
    boot = alpha_interval(eigs, n_boot=200, seed=1)
    elapsed = time.process_time() - start
    assert boot == alpha_interval(eigs, n_boot=200, seed=1)
    assert boot.alpha_lo <= boot.alpha_median <= boot.alpha_hi
    assert boot.alpha == fit_power_law(eigs).alpha
    assert boot.rel_width == pytest.approx((boot.alpha_hi - boot.alpha_lo) / boot.alpha)
    assert boot.fragile == (boot.rel_width > FRAGILE_REL_WIDTH)
    assert elapsed < 2.0  # ~0.05 s on one idle core
    assert set(boot.as_dict()) >= {"alpha_lo", "alpha_hi", "alpha_median", "rel_width", "fragile"}


def test_perturb_interval_is_narrow_on_a_clean_power_law():
    eigs = pareto(2000, 2.5, seed=5)
    ci = alpha_interval(eigs, xmin=1.0, method="perturb", n_boot=100, noise=1e-4)
    assert ci.alpha_lo <= ci.alpha <= ci.alpha_hi
    assert ci.rel_width < 0.01 and not ci.fragile
    boot = alpha_interval(eigs, xmin=1.0, method="bootstrap", n_boot=100)
    assert boot.rel_width > ci.rel_width


def test_fragile_when_two_tails_compete():
    # two power-law regimes: the KS search jumps between them under resampling
    rng = np.random.default_rng(0)
    eigs = np.concatenate([pareto(150, 6.0, seed=1), pareto(25, 1.6, seed=2, xmin=3.0), rng.uniform(0.1, 1, 200)])
    ci = alpha_interval(eigs, n_boot=200, seed=0)
    assert ci.fragile and ci.rel_width > FRAGILE_REL_WIDTH


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("eigs, needle", [
    (np.arange(1.0, MIN_EIGS), "at least"),
    (np.r_[np.arange(1.0, 20), np.nan], "NaN or inf"),
    (np.r_[np.arange(1.0, 20), np.inf], "NaN or inf"),
    (np.full(30, 2.5), "All 30 positive eigenvalues equal"),
    (np.zeros(30), "0 positive eigenvalues"),
    (np.r_[np.zeros(100), np.arange(1.0, 6)], "100 zero"),
    (np.r_[np.arange(1.0, 20), -3.0], "Negative eigenvalue"),
    (np.ones((4, 4)), "1-D"),
])
def test_degenerate_spectra_raise(eigs, needle):
    with pytest.raises(DegenerateSpectrumError, match=needle) as info:
        fit_power_law(eigs)
    assert "Fix:" in str(info.value)


def test_bad_rules_and_fixed_xmin_outside_the_spectrum():
    eigs = np.arange(1.0, 30)
    with pytest.raises(ValueError, match="Unknown xmin rule"):
        fit_power_law(eigs, xmin="mean")
    for bad in (-1.0, 0, float("nan"), None, True):
        with pytest.raises(ValueError, match="positive"):
            fit_power_law(eigs, xmin=bad)
    with pytest.raises(DegenerateSpectrumError, match="above the largest"):
        fit_power_law(eigs, xmin=100.0)
    with pytest.raises(ValueError, match="method"):
        alpha_interval(eigs, method="jackknife")


def test_clean_spectrum_sorts_and_keeps_roundoff_negatives_out():
    x = clean_spectrum(np.r_[3.0, 1.0, 2.0, -1e-18, 0.0, np.arange(4.0, 12)])
    assert (np.diff(x) > 0).all() and x[0] == 1.0 and len(x) == 11
    assert isinstance(ks_curve(x), pd.DataFrame)
