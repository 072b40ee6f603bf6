"""The alpha -> sparsity explorer: the plain state, the plotly figures, and every widget callback.

ipywidgets swallows exceptions raised inside callbacks (and so nbmake cannot
see them): here each callback is driven by setting the control's value, and
the figures and texts are compared with what the state computes.
"""
import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

from acttail_lab.allocation import allocate, weighted_mean
from acttail_lab.allocation.cost_model import estimate_cost
from acttail_lab.core.errors import AllocationError, ModelNotFoundError
from acttail_lab.core.models import PROJECTIONS
from acttail_lab.report import explorer as ex
from acttail_lab.report import explorer_costs, explorer_sources
from acttail_lab.report.explorer import ExplorerSettings, ExplorerState
from acttail_lab.report.explorer_costs import rank_agreement, strategy_costs
from acttail_lab.report.explorer_sources import AlphaSource

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def synthetic_table(n_layers=5, seed=0, prefix="model.layers"):
    """Projection table with uneven sizes and lognormal alphas (alpha rises with depth on average)."""
    rng = np.random.default_rng(seed)
    dims = dict(q=(64, 64), k=(16, 64), v=(16, 64), o=(64, 64), gate=(160, 64), up=(160, 64), down=(64, 160))
    rows = [dict(layer=layer, projection=kind, name=f"{prefix}.{layer}.{kind}", d_out=dims[kind][0],
                 d_in=dims[kind][1], n_params=dims[kind][0] * dims[kind][1],
                 alpha=float(np.exp(rng.normal(1.0 + 0.05 * layer, 0.3))))
            for layer in range(n_layers) for kind in PROJECTIONS]
    return pd.DataFrame(rows)


def synthetic_cost(table):
    """Cost table: rel_error = s * 1.5 / alpha_i, so a high-alpha projection tolerates sparsity better.

    Being linear in s, any shift of sparsity towards high alpha lowers the
    parameter-weighted cost (weighted Chebyshev inequality): alpha_up < uniform < alpha_down.
    """
    k = 1.5 / table["alpha"].to_numpy()
    rows = [dict(layer=r.layer, projection=r.projection, name=r.name, n_params=r.n_params, sparsity=s,
                 rel_error=float(s * k[i]))
            for i, r in enumerate(table.itertuples()) for s in LEVELS]
    return pd.DataFrame(rows)


@pytest.fixture()
def tables():
    return {rule: synthetic_table(seed=i) for i, rule in enumerate(explorer_sources.XMIN_RULES)}


@pytest.fixture()
def state(tables):
    model = AlphaSource("toy", tables, cost=synthetic_cost(tables["ks"]), model="toy")
    published = AlphaSource.published("llama2-7b")
    return ExplorerState({"toy": model, published.name: published})


def heat_from(allocation):
    return allocation.pivot(index="layer", columns="projection", values="sparsity")[
        [k for k in PROJECTIONS if k in set(allocation["projection"])]]


# --------------------------------------------------------------------------- the plain state
def test_initial_view_is_acttail_allocation_at_default_settings(state, tables):
    view = state.view
    assert view.valid and view.message == ""
    from acttail_lab.allocation.options import DEFAULT_XMIN

    assert state.settings.xmin == DEFAULT_XMIN == "peak"  # the acttail preset's rule
    expected = allocate(tables[DEFAULT_XMIN], "acttail", 0.5, epsilon=0.3, granularity="projection",
                        direction="alpha_up", mapping="linear", s_max=0.99)
    np.testing.assert_allclose(view.allocation["sparsity"], expected["sparsity"], rtol=0, atol=1e-15)
    assert abs(weighted_mean(view.allocation["sparsity"], view.allocation["n_params"]) - 0.5) < 1e-9
    np.testing.assert_array_equal(view.heatmap.to_numpy(), heat_from(view.allocation).to_numpy())
    assert list(view.heatmap.columns) == list(PROJECTIONS) and list(view.heatmap.index) == list(range(5))


