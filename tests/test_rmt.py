import numpy as np
import pytest
from scipy.integrate import quad

from acttail_lab.spectral import rmt
from acttail_lab.spectral.tails import fit_power_law


@pytest.mark.parametrize("q", [0.1, 0.375, 1.0])
@pytest.mark.parametrize("sigma2", [0.5, 2.0])
def test_mp_density_is_a_density_with_mean_sigma2(q, sigma2):
    lo, hi = rmt.mp_edges(q, sigma2)
    mass = quad(lambda x: rmt.mp_density(x, q, sigma2), lo, hi, limit=200)[0]
    mean = quad(lambda x: x * rmt.mp_density(x, q, sigma2), lo, hi, limit=200)[0]
    assert mass == pytest.approx(1.0, abs=1e-6)
    assert mean == pytest.approx(sigma2, rel=1e-6)


def test_mp_edges_and_support():
    lo, hi = rmt.mp_edges(0.25, 2.0)
    assert (lo, hi) == pytest.approx((2.0 * 0.5**2, 2.0 * 1.5**2))
    assert rmt.mp_edges(1.0, 1.0) == pytest.approx((0.0, 4.0))
    x = np.array([lo - 1e-3, lo + 1e-3, 1.0, hi - 1e-3, hi + 1e-3])
    dens = rmt.mp_density(x, 0.25, 2.0)
    assert dens[0] == 0 and dens[-1] == 0
    assert (dens[1:4] > 0).all()
    with pytest.raises(ValueError, match="Aspect ratio"):
        rmt.mp_edges(1.5)


def test_aspect_ratio():
    assert rmt.aspect_ratio((1536, 576)) == pytest.approx(576 / 1536)
    assert rmt.aspect_ratio((576, 1536)) == pytest.approx(576 / 1536)


def test_gaussian_spectrum_fills_the_mp_support():
    shape, sigma = (1200, 400), 0.5
    w = rmt.gaussian_matrix(*shape, sigma=sigma, seed=0)
    eigs = np.linalg.eigvalsh(w.T @ w) / max(shape)
    q = rmt.aspect_ratio(shape)
    lo, hi = rmt.mp_edges(q, sigma**2)
    # finite-size (Tracy-Widom) fluctuations at the edges are a few percent at this size
    assert lo * 0.95 < eigs.min() < lo * 1.15
    assert hi * 0.95 < eigs.max() < hi * 1.05
    assert rmt.count_above_mp(eigs, q, sigma**2 * 1.05) == 0
    assert rmt.mp_sigma2(eigs) == pytest.approx(sigma**2, rel=0.02)
    # the empirical CDF follows the MP CDF
    grid = np.linspace(lo, hi, 9)[1:-1]
    mp_cdf = [quad(lambda x: rmt.mp_density(x, q, sigma**2), lo, g, limit=200)[0] for g in grid]
    emp_cdf = [(eigs <= g).mean() for g in grid]
    assert np.allclose(emp_cdf, mp_cdf, atol=0.02)


def test_random_matrices_are_seeded():
    a = rmt.heavy_tailed_matrix(50, 20, tail_index=1.5, seed=3)
    assert a.shape == (50, 20)
    assert np.array_equal(a, rmt.heavy_tailed_matrix(50, 20, tail_index=1.5, seed=3))
    assert not np.array_equal(a, rmt.heavy_tailed_matrix(50, 20, tail_index=1.5, seed=4))
    assert np.array_equal(rmt.gaussian_matrix(5, 4, seed=1), rmt.gaussian_matrix(5, 4, seed=1))
    with pytest.raises(ValueError, match="student_t"):
        rmt.heavy_tailed_matrix(5, 4, distribution="cauchy")


@pytest.mark.parametrize("distribution", ["student_t", "pareto"])
def test_heavy_tailed_matrix_has_smaller_alpha_than_gaussian(distribution):
    shape = (1000, 500)
    gauss = rmt.gaussian_matrix(*shape, seed=0)
    heavy = rmt.heavy_tailed_matrix(*shape, tail_index=1.0, seed=0, distribution=distribution)
    a_gauss = fit_power_law(np.linalg.eigvalsh(gauss.T @ gauss)).alpha
    a_heavy = fit_power_law(np.linalg.eigvalsh(heavy.T @ heavy)).alpha
    assert a_gauss > 5  # MP bulk: a steep, short "tail"
    assert 1.2 < a_heavy < 2.0  # Martin & Mahoney: about 1 + tail_index / 2 for tail_index < 2


def test_normalized_esd_is_esd_over_the_larger_dimension():
    import torch

    from acttail_lab.spectral.spectra import esd

    w = rmt.gaussian_matrix(90, 30, seed=2)
    for matrix in (w, w.T, torch.from_numpy(w)):
        eigs = rmt.normalized_esd(matrix)
        assert eigs.size == 30
        assert np.allclose(eigs, np.linalg.eigvalsh(w.T @ w) / 90)
    assert np.allclose(rmt.normalized_esd(w) * 90, esd(w))


def test_tail_index_sweep_table():
    sweep = rmt.tail_index_sweep((1.0, 3.0), n_rows=400, n_cols=200, seed=0)
    assert list(sweep.tail_index) == [1.0, 3.0]
    assert sweep.alpha_theory[0] == 1.5 and np.isnan(sweep.alpha_theory[1])
    w = rmt.heavy_tailed_matrix(400, 200, tail_index=1.0, seed=0)
    assert sweep.alpha[0] == pytest.approx(fit_power_law(np.linalg.eigvalsh(w.T @ w)).alpha, rel=1e-9)
    assert sweep.alpha[0] < sweep.alpha[1]
