"""The plot helpers draw what they claim: checked on the returned Axes, not by eye."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from acttail_lab import plots
from acttail_lab.core.models import PROJECTIONS
from acttail_lab.spectral import rmt
from acttail_lab.spectral.tails import fit_power_law, ks_curve


@pytest.fixture(scope="module")
def heavy_eigs():
    w = rmt.heavy_tailed_matrix(600, 300, tail_index=1.5, seed=0)
    return np.linalg.eigvalsh(w.T @ w)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    rows = [dict(layer=layer, projection=kind, name=f"model.layers.{layer}.{kind}",
                 alpha=2.0 + 0.1 * layer + 0.3 * i + rng.normal(0, 0.05))
            for layer in range(5) for i, kind in enumerate(PROJECTIONS)]
    return pd.DataFrame(rows)


def test_plot_esd_draws_histogram_fit_and_xmin(heavy_eigs):
    fit = fit_power_law(heavy_eigs, xmin="ks")
    ax = plots.plot_esd(heavy_eigs, fit=fit, bins=30)
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    assert len(ax.patches) == 30
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.lines) == 2
    fit_line, xmin_line = ax.lines
    # the fitted line starts at xmin and has slope -alpha on log-log axes
    x, y = fit_line.get_data()
    assert x[0] == pytest.approx(fit.xmin)
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert slope == pytest.approx(-fit.alpha, rel=1e-9)
    assert np.allclose(xmin_line.get_xdata(), fit.xmin)
    # histogram heights are a density of all eigenvalues: they integrate to 1
    area = sum(p.get_width() * p.get_height() for p in ax.patches)
    assert area == pytest.approx(1.0, rel=1e-9)
    assert f"{fit.alpha:.2f}" in ax.get_legend().get_texts()[1].get_text()


def test_plot_esd_fits_itself_with_the_requested_rule_and_reuses_ax(heavy_eigs):
    fig = Figure()
    given = fig.add_subplot()
    ax = plots.plot_esd(heavy_eigs, ax=given, xmin="median", loglog=False)
    assert ax is given
    assert ax.get_xscale() == "linear"
    assert np.allclose(ax.lines[1].get_xdata(), np.sort(heavy_eigs)[heavy_eigs.size // 2])
    bare = plots.plot_esd(heavy_eigs, show_fit=False)
    assert len(bare.lines) == 0


def test_power_law_density_matches_the_tail_mass(heavy_eigs):
    fit = fit_power_law(heavy_eigs)
    from scipy.integrate import quad

    mass = quad(lambda x: plots.power_law_density(x, fit), fit.xmin, np.inf)[0]
    assert mass == pytest.approx(fit.n_tail / fit.n_eigs, rel=1e-6)


def test_plot_ks_curve_marks_each_rule(heavy_eigs):
    ax = plots.plot_ks_curve(heavy_eigs, rules=("ks", "peak", "median"))
    curve = ks_curve(heavy_eigs)
    assert ax.get_xscale() == "log"
    assert np.allclose(ax.lines[0].get_ydata(), curve["ks_distance"])
    assert len(ax.lines) == 1 + 3
    for line, rule in zip(ax.lines[1:], ("ks", "peak", "median")):
        assert np.allclose(line.get_xdata(), fit_power_law(heavy_eigs, xmin=rule).xmin)
    # the KS rule sits at the minimum of the curve
    assert ax.lines[1].get_xdata()[0] == pytest.approx(curve.loc[curve.ks_distance.idxmin(), "xmin"])
    assert len(ax.figure.axes) == 2  # twin axis with alpha(xmin)
    assert np.allclose(ax.figure.axes[1].lines[0].get_ydata(), curve["alpha"])


def test_heatmap_holds_the_table_values(table):
    ax = plots.plot_alpha_heatmap(table)
    data = np.asarray(ax.images[0].get_array())
    assert data.shape == (5, 7)
    expected = table.set_index(["layer", "projection"])["alpha"]
    for layer in range(5):
        for j, kind in enumerate(PROJECTIONS):
            assert data[layer, j] == expected[(layer, kind)]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(PROJECTIONS)
    assert len(ax.figure.axes) == 2  # image + colour bar


def test_heatmap_robust_colour_range_does_not_change_values(table):
    spiky = table.copy()
    spiky.loc[0, "alpha"] = 50.0
    ax = plots.plot_alpha_heatmap(spiky, robust=True)
    image = ax.images[0]
    assert image.norm.vmax < 50.0
    assert np.asarray(image.get_array()).max() == 50.0


def test_alpha_by_kind_boxes_and_points(table):
    ax = plots.plot_alpha_by_kind(table)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(PROJECTIONS)
    points = ax.collections[0].get_offsets()
    assert len(points) == len(table)
    # points are grouped by kind around x = 1..7 with the table's values
    for i, kind in enumerate(PROJECTIONS):
        near = np.abs(points[:, 0] - (i + 1)) < 0.25
        assert np.allclose(np.sort(points[near, 1]), np.sort(table.loc[table.projection == kind, "alpha"]))


def test_alpha_by_depth_lines_and_block_mean(table):
    ax = plots.plot_alpha_by_depth(table)
    assert len(ax.lines) == 7 + 1
    mean_line = ax.lines[-1]
    assert mean_line.get_label() == "block mean"
    assert np.allclose(mean_line.get_ydata(), table.groupby("layer")["alpha"].mean())
    assert np.allclose(ax.lines[0].get_ydata(), table.loc[table.projection == "q", "alpha"])


def test_mean_alpha_by_kind_one_line_per_model(table):
    other = table.assign(alpha=table.alpha + 1.0)
    ax = plots.plot_mean_alpha_by_kind({"a": table, "b": other})
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    means = table.groupby("projection")["alpha"].mean().reindex(PROJECTIONS)
    assert np.allclose(ax.lines[0].get_ydata(), means)
    assert np.allclose(ax.lines[1].get_ydata(), means + 1.0)


def test_plot_mp_fit_draws_the_mp_law():
    shape = (800, 200)
    w = rmt.gaussian_matrix(*shape, seed=0)
    eigs = np.linalg.eigvalsh(w.T @ w) / max(shape)
    q = rmt.aspect_ratio(shape)
    ax = plots.plot_mp_fit(eigs, q, 1.0, bins=40)
    assert len(ax.patches) == 40
    x, y = ax.lines[0].get_data()
    assert np.allclose(y, rmt.mp_density(x, q, 1.0))
    lo, hi = rmt.mp_edges(q, 1.0)
    assert np.allclose(ax.lines[1].get_xdata(), lo) and np.allclose(ax.lines[2].get_xdata(), hi)
    area = sum(p.get_width() * p.get_height() for p in ax.patches)
    assert area == pytest.approx(1.0, rel=1e-9)


def test_esd_grid_has_one_panel_per_name(heavy_eigs):
    spectra = {f"m{i}": heavy_eigs * (i + 1) for i in range(5)}
    fig = plots.plot_esd_grid(spectra, list(spectra), ncols=3)
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 5
    assert [ax.get_title() for ax in visible] == list(spectra)


def test_alpha_scatter_matches_rows_by_name(table):
    other = table.sample(frac=1.0, random_state=0).assign(alpha=lambda t: t.alpha * 2)
    ax = plots.plot_alpha_scatter(table, other, labels=("ks", "peak"))
    assert len(ax.collections) == 7
    for coll, kind in zip(ax.collections, PROJECTIONS):
        xy = coll.get_offsets()
        assert np.allclose(xy[:, 1], 2 * xy[:, 0])
        assert np.allclose(np.sort(xy[:, 0]), np.sort(table.loc[table.projection == kind, "alpha"]))
    assert ax.get_xlabel() == "alpha (ks)" and ax.get_ylabel() == "alpha (peak)"


def test_mp_edge_stays_inside_the_axes_and_the_sweep_draws_theory():
    from acttail_lab.spectral import rmt

    eigs = np.linspace(0.01, 0.05, 200)  # every eigenvalue far below the MP upper edge of sigma2 = 1
    q = 0.4
    ax = plots.plot_mp_fit(eigs, q, 1.0, bins=20)
    assert ax.get_xlim()[1] > rmt.mp_edges(q, 1.0)[1]
    sweep = pd.DataFrame(dict(tail_index=[1.0, 1.5, 3.0], alpha=[1.6, 1.9, 9.0], n_tail=[100, 120, 12]))
    ax = plots.plot_tail_index_sweep(sweep)
    fitted, theory = ax.lines[:2]
    assert np.allclose(fitted.get_ydata(), sweep["alpha"]) and np.allclose(fitted.get_xdata(), sweep["tail_index"])
    assert np.allclose(theory.get_ydata(), 1 + theory.get_xdata() / 2) and theory.get_xdata().max() == 2.0