def test_update_changes_settings_and_view(state, tables):
    view = state.update(target=0.7, epsilon=0.1, xmin="peak")
    assert state.settings.target == 0.7 and state.settings.epsilon == 0.1 and state.view is view
    expected = allocate(tables["peak"], "acttail", 0.7, epsilon=0.1)
    np.testing.assert_allclose(view.allocation["sparsity"], expected["sparsity"], atol=1e-15)
    spread = view.allocation["sparsity"].max() / view.allocation["sparsity"].min()
    assert spread <= (1.1 / 0.9) + 1e-9  # eps=0.1: ratios in [0.9, 1.1]


def test_update_rejects_unknown_setting_names(state):
    with pytest.raises(TypeError, match="Unknown explorer setting"):
        state.update(targett=0.3)


def test_impossible_target_gives_a_message_not_an_exception(state):
    view = state.update(target=0.9, s_max=0.6)
    assert not view.valid and view.allocation is None and math.isnan(view.cost)
    assert "cannot be met" in view.message and "s_max" in view.message
    assert "impossible" in view.cost_text()
    assert state.update(s_max=0.95).valid  # the same state recovers


def test_cost_matches_sensitivity_estimate_cost(state, tables):
    cost = synthetic_cost(tables["ks"])
    for changes in (dict(target=0.4), dict(target=0.8, direction="alpha_down"), dict(granularity="block")):
        view = state.update(**changes)
        assert view.cost == pytest.approx(estimate_cost(view.allocation, cost), rel=1e-12)
        uniform = allocate(tables["ks"], "uniform", state.settings.target)
        assert view.uniform_cost == pytest.approx(estimate_cost(uniform, cost), rel=1e-12)
        by_layer = view.by_layer
        weights = view.allocation.groupby("layer")["n_params"].sum().to_numpy()
        assert np.dot(weights, by_layer["cost"]) / weights.sum() == pytest.approx(view.cost, rel=1e-12)
        assert np.dot(weights, by_layer["uniform_cost"]) / weights.sum() == pytest.approx(view.uniform_cost)


def test_alpha_up_beats_uniform_and_alpha_down_loses_when_cost_follows_alpha(state):
    """The synthetic costs make high-alpha projections tolerant, so the estimate must prefer alpha_up."""
    up = state.update(target=0.6, direction="alpha_up")
    down = state.update(direction="alpha_down")
    assert up.cost < up.uniform_cost < down.cost
    assert up.cost_ratio == pytest.approx(up.cost / up.uniform_cost)


@pytest.mark.parametrize("mapping", ["linear", "power", "log", "rank"])
def test_mapping_curve_passes_through_the_points(state, mapping):
    view = state.update(mapping=mapping, target=0.6, epsilon=0.5)
    alloc, curve = view.allocation, view.curve
    assert np.all(np.diff(curve["alpha"]) >= 0)
    on_curve = np.interp(alloc["alpha_used"], curve["alpha"], curve["sparsity"])
    tolerance = 1e-9 if mapping in ("linear", "rank") else 2e-3  # curved mappings: linear interpolation
    np.testing.assert_allclose(on_curve, alloc["sparsity"], atol=tolerance)


def test_curve_respects_s_max_clipping(state):
    view = state.update(target=0.9, epsilon=0.9, s_max=0.95)
    assert view.valid and view.allocation["sparsity"].max() == pytest.approx(0.95)
    assert view.curve["sparsity"].max() <= 0.95 + 1e-12
    np.testing.assert_allclose(np.interp(view.allocation["alpha_used"], view.curve["alpha"], view.curve["sparsity"]),
                               view.allocation["sparsity"], atol=1e-9)


def test_block_granularity_gives_one_sparsity_per_layer(state, tables):
    view = state.update(granularity="block", target=0.5)
    heat = view.heatmap.to_numpy()
    np.testing.assert_allclose(heat, heat[:, :1].repeat(heat.shape[1], axis=1), atol=1e-12)
    table = tables[state.settings.xmin]
    means = table.groupby("layer")["alpha"].mean()
    np.testing.assert_allclose(view.allocation["alpha_used"], table["layer"].map(means), rtol=1e-12)


