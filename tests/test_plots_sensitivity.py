"""The sensitivity plot helpers draw what they claim: checked on the returned Axes / Figure."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from acttail_lab.core.models import PROJECTIONS
from acttail_lab.plots.esd import alpha_matrix
from acttail_lab.plots.sensitivity import (
    KIND_COLORS,
    correlation_matrix,
    plot_allocations_side_by_side,
    plot_correlation_table,
    plot_cost_curves,
    plot_metric_vs_sensitivity,
)
from acttail_lab.report.correlations import sensitivity_summary, spectral_correlations

LEVELS = (0.25, 0.5, 0.8)
N_LAYERS = 4


@pytest.fixture(scope="module")
def spectra():
    rng = np.random.default_rng(0)
    rows = [dict(layer=layer, projection=kind, name=f"model.layers.{layer}.{kind}", n_params=1000 * (i + 1),
                 alpha=2.0 + 0.3 * i + 0.1 * layer + rng.normal(0, 0.05), stable_rank=10.0 + i - layer,
                 lambda_max=5.0 + rng.uniform(), alpha_weighted=3.0 + rng.uniform(), xmin_rule="ks")
            for layer in range(N_LAYERS) for i, kind in enumerate(PROJECTIONS)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cost(spectra):
    """rel_error = s ** (2 / alpha): rises with alpha, so rho(alpha, error) = +1 at every level."""
    rows = [dict(layer=r.layer, projection=r.projection, name=r.name, n_params=r.n_params, sparsity=s,
                 rel_error=s ** (2.0 / r.alpha))
            for r in spectra.itertuples() for s in LEVELS]
    return pd.DataFrame(rows)


def test_cost_curves_all_projections_coloured_by_kind(cost):
    ax = plot_cost_curves(cost)
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    assert len(ax.lines) == len(PROJECTIONS) * N_LAYERS
    first = ax.lines[0]
    x, y = first.get_data()
    expected = cost[cost["name"] == "model.layers.0.q"].sort_values("sparsity")
    assert np.allclose(x, LEVELS) and np.allclose(y, expected["rel_error"])
    assert first.get_color() == KIND_COLORS["q"]
    assert ax.lines[6].get_color() == KIND_COLORS["down"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(PROJECTIONS)
    assert ax.get_yscale() == "log"


def test_cost_curves_named_subset_in_order_and_reused_ax(cost):
    fig = Figure()
    given = fig.add_subplot()
    names = ["model.layers.3.up", "model.layers.1.k"]
    ax = plot_cost_curves(cost, names=names, ax=given, logy=False)
    assert ax is given and len(ax.lines) == 2
    assert [line.get_label() for line in ax.lines] == names
    assert np.allclose(ax.lines[1].get_ydata(),
                       cost[cost["name"] == names[1]].sort_values("sparsity")["rel_error"])
    with pytest.raises(KeyError, match="no.such"):
        plot_cost_curves(cost, names=["no.such"])


def test_metric_vs_sensitivity_scatters_every_projection(spectra, cost):
    summary = sensitivity_summary(cost, at=(0.5, 0.8))
    ax = plot_metric_vs_sensitivity(spectra, summary, "alpha", 0.8)
    assert len(ax.collections) == len(PROJECTIONS)
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(points) == len(spectra)
    merged = spectra.merge(summary, on="name")
    assert sorted(points[:, 0]) == pytest.approx(sorted(merged["alpha"]))
    assert sorted(points[:, 1]) == pytest.approx(sorted(merged["rel_error@0.8"]))
    assert "rho = +1.00" in ax.get_title()  # the synthetic error rises with alpha
    rho = spearmanr(merged["stable_rank"], merged["rel_error@0.5"]).statistic
    ax2 = plot_metric_vs_sensitivity(spectra, summary, "stable_rank", "rel_error@0.5")
    assert f"{rho:+.2f}" in ax2.get_title()
    with pytest.raises(KeyError, match="rel_error@0.3"):
        plot_metric_vs_sensitivity(spectra, summary, "alpha", 0.3)


def test_correlation_table_shows_median_rho(spectra, cost):
    corr = spectral_correlations(spectra, cost, at=(0.5, 0.8))
    matrix = correlation_matrix(corr, ["rel_error@0.8"])
    assert list(matrix.columns) == ["rel_error@0.8 | all", "rel_error@0.8 | projection", "rel_error@0.8 | layer"]
    assert "alpha (ks)" in matrix.index and "stable_rank" in matrix.index
    assert matrix.loc["alpha (ks)", "rel_error@0.8 | all"] == pytest.approx(1.0)
    within_layer = corr[(corr.metric == "stable_rank") & (corr.group_by == "layer")
                        & (corr.sensitivity == "rel_error@0.8")]["rho"].median()
    assert matrix.loc["stable_rank", "rel_error@0.8 | layer"] == pytest.approx(within_layer)
    ax = plot_correlation_table(corr, sensitivities=["rel_error@0.8"])
    image = ax.images[0]
    assert np.allclose(image.get_array(), matrix.to_numpy(), equal_nan=True)
    assert image.get_clim() == (-1, 1)
    assert any(t.get_text() == "+1.00" for t in ax.texts)
    ticks = [t.get_text() for t in ax.get_xticklabels()]  # the table's grouping names, then what they mean
    assert [t.split("\n")[0] for t in ticks] == ["all", "projection", "layer"] and "within kind" in ticks[1]
    assert "rel_error@0.8" in [t.get_text() for t in ax.texts]  # the block label above the columns


def test_correlation_table_separates_every_sensitivity_block_with_a_dark_line(spectra, cost):
    corr = spectral_correlations(spectra, cost, at=(0.5, 0.8))
    ax = plot_correlation_table(corr, sensitivities=["rel_error@0.5", "rel_error@0.8"])
    assert [line.get_xdata()[0] for line in ax.lines] == [2.5]
    assert ax.lines[0].get_color() == "black"  # white vanished next to pale cells


def test_metric_vs_sensitivity_symlog_keeps_every_dot_inside(spectra, cost):
    summary = sensitivity_summary(cost, at=(0.8,)).assign(**{"rel_error@0.8": lambda d: d["rel_error@0.8"] - 0.3})
    ax = plot_metric_vs_sensitivity(spectra, summary, "alpha", 0.8, symlog=0.01)
    low, high = ax.get_ylim()
    y = summary["rel_error@0.8"]
    assert ax.get_yscale() == "symlog" and low < y.min() and high > y.max() * 1.5
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.bbox.x1 - 1  # beside the panel, not over the dots


def test_correlation_matrix_keeps_one_row_for_rule_free_metrics(spectra, cost):
    tables = {"ks": spectra, "peak": spectra.assign(alpha=spectra["alpha"][::-1].to_numpy(), xmin_rule="peak")}
    matrix = correlation_matrix(spectral_correlations(tables, cost), ["rel_error@0.5"], groupings=("all",))
    assert list(matrix.index).count("stable_rank") == 1
    assert {"alpha (ks)", "alpha (peak)"} <= set(matrix.index)
    assert matrix.loc["alpha (ks)"].iloc[0] != pytest.approx(matrix.loc["alpha (peak)"].iloc[0])
    assert list(matrix.index) == ["alpha (ks)", "alpha (peak)", "alpha_weighted (ks)", "alpha_weighted (peak)",
                                  "stable_rank", "lambda_max"]


def test_allocations_side_by_side_share_one_scale(spectra):
    uniform = spectra.assign(sparsity=0.5)
    ramp = spectra.assign(sparsity=0.2 + 0.1 * spectra["layer"])
    fig = plot_allocations_side_by_side({"uniform": uniform, "ramp": ramp})
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    assert np.allclose(panels[1].images[0].get_array(), alpha_matrix(ramp, "sparsity").to_numpy())
    # no common target: the fixed sparsity scale of plots.style
    assert panels[0].images[0].get_clim() == panels[1].images[0].get_clim() == (0.0, 1.0)
    assert panels[0].images[0].get_cmap().name == "magma_r"
    targeted = plot_allocations_side_by_side({"uniform": uniform.assign(target=0.5), "ramp": ramp.assign(target=0.5)})
    image = targeted.axes[1].images[0]  # a diverging scale, white at the common target, as in plots.perplexity
    assert image.get_clim() == (0.0, 1.0) and image.norm.vcenter == pytest.approx(0.5)
    fixed = plot_allocations_side_by_side({"uniform": uniform}, vmin=0.0, vmax=1.0)
    assert fixed.axes[0].images[0].get_clim() == (0.0, 1.0)
    mean = np.dot(ramp["sparsity"], ramp["n_params"]) / ramp["n_params"].sum()
    assert panels[1].get_title() == f"ramp\nmean {mean:.2f}"
    assert [t.get_text() for t in panels[0].get_xticklabels()] == list(PROJECTIONS)
    with pytest.raises(ValueError, match="No allocations"):
        plot_allocations_side_by_side({})
