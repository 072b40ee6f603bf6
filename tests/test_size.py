"""report.size and plots.size: the answer as a function of model size, on hand-made grids (a third model with no
grid, a grid missing rows, collapsed runs), the parameter counts, and the registered `size` figure."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from acttail_lab.core.paths import RESULTS_DIR, result_path
from acttail_lab.report import size

from synthetic_grids import window_grid

N_WINDOWS = 16
TARGETS = (0.5, 0.7, 0.8)
COUNTS = {"m1": 100_000_000, "m2": 400_000_000, "m3": 2_000_000_000}


def _grid(shifts: dict, seed: int = 0, targets=TARGETS):
    return window_grid(shifts, N_WINDOWS, seed=seed, targets=targets, noise=0.002)


@pytest.fixture()
def grids():
    """m1 measured everywhere; m2 without teal-greedy-fine and without the 80% target; m3 has no grid."""
    runs, windows = _grid({"acttail": 0.1, "acttail-block": -0.05, "rotated-uniform": -0.5}, seed=1,
                          targets=(0.5, 0.7))
    return {("m1", "austen"): _grid({"acttail": 0.2, "acttail-block": -0.1, "teal-greedy-fine": -0.3,
                                     "rotated-uniform": -0.6}),
            ("m2", "austen"): (runs, windows)}


def _table(grids, **options):
    return size.size_table(grids, models=("m1", "m2", "m3"), parameters=COUNTS, n_boot=300, **options)


def test_parameter_counts_of_the_built_in_models():
    assert size.PARAMETERS == {"smollm2-135m": 134_515_008, "gemma3-270m": 268_098_176,
                               "qwen2.5-coder-1.5b": 1_543_714_304}
    assert set(size.PARAMETERS) >= set(size.SIZE_MODELS)
    assert size.size_text(134_515_008) == "135M" and size.size_text(1_543_714_304) == "1.5B"
    for model, shape in size.ARCHITECTURES.items():  # the projections' part agrees with the committed spectra
        path = result_path("spectra", model, RESULTS_DIR, rule="peak")
        if not path.exists():
            continue
        no_extras = dict(shape, qkv_bias=False, layer_norms=0, qk_norm=False, vocab=0)
        projections = size.parameter_count(**no_extras) - shape["hidden"]
        assert int(pd.read_csv(path)["n_params"].sum()) == projections


def test_table_reports_every_model_strategy_and_target_missing_ones_included(grids):
    table = _table(grids)
    assert list(table.columns) == list(size.SIZE_COLUMNS)
    assert len(table) == 3 * len(size.SIZE_STRATEGIES) * len(TARGETS)
    assert list(dict.fromkeys(table["model"])) == ["m1", "m2", "m3"]
    assert (table.groupby("model")["parameters"].first() == pd.Series(COUNTS)).all()
    m1 = table[table.model == "m1"]
    assert (m1["status"] == size.MEASURED).all()
    acttail = m1[m1.strategy == "acttail"]
    assert acttail["change_pct"].to_numpy() == pytest.approx(np.expm1(0.2) * 100, rel=1e-2)
    assert (acttail["verdict"] == "worse").all() and (m1[m1.strategy == "rotated-uniform"]["verdict"] == "better").all()
    m2 = table[table.model == "m2"].set_index(["strategy", "sparsity"])
    assert (m2.loc["teal-greedy-fine", "status"] == "no row").all()
    assert m2.loc[("acttail", 0.8), "status"] == "no row" and m2.loc[("acttail", 0.7), "status"] == size.MEASURED
    assert m2.loc[("acttail", 0.8), "verdict"] == size.MISSING and np.isnan(m2.loc[("acttail", 0.8), "change_pct"])
    m3 = table[table.model == "m3"]
    assert (m3["status"] == "no grid").all() and (m3["verdict"] == size.MISSING).all()
    assert m3["change_pct"].isna().all()
    assert size.unmeasured_models(table) == ["m3"]
    with pytest.raises(Exception, match="No parameter count"):
        size.size_table(grids, models=("m1", "m9"), parameters=COUNTS)


def test_collapsed_sides_follow_the_verdict_engine():
    runs, windows = _grid({"acttail": 0.2, "acttail-block": -0.1})
    runs = runs.assign(model="smollm2-135m")
    at = runs["sparsity"] == 0.8
    runs.loc[at & (runs.strategy == "acttail"), "perplexity"] = 20000.0  # >= a quarter of SmolLM2's 49,152
    runs.loc[at & (runs.strategy == "uniform"), "perplexity"] = 13000.0
    table = size.size_table({("smollm2-135m", "austen"): (runs, windows)}, models=("smollm2-135m",), n_boot=200)
    row = table.set_index(["strategy", "sparsity"])
    assert row.loc[("acttail", 0.8), "verdict"] == "not compared: collapsed"
    assert row.loc[("acttail-block", 0.8), "verdict"] == "better"  # only uniform collapsed
    assert size.size_wide(table).loc["acttail", ("smollm2-135m (135M)", 0.8)] == "collapsed"


def test_sentences_and_title_follow_the_numbers(grids):
    table = _table(grids)
    title = size.size_title(table)
    assert title.startswith("At 80%, acttail against uniform: +22% (100M), not yet measured (400M), "
                            "not yet measured (2B)")
    assert "claims -9% to -40% at 6.7B-13B" in title and title.endswith("not yet measured: m2 at 80%, m3.")
    guided = size.measured(table)[size.measured(table).strategy.isin(size.ALPHA_GUIDED)]
    assert f"in {int((guided.verdict == 'better').sum())} of {len(guided)} measured cells" in title
    lines = size.size_sentences(table)
    assert lines[0].endswith("not yet measured: m2 at 80%, m3.") and "m1 (100,000,000 parameters)" in lines[0]
    assert "m2 teal-greedy-fine at 50%" in lines[1] and "m2 acttail at 80%" in lines[1]
    acttail = next(line for line in lines if line.startswith("acttail:"))
    assert "better than uniform in 0 of 5 measured" in acttail
    assert "falls at every step up in size at 2 of 2 targets" in acttail
    assert lines[-1].endswith("gives no acttail row at 80%.")  # m2, the largest measured, lacks 80%
    assert not any("nan" in line.lower() for line in [title, *lines])
    shifted = {k: (r, w.assign(nll=w.nll + np.where(w.strategy == "acttail", -0.4, 0.0)))
               for k, (r, w) in grids.items()}
    assert size.size_title(_table(shifted)) != title  # the title is computed, not fixed


def _figure(grids):
    from acttail_lab.plots.size import plot_size

    table = _table(grids)
    return table, plot_size(table, size.claimed_points())


def test_figure_puts_each_point_at_its_parameter_count_on_a_log_axis(grids):
    from acttail_lab.plots.style import strategy_style

    table, axes = _figure(grids)
    assert len(axes) == 3 and [ax.get_title() for ax in axes] == ["target 50%", "target 70%", "target 80%"]
    for ax, target in zip(axes, TARGETS):
        assert ax.get_xscale() == "log"
        bars = {c.get_label(): c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)}
        rows = size.measured(table)
        rows = rows[rows.sparsity == target]
        for name, line in bars.items():
            mine = rows[rows.strategy == name].sort_values("parameters")
            assert list(line.get_xdata()) == list(mine["parameters"].astype(float))  # exactly, no sideways offset
            assert np.allclose(line.get_ydata(), mine["change_pct"])
            assert line.get_color() == strategy_style(name)["color"]
        y0, y1 = ax.get_ylim()
        assert y0 <= rows["ci_low_pct"].min() and y1 >= rows["ci_high_pct"].max()
        missing = [line for line in ax.lines if line.get_gid() == "m3"]
        assert len(missing) == 1 and missing[0].get_xdata()[0] == COUNTS["m3"]
    claims = [line for ax in axes for line in ax.lines if line.get_gid() == "ActTail abstract"]
    assert len(claims) == 1 and claims[0].axes is axes[2]
    assert sorted(claims[0].get_xdata()) == sorted(size.CLAIMED_PARAMETERS.values())
    at_80 = {c.get_label(): len(c.lines[0].get_xdata()) for c in axes[2].containers}
    assert at_80["teal-greedy-fine"] == 1
    assert [ln.get_gid() for ln in axes[2].lines if ln.get_gid() in COUNTS] == ["m2", "m3"]  # not yet measured at 80%


def test_figure_has_one_legend_outside_the_axes_and_a_computed_title(grids):
    table, axes = _figure(grids)
    fig = axes[0].figure
    assert fig._suptitle.get_text().replace("\n", " ") == size.size_title(table)
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.legends[0].get_window_extent(renderer)
    assert all(not box.overlaps(ax.get_window_extent(renderer)) for ax in axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"acttail", "rotated-uniform", "uniform", "not yet measured"} <= set(labels)


def test_make_figures_builds_the_size_figure_from_a_results_folder(tmp_path):
    from acttail_lab.plots import figures

    assert "size" in figures.FIGURES and figures.FIGURES["size"][2] == "10_is_the_answer_general"
    for model, seed in (("smollm2-135m", 0), ("gemma3-270m", 1)):
        runs, windows = _grid({"acttail": 0.05, "teal-greedy-fine": -0.2}, seed=seed)
        runs.assign(model=model).to_csv(result_path("perplexity", model, tmp_path), index=False)
        windows.to_csv(result_path("perplexity_windows", model, tmp_path), index=False)
    (png,) = figures.write_figures(tmp_path / "figures", results_dir=tmp_path, names=["size"])
    assert png.exists() and (tmp_path / "figures" / "size.json").exists()
    title = figures.build("size", tmp_path)._suptitle.get_text().replace("\n", " ")
    assert "not yet measured: qwen2.5-coder-1.5b" in title and "(135M)" in title


def test_notebook_10_reads_every_built_in_model_and_states_each_grid_size(grids):
    from acttail_lab.core.builtin_models import BUILTIN_MODELS
    from acttail_lab.plots import figures
    from acttail_lab.report import cross_model

    assert cross_model.MODELS == tuple(BUILTIN_MODELS) == size.SIZE_MODELS
    sentence = cross_model.evaluation_size_sentence(cross_model.grid_summary(grids))
    assert sentence.startswith("Evaluation sizes: m1/austen 8,176 tokens in 16 windows; m2/austen 8,176 tokens in 16")
    assert [figures._count(n, "model") for n in (1, 3, 12)] == ["one model", "three models", "12 models"]