def test_direction_flips_the_relation_between_alpha_and_sparsity(state):
    up = state.update(direction="alpha_up").allocation
    down = state.update(direction="alpha_down").allocation
    assert np.corrcoef(up["alpha"], up["sparsity"])[0, 1] > 0.99
    assert np.corrcoef(down["alpha"], down["sparsity"])[0, 1] < -0.99


def test_histogram_counts_every_projection(state):
    view = state.update(target=0.45, epsilon=0.4)
    hist = view.histogram
    assert hist["count"].sum() == len(view.allocation) == 35
    expected, _ = np.histogram(view.allocation["sparsity"], ex.HIST_EDGES)
    np.testing.assert_array_equal(hist["count"], expected)
    assert hist["bin_left"].iloc[0] == 0 and hist["bin_right"].iloc[-1] == 1


def test_published_source_has_a_fixed_rule_and_no_cost(state):
    view = state.update(source="published:llama2-7b", xmin="median")
    assert view.valid and view.heatmap.shape == (32, 7)
    assert state.rule_for() == "peak" and "xmin control does not apply" in view.note
    assert math.isnan(view.cost) and "no cost table" in view.cost_text()
    assert "uniform_cost" not in view.by_layer


def test_unknown_source_and_failing_loader_give_messages(tables):
    def broken(rule):
        raise ModelNotFoundError("no spectra here. Fix: run analyze.")

    state = ExplorerState({"toy": AlphaSource("toy", tables), "broken": AlphaSource("broken", broken)})
    assert state.update(source="broken").message == "no spectra here. Fix: run analyze."
    assert "Unknown alpha source" in state.update(source="nope").message
    assert state.update(source="toy").valid


def test_cost_table_of_another_model_is_refused_with_a_note(tables):
    other = synthetic_cost(synthetic_table(prefix="other.layers"))
    state = ExplorerState([AlphaSource("toy", tables, cost=other)])
    assert state.view.valid and "does not cover" in state.view.note and math.isnan(state.view.cost)


def test_failing_cost_loader_leaves_alphas_usable(tables):
    def no_cost():
        raise ModelNotFoundError("no cost table. Fix: commit it.")

    view = ExplorerState([AlphaSource("toy", tables, cost=no_cost)]).view
    assert view.valid and "No cost estimate: no cost table" in view.note and math.isnan(view.cost)


def test_every_slider_bound_combination_is_valid_or_a_message(state):
    from acttail_lab.widgets.explorer import SLIDER_BOUNDS

    extremes = {name: (low, high) for name, (low, high, _) in SLIDER_BOUNDS.items()}
    combos = itertools.product(*extremes.values(), explorer_sources.XMIN_RULES[:1], ("linear", "rank", "power", "log"),
                               ("projection", "block"), ("alpha_up", "alpha_down"))
    n_invalid = 0
    for target, eps, power, s_max, xmin, mapping, gran, direction in combos:
        view = state.update(target=target, epsilon=eps, power=power, s_max=s_max, xmin=xmin, mapping=mapping,
                            granularity=gran, direction=direction)
        if not view.valid:
            assert "cannot be met" in view.message, view.message
            assert target > s_max
            n_invalid += 1
        else:
            assert view.allocation["sparsity"].max() <= s_max + 1e-12
    assert n_invalid == 64  # target 0.95 with s_max 0.5, in each of the 2*2*4*2*2 other combinations


# --------------------------------------------------------------------------- perplexity
class FakeEvaluator:
    def __init__(self, windows=3):
        self.windows, self.calls = windows, []

    def __call__(self, state, allocation, progress):
        self.calls.append(allocation)
        for i in range(self.windows):
            progress(i + 1, self.windows)
        return dict(perplexity=10.0 + len(self.calls), n_tokens=768, protocol="all", seconds=0.1)


