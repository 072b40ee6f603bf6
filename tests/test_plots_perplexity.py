"""Perplexity / allocation figures draw the numbers of the tables they are given (checked on the Axes)."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from test_report_results import DENSE_PPL, PPL, make_runs

from acttail_lab.allocation import allocate, summary
from acttail_lab.core.models import PROJECTIONS
from acttail_lab.plots import alpha_matrix
from acttail_lab.plots import perplexity as pp
from acttail_lab.report import results


@pytest.fixture(scope="module")
def alpha_table():
    rng = np.random.default_rng(0)
    dims = dict(q=(64, 64), k=(16, 64), v=(16, 64), o=(64, 64), gate=(160, 64), up=(160, 64), down=(64, 160))
    rows = [dict(layer=layer, projection=kind, name=f"model.layers.{layer}.{kind}",
                 n_params=dims[kind][0] * dims[kind][1], alpha=float(np.exp(rng.normal(1.1, 0.35))))
            for layer in range(6) for kind in PROJECTIONS]
    return pd.DataFrame(rows)


def test_perplexity_plot_draws_one_line_per_strategy_with_the_table_values():
    runs = make_runs()
    order = list(runs.index[1:][::-1]) + [0]  # rows in no particular order: sparsities descending, dense last
    ax = pp.plot_perplexity_vs_sparsity(runs.loc[order], strategies=list(PPL))
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    assert len(ax.lines) == len(PPL) + 1  # strategies, then dense
    for line, (strategy, by_s) in zip(ax.lines, PPL.items()):
        assert line.get_label() == strategy
        assert np.allclose(line.get_xdata(), sorted(by_s))
        assert np.allclose(line.get_ydata(), [by_s[s] for s in sorted(by_s)])
    dense = ax.lines[-1]
    assert dense.get_label() == "dense" and np.allclose(dense.get_ydata(), DENSE_PPL)
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(PPL) + ["dense"]


def test_perplexity_plot_subset_order_no_dense_linear_and_given_ax():
    fig = Figure()
    given = fig.add_subplot()
    ax = pp.plot_perplexity_vs_sparsity(make_runs(), ax=given, strategies=["shuffled", "uniform"], dense=False,
                                        logy=False)
    assert ax is given and ax.get_yscale() == "linear"
    assert [line.get_label() for line in ax.lines] == ["shuffled", "uniform"]
    assert np.allclose(ax.lines[0].get_ydata(), [22.0, 44.0, 130.0])
    # styles come from the one registry, by name (not by position in the list)
    assert ax.lines[1].get_color() == pp.strategy_style("uniform")["color"]
    assert ax.lines[0].get_marker() == pp.strategy_style("shuffled")["marker"] != pp.strategy_style("uniform")["marker"]
    with pytest.raises(ValueError, match="teal-kind"):
        pp.plot_perplexity_vs_sparsity(make_runs(), strategies=["teal-kind"])


def test_relative_change_bars_equal_the_computed_changes():
    runs = make_runs()
    rel = results.relative_to_uniform(runs)
    ax = pp.plot_relative_change(runs)
    labels = [c.get_label() for c in ax.containers]
    assert labels == [s for s in PPL if s != "uniform"]
    for container, label in zip(ax.containers, labels):
        expected = rel[rel.label == label].sort_values("sparsity")["change_pct"].to_numpy()
        heights = np.array([bar.get_height() for bar in container])
        assert np.allclose(heights, expected)
    assert ax.containers[0][2].get_height() == pytest.approx(-21.8)  # acttail at 0.8
    # bars of one sparsity sit in one group, in strategy order
    xs = np.array([[bar.get_x() for bar in c] for c in ax.containers])
    assert (np.diff(xs, axis=0) > 0).all() and (xs.max(axis=0)[:-1] < xs.min(axis=0)[1:]).all()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "0.7", "0.8"]
    assert ax.get_yscale() == "linear"  # every |change| <= 100 %


def test_relative_change_accepts_its_table_and_goes_symlog_for_huge_changes():
    ppl = dict(PPL, acttail={0.5: 18.0, 0.7: 4000.0, 0.8: 78.2})
    rel = results.relative_to_uniform(make_runs(ppl=ppl))
    ax = pp.plot_relative_change(rel, strategies=["acttail"])
    assert len(ax.containers) == 1
    assert np.allclose([b.get_height() for b in ax.containers[0]], [-10.0, 9900.0, -21.8])
    assert ax.get_yscale() == "symlog"
    assert pp.plot_relative_change(rel, scale="linear").get_yscale() == "linear"


def test_sparsity_map_image_is_the_allocation_pivot(alpha_table):
    allocation = allocate(alpha_table, "acttail", 0.7)
    ax = pp.plot_sparsity_map(allocation)
    image = np.asarray(ax.images[0].get_array())
    expected = alpha_matrix(allocation, "sparsity").to_numpy()
    assert image.shape == (6, 7)
    assert np.array_equal(image, expected)
    assert image[2, PROJECTIONS.index("up")] == allocation.query("layer == 2 and projection == 'up'").sparsity.item()
    assert [t.get_text() for t in ax.get_xticklabels()] == list(PROJECTIONS)
    assert ax.get_title() == "acttail @ 0.7"
    assert ax.images[0].get_clim() == (0.0, 1.0)
    centred = pp.plot_sparsity_map(allocation, center=0.7, colorbar=False).images[0]
    assert centred.get_clim() == (0.0, 1.0) and centred.norm.vcenter == pytest.approx(0.7)  # white = the target
    assert np.allclose(centred.norm([0.0, 0.7, 1.0]), [0.0, 0.5, 1.0])
    uniform = pp.plot_sparsity_map(allocate(alpha_table, "uniform", 0.7), colorbar=False, title="u")
    assert np.allclose(uniform.images[0].get_array(), 0.7) and uniform.get_title() == "u"


def test_sparsity_maps_grid_has_one_panel_per_allocation(alpha_table):
    allocations = [allocate(alpha_table, s, 0.6) for s in ("uniform", "acttail", "acttail-block")]
    fig = pp.plot_sparsity_maps(allocations, ncols=2)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    for ax, allocation in zip(panels, allocations):
        assert np.array_equal(np.asarray(ax.images[0].get_array()), alpha_matrix(allocation, "sparsity").to_numpy())
    block = np.asarray(panels[2].images[0].get_array())
    assert np.allclose(block, block[:, :1])  # block granularity: one budget per layer
    # one diverging scale on [0, 1] with white at the common target
    for ax in panels:
        assert ax.images[0].get_clim() == (0.0, 1.0) and ax.images[0].norm.vcenter == pytest.approx(0.6)
        assert ax.images[0].get_cmap().name == "RdBu_r"
    fixed = pp.plot_sparsity_maps(allocations, center=None)
    assert fixed.axes[0].images[0].get_clim() == (0.0, 1.0)


def test_kind_budget_bars_equal_the_summary(alpha_table):
    budgets = pd.concat([summary(allocate(alpha_table, "acttail", 0.5, label="ActTail toy")),
                         results.teal_kind_budgets()], ignore_index=True)
    ax = pp.plot_kind_budgets(budgets)
    assert [c.get_label() for c in ax.containers] == ["ActTail toy", "TEAL (published)"]
    for container, label in zip(ax.containers, ["ActTail toy", "TEAL (published)"]):
        expected = budgets[budgets.label == label].set_index("projection").sparsity.reindex(PROJECTIONS)
        assert np.allclose([bar.get_height() for bar in container], expected.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(PROJECTIONS)
    target = [line for line in ax.lines if line.get_label() == "target 0.5"]
    assert len(target) == 1 and np.allclose(target[0].get_ydata(), 0.5)


def test_xmin_variants_are_styled_as_the_label_of_their_setting():
    ks, peak = pp.line_style("acttail (xmin=ks)"), pp.line_style("acttail (xmin=peak)")
    assert ks == pp.strategy_style("acttail-ks") and peak == pp.strategy_style("acttail")
    assert ks["color"] != peak["color"] and ks["linestyle"] == peak["linestyle"] == "-"  # one method, one line
    assert pp.strategy_style("my-own[eps=0.2]") == pp.strategy_style("my-own[eps=0.2]")  # deterministic fallback


def test_collapsed_points_are_marked_at_the_top_without_stretching_the_axis():
    runs = make_runs()
    limit = float(runs["perplexity"].max()) * 0.9  # the largest run counts as collapsed
    ax = pp.plot_perplexity_vs_sparsity(runs, collapse_at=limit)
    markers, proxy = ax.collections  # the points, and a neutral legend entry (no run's colour)
    assert len(proxy.get_offsets()) == 0 and "collapsed" in proxy.get_label()
    top = runs.loc[runs["perplexity"].idxmax()]
    assert np.allclose(markers.get_offsets()[:, 0], [top["sparsity"]])
    assert ax.get_ylim()[1] <= 2.0 * limit and ax.get_ylim()[1] > limit
    line = next(line for line in ax.lines if line.get_label() == top["strategy"])
    assert np.isclose(max(line.get_ydata()), top["perplexity"])  # the line keeps the exact value
    calm = pp.plot_perplexity_vs_sparsity(runs, collapse_at=10 * float(runs["perplexity"].max()))
    assert not calm.collections  # nothing collapsed: the axis is left alone


def test_change_heatmap_is_strategy_by_target():
    change = pd.DataFrame([[-20.0, 50.0], [100.0, 3600.0]], index=["a", "b"], columns=[0.5, 0.8])
    ax = pp.plot_change_heatmap(change, title="t")
    assert np.allclose(np.asarray(ax.images[0].get_array()), np.log2(1 + change.to_numpy() / 100))
    assert [t.get_text() for t in ax.texts] == ["-20%", "+50%", "+100%", "x37"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.get_title() == "t"
    noise = pd.DataFrame([[True], [False]], index=["a", "b"], columns=[0.5])  # missing cells: not marked
    marked = pp.plot_change_heatmap(change, noise=noise)
    assert [t.get_text() for t in marked.texts] == ["-20% ~", "+50%", "+100%", "x37"]
    gone = pd.DataFrame([[False, True]], index=["b"], columns=[0.5, 0.8])  # a collapsed run shows no number
    assert [t.get_text() for t in pp.plot_change_heatmap(change, collapsed=gone).texts][-1] == "collapsed"