def test_evaluate_perplexity_appends_one_row_per_call(state):
    fake = FakeEvaluator()
    state.evaluator = fake
    seen = []
    state.update(target=0.6)
    state.evaluate_perplexity(progress=lambda done, total: seen.append((done, total)))
    state.update(epsilon=0.2)
    results = state.evaluate_perplexity(progress=lambda *a: None)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert list(results["perplexity"]) == [11.0, 12.0] and list(results["epsilon"]) == [0.3, 0.2]
    assert results["estimated_cost"].iloc[1] == pytest.approx(state.view.cost)
    assert results["xmin"].iloc[0] == state.settings.xmin == "peak" and results["target"].iloc[0] == 0.6
    assert fake.calls[1] is not fake.calls[0]


def test_evaluate_perplexity_refuses_an_impossible_setting(state):
    state.evaluator = FakeEvaluator()
    state.update(target=0.9, s_max=0.5)
    with pytest.raises(AllocationError, match="Nothing to evaluate"):
        state.evaluate_perplexity()


def test_slice_perplexity_equals_one_call_on_all_windows(tiny_model, monkeypatch):
    """Window-by-window evaluation (for the progress bar) gives the same number as one call."""
    import torch

    from acttail_lab.core.models import LoadedModel, projection_table
    from acttail_lab.measure.perplexity import perplexity

    table = projection_table(tiny_model)
    table["alpha"] = np.linspace(2.0, 5.0, len(table))
    loaded = LoadedModel(model=tiny_model, tokenizer=None, name="tiny", source="random")
    windows = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(explorer_costs, "_loaded_model", lambda name: loaded)
    monkeypatch.setattr(explorer_costs.SlicePerplexity, "windows", lambda self, lm: windows)
    state = ExplorerState([AlphaSource("tiny", {"ks": table}, model="tiny")], ExplorerSettings(source="tiny", xmin="ks"),
                          evaluator=explorer_costs.SlicePerplexity())
    state.update(target=0.5)
    steps = []
    results = state.evaluate_perplexity(progress=lambda done, total: steps.append(done))
    whole = perplexity(tiny_model, windows, allocation=state.view.allocation, progress=False)
    assert steps == [1, 2, 3]
    assert results["perplexity"].iloc[0] == pytest.approx(whole.perplexity, rel=1e-5)
    assert results["n_tokens"].iloc[0] == whole.tokens == 3 * 31
    assert results["realised_sparsity"].iloc[0] == pytest.approx(0.5, abs=0.02)


def test_slice_perplexity_refuses_published_alphas(state):
    state.evaluator = explorer_costs.SlicePerplexity()
    state.update(source="published:llama2-7b")
    with pytest.raises(ModelNotFoundError, match="no model to run"):
        state.evaluate_perplexity()


# --------------------------------------------------------------------------- estimate vs measured perplexity
def test_rank_agreement_exact_values():
    frame = pd.DataFrame({
        "strategy": list("abcde") * 2,
        "sparsity": [0.5] * 5 + [0.8] * 5,
        "estimated_cost": [1, 2, 3, 4, 5, 1, 2, 3, 4, 5],
        "perplexity": [10, 11, 12, 13, 14, 30, 29, 28, 26, 27],
    })
    out = rank_agreement(frame).set_index("sparsity")
    assert out.loc[0.5, "spearman_rho"] == pytest.approx(1.0)
    assert out.loc[0.5, "kendall_tau"] == pytest.approx(1.0)
    # d = (4, 2, 0, -3, -3) ranks apart in total: rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6*38/120
    assert out.loc[0.8, "spearman_rho"] == pytest.approx(1 - 6 * 38 / 120)
    assert out.loc[0.8, "n"] == 5 and out.loc[0.5, "strategies"] == "a, b, c, d, e"
    assert out.loc[0.8, "strategies"] == "d, e, c, b, a"


def test_rank_agreement_needs_three_distinct_values():
    frame = pd.DataFrame({"strategy": ["a", "b"], "sparsity": [0.5, 0.5], "estimated_cost": [1.0, 2.0],
                          "perplexity": [3.0, 4.0]})
    row = rank_agreement(frame).iloc[0]
    assert row["n"] == 2 and math.isnan(row["spearman_rho"])


def test_strategy_costs_estimates_each_run_and_drops_dense(tables):
    cost = synthetic_cost(tables["ks"])
    runs = pd.DataFrame({
        "strategy": ["dense", "uniform", "acttail", "acttail-rev", "acttail-block", "acttail"],
        "sparsity": [0.0, 0.6, 0.6, 0.6, 0.6, 0.6],
        "perplexity": [20.0, 30.0, 28.0, 35.0, 29.0, 27.0],
        "xmin_rule": [None, None, "ks", "ks", "ks", "peak"],
    })
    out = strategy_costs(runs, tables, cost)
    assert list(out["strategy"]) == ["uniform", "acttail", "acttail-rev", "acttail-block", "acttail"]
    for row in out.itertuples():
        rule = row.xmin_rule if isinstance(row.xmin_rule, str) else "ks"  # None/NaN: no alphas needed
        expected = estimate_cost(allocate(tables[rule], row.strategy, row.sparsity), cost)
        assert row.estimated_cost == pytest.approx(expected, rel=1e-12)
    assert out["estimated_cost"].iloc[1] != out["estimated_cost"].iloc[4]  # peak vs ks alphas
    agreement = rank_agreement(out.iloc[:4])
    assert agreement["spearman_rho"].iloc[0] == pytest.approx(1.0)  # synthetic costs order them as "measured"


def test_strategy_costs_passes_measured_inputs_and_lists_what_it_leaves_out(tables):
    """surrogate-optimal / hybrid get the cost table and teal-greedy the greedy path; a path made with other
    settings, a rotated run and dense are listed with the reason instead of silently dropped."""
    from acttail_lab.allocation.cost_solvers import optimal_allocation

    cost = synthetic_cost(tables["ks"])
    runs = pd.DataFrame({
        "strategy": ["dense", "uniform", "surrogate-optimal", "hybrid", "rotated-uniform", "teal-greedy-fine"],
        "sparsity": [0.0, 0.6, 0.6, 0.6, 0.6, 0.6], "perplexity": [20.0, 30.0, 26.0, 27.0, 25.0, 24.0],
        "method": [None, "topk", "topk", "topk", "rotated", "topk"],
    })
    path = pd.DataFrame({"layer": [0], "projection": ["q"], "name": ["x"], "n_params": [1], "block_target": [0.0],
                         "sparsity": [0.0], "block_error": [0.0]})
    path.attrs["provenance"] = {"settings": {"s_max": 0.99}}  # no "steps": a block-step path
    out = strategy_costs(runs, tables, cost, inputs={"cost": cost, "greedy_path": path})
    assert list(out["strategy"]) == ["uniform", "surrogate-optimal", "hybrid"]
    expected = estimate_cost(optimal_allocation(cost, 0.6), cost)
    assert out["estimated_cost"].iloc[1] == pytest.approx(expected, rel=1e-9)
    left = out.attrs["left_out"].set_index("strategy")["reason"]
    assert list(left.index) == ["dense", "rotated-uniform", "teal-greedy-fine"]
    assert "rotated" in left["rotated-uniform"] and "steps=fine" in left["teal-greedy-fine"]
    bare = strategy_costs(runs, tables, cost).attrs["left_out"].set_index("strategy")["reason"]
    assert "cost table" in bare["surrogate-optimal"] or "cost" in bare["surrogate-optimal"]
    text = explorer_costs.left_out_sentence(out.attrs["left_out"])
    assert text.startswith("Left out of the comparison: dense (") and "teal-greedy-fine at 0.6" in text


def test_rank_agreement_gives_a_fisher_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(size=18)
    frame = pd.DataFrame({"strategy": list("abcdefghijklmnopqr"), "sparsity": 0.5, "estimated_cost": x,
                          "perplexity": x + rng.normal(scale=1.0, size=18)})
    row = rank_agreement(frame).iloc[0]
    z, half = math.atanh(row["spearman_rho"]), 1.959963984540054 * math.sqrt(1.06 / 15)
    assert row["rho_low"] == pytest.approx(math.tanh(z - half)) and row["rho_high"] == pytest.approx(math.tanh(z + half))
    assert row["rho_low"] < row["spearman_rho"] < row["rho_high"]


# --------------------------------------------------------------------------- committed data (real model)
@pytest.mark.real
def test_committed_inputs_load_and_estimate_ranks_measured_perplexity():
    model = ex.DEFAULT_MODEL
    paths = [explorer_sources.spectra_csv_path(model, r) for r in explorer_sources.XMIN_RULES] + [explorer_sources.cost_csv_path(model)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"committed explorer inputs not there yet: {missing}")
    state = ExplorerState(explorer_sources.default_sources(compute=False))
    assert state.view.valid and len(state.view.allocation) == 210 and np.isfinite(state.view.cost)
    runs_path = explorer_sources.perplexity_csv_path(model)
    if not runs_path.exists():
        pytest.skip(f"{runs_path} not there yet: no measured perplexity to rank against")
    source = state.sources[model]
    out = rank_agreement(strategy_costs(pd.read_csv(runs_path), source.table, source.curves()))
    assert (out["n"] >= 3).all()
    print(out.to_string())


# --------------------------------------------------------------------------- the widget callbacks
@pytest.fixture()
def widget(state):
    from acttail_lab.widgets.explorer import ExplorerWidget

    w = ExplorerWidget(state)
    yield w
    assert w.errors == [], "\n".join(w.errors)


def assert_figures_show(w, view):
    """The FigureWidgets hold exactly the view's numbers."""
    np.testing.assert_array_equal(np.asarray(w.figures["heatmap"].data[0].z), view.heatmap.to_numpy())
    mapping = w.figures["mapping"].data
    np.testing.assert_array_equal(mapping[1].x, view.allocation["alpha_used"])
    np.testing.assert_array_equal(mapping[1].y, view.allocation["sparsity"])
    np.testing.assert_array_equal(mapping[0].y, view.curve["sparsity"])
    np.testing.assert_array_equal(w.figures["histogram"].data[0].y, view.histogram["count"])
    uniform = w.figures["uniform"].data
    np.testing.assert_array_equal(uniform[0].y, view.by_layer["sparsity"])
    np.testing.assert_array_equal(uniform[1].y, view.by_layer["uniform_sparsity"])
    if "cost" in view.by_layer:
        np.testing.assert_array_equal(uniform[2].y, view.by_layer["cost"])
    assert f'data-cost="{view.cost!r}"' in w.cost.value or math.isnan(view.cost)


@pytest.mark.parametrize("name, value", [
    ("target", 0.73), ("epsilon", 0.12), ("s_max", 0.55), ("mapping", "rank"), ("granularity", "block"),
    ("direction", "alpha_down"), ("xmin", "median"), ("power", 3.0),
])
def test_each_control_updates_state_and_redraws(widget, name, value):
    before = np.asarray(widget.figures["heatmap"].data[0].z).copy()
    if name == "power":
        widget.controls["mapping"].value = "power"
        before = np.asarray(widget.figures["heatmap"].data[0].z).copy()
    widget.controls[name].value = value
    assert getattr(widget.state.settings, name) == value
    view = widget.state.view
    assert view.valid
    assert_figures_show(widget, view)
    assert not np.array_equal(before, view.heatmap.to_numpy())
    assert widget.message.value == ""


def test_source_control_switches_to_published_and_disables_xmin(widget):
    assert not widget.controls["xmin"].disabled
    widget.controls["xmin"].value = "ks"  # not the published alphas' rule: the page says it does not apply
    widget.controls["source"].value = "published:llama2-7b"
    assert widget.state.settings.source == "published:llama2-7b"
    assert widget.controls["xmin"].disabled
    assert np.asarray(widget.figures["heatmap"].data[0].z).shape == (32, 7)
    assert "no cost table" in widget.cost.value and "xmin rule" in widget.message.value
    assert_figures_show(widget, widget.state.view)
    widget.controls["source"].value = "toy"
    assert not widget.controls["xmin"].disabled and widget.message.value == ""


def test_mapping_control_enables_power_only_for_power(widget):
    assert widget.controls["power"].disabled
    widget.controls["mapping"].value = "power"
    assert not widget.controls["power"].disabled
    widget.controls["mapping"].value = "log"
    assert widget.controls["power"].disabled


def test_impossible_setting_shows_message_and_keeps_last_picture(widget):
    widget.controls["target"].value = 0.9
    shown = np.asarray(widget.figures["heatmap"].data[0].z).copy()
    widget.controls["s_max"].value = 0.6
    assert "Impossible setting" in widget.message.value and "cannot be met" in widget.message.value
    assert 'data-valid="0"' in widget.cost.value
    np.testing.assert_array_equal(np.asarray(widget.figures["heatmap"].data[0].z), shown)
    widget.controls["s_max"].value = 0.95
    assert widget.message.value == "" and widget.state.view.valid
    assert_figures_show(widget, widget.state.view)


def test_sliders_are_bounded_to_valid_options(widget):
    from acttail_lab.widgets.explorer import SLIDER_BOUNDS

    for name, (low, high, step) in SLIDER_BOUNDS.items():
        slider = widget.controls[name]
        assert (slider.min, slider.max, slider.step) == (low, high, step)
        slider.value = high + 1  # ipywidgets clamps: the state never sees an out-of-range value
        assert slider.value == high and getattr(widget.state.settings, name) == high
    assert widget.controls["epsilon"].max < 1 and widget.controls["target"].max < 1
    assert 0 < widget.controls["s_max"].min and widget.controls["s_max"].max < 1


def test_evaluate_button_runs_progress_and_fills_results(widget):
    fake = FakeEvaluator(windows=4)
    widget.state.evaluator = fake
    widget.controls["target"].value = 0.6
    widget.button.click()
    assert widget.progress.value == widget.progress.max == 4 and widget.progress.bar_style == "success"
    assert not widget.button.disabled
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", widget.results.value, flags=re.S)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in rows]
    header, first = cells[0], dict(zip(cells[0], cells[1]))
    assert len(cells) == 2 and header[:3] == ["source", "xmin", "target"]
    assert first["perplexity"] == "11" and first["target"] == "0.6" and first["source"] == "toy"
    widget.button.click()
    assert widget.results.value.count("<tr") == 3 and len(widget.state.results) == 2


def test_evaluate_button_shows_expected_errors_and_records_bugs(widget):
    widget.controls["source"].value = "published:llama2-7b"
    widget.state.evaluator = explorer_costs.SlicePerplexity()
    widget.button.click()
    assert "no model to run" in widget.message.value and widget.progress.bar_style == "danger"
    assert widget.errors == [] and not widget.button.disabled

    def broken(state, allocation, progress):
        raise RuntimeError("boom")

    widget.state.evaluator = broken
    widget.button.click()
    assert "RuntimeError: boom" in widget.message.value
    assert len(widget.errors) == 1 and "boom" in widget.errors[0]
    widget.errors.clear()


def test_change_callback_records_unexpected_errors(widget, monkeypatch):
    def broken(**changes):
        raise RuntimeError("update failed")

    monkeypatch.setattr(widget.state, "update", broken)
    widget.controls["epsilon"].value = 0.5
    assert "RuntimeError: update failed" in widget.message.value
    assert len(widget.errors) == 1
    widget.errors.clear()


def test_layout_has_every_part(widget):
    import ipywidgets as widgets

    box = widget.widget()
    assert isinstance(box, widgets.VBox)
    for name, control in widget.controls.items():
        assert f"acttail-{name}" in control._dom_classes
    assert widget.figure in box.children  # one FigureWidget: one copy of plotly's script in a saved notebook
    for name in widget.figures:
        assert f"acttail-{name}" in widget.figure._dom_classes
    assert widget.figure.data[0].type == "heatmap"  # what tests/test_browser.py reads as data[0].z


def test_figure_builders_equal_in_place_updates(state):
    """A figure built for a view equals one built for another view and then updated to it."""
    from acttail_lab.plots.explorer import FIGURES

    first = state.update(target=0.3)
    second = state.update(target=0.7, mapping="rank", granularity="block")
    for name, (build, update) in FIGURES.items():
        fresh = build(second).to_plotly_json()
        updated = update(build(first), second).to_plotly_json()
        assert _plain(fresh["data"]) == _plain(updated["data"]), name


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj.item() if isinstance(obj, np.generic) else obj


def test_one_figure_holds_every_panel_and_redraws_like_a_fresh_build(state):
    """The widget's single figure: each panel's traces are its own builder's, and updating the panels in
    place gives what a fresh build of the new view gives."""
    from acttail_lab.plots.explorer import FIGURES, explorer_figure, panels

    first = state.update(target=0.3)
    second = state.update(target=0.7, mapping="rank", granularity="block")
    fig = explorer_figure(first)
    assert fig.data[0].type == "heatmap" and len(fig.data) == sum(len(b(first).data) for b, _ in FIGURES.values())
    for name, panel in panels(fig).items():
        assert _plain([t.to_plotly_json().get("y") for t in panel.data]) == _plain(
            [t.to_plotly_json().get("y") for t in FIGURES[name][0](first).data]), name
        FIGURES[name][1](panel, second)
    assert _plain(fig.to_plotly_json()["data"]) == _plain(explorer_figure(second).to_plotly_json()["data"])
    assert "S=0.70" in fig.layout.annotations[0].text and "estimated cost" in fig.layout.title.text
    empty = explorer_figure(state.update(target=0.95, s_max=0.5))  # a widget may start on an impossible setting
    assert "Impossible setting" in empty.layout.title.text and empty.data[0].z is None


@pytest.mark.parametrize("changes", [dict(target=0.5, epsilon=0.3), dict(target=0.9, epsilon=0.9, s_max=0.95)])
def test_spread_explains_the_budget_range(state, changes):
    """Budgets are c x [1 - eps, 1 + eps] with c solved for S (not S +- eps); clipping is counted."""
    view = state.update(**changes)
    d = ex.spread(view)
    alloc = view.allocation
    free = alloc["sparsity"] < view.settings.s_max - 1e-12
    np.testing.assert_allclose(alloc.loc[free, "sparsity"], d["scale"] * alloc.loc[free, "ratio"], rtol=1e-9)
    assert d["low"] == alloc["sparsity"].min() and d["high"] == alloc["sparsity"].max()
    assert d["n_clipped"] == int((~free).sum())
    text = ex.spread_sentence(view)
    assert f"c = {d['scale']:.2f}" in text and f"{d['low']:.2f}-{d['high']:.2f}" in text
    assert ("hit s_max" in text) == (d["n_clipped"] > 0)


def test_widget_starts_on_an_impossible_setting_and_recovers(tables):
    from acttail_lab.widgets.explorer import ExplorerWidget

    model = AlphaSource("toy", tables, cost=synthetic_cost(tables["ks"]), model="toy")
    state = ExplorerState({"toy": model}, ExplorerSettings(target=0.95, s_max=0.5))
    w = ExplorerWidget(state)
    assert "Impossible setting" in w.message.value and w.figure.data[0].z is None
    w.controls["target"].value = 0.4
    assert w.state.view.valid and w.errors == []
    assert_figures_show(w, w.state.view)
