"""One visual language: every helper draws a strategy / projection kind in the colour of plots.style,
looked up by name (checked on the drawn artists and plotly traces, not on the registry alone)."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from test_explorer import state, synthetic_cost, synthetic_table, tables  # noqa: F401  (fixtures)
from test_plots_speed import make_decode
from test_report_results import make_runs

from acttail_lab.core.models import PROJECTIONS
from acttail_lab.plots import depth, esd, explorer, perplexity, related, sensitivity, speed, style

NAMED = ("acttail-block", "acttail-ks", "teal-greedy", "teal-greedy-fine", "wina", "acttail+wina", "rotated-uniform",
         "dense", "uniform", "surrogate-optimal", "hybrid", "shuffled", "acttail-rev", "acttail")


def hexes(colors):
    return [to_hex(c, keep_alpha=False).lower() for c in colors]


def color_of(name):
    return style.strategy_style(name)["color"].lower()


# --------------------------------------------------------------------------- the registry
def test_named_strategies_have_explicit_distinct_colour_blind_safe_styles():
    styles = {name: style.strategy_style(name) for name in NAMED}
    assert all(name in style.STRATEGY_STYLES for name in NAMED)
    assert len({tuple(s.values()) for s in styles.values()}) == len(NAMED)
    every = [tuple(s.values()) for s in style.STRATEGY_STYLES.values()]
    assert len(set(every)) == len(every)
    assert styles["hybrid"]["color"] != styles["teal-greedy"]["color"]
    assert styles["hybrid"]["marker"] != styles["teal-greedy"]["marker"]
    palette = set(style.OKABE_ITO.values()) | {style.GREY, style.DARK_GREY} | set(style.TOL.values())
    assert {s["color"] for s in style.STRATEGY_STYLES.values()} <= palette
    assert set(style.KIND_COLORS.values()) <= palette and len(set(style.KIND_COLORS.values())) == len(PROJECTIONS)
    assert set(styles["uniform"]) == {"color", "marker", "linestyle"}


def test_unknown_names_get_a_deterministic_fallback_by_name_not_position():
    a, b = style.strategy_style("my-own-strategy"), style.strategy_style("my-own-strategy")
    assert a == b and a["color"] in set(style.OKABE_ITO.values()) | {style.GREY}
    assert len({style.strategy_style(f"s{i}")["color"] for i in range(40)}) > 3
    assert style.strategy_style("acttail (xmin=peak)")["color"].lower() == color_of("acttail")
    assert style.strategy_style("acttail-block[eps=0.2]")["color"].lower() == color_of("acttail-block")
    assert style.strategy_style("acttail-block[eps=0.2;xmin=ks]")["color"].lower() == color_of("acttail-ks")
    assert style.kind_color("lm_head") == style.OTHER_KIND_COLOR


def test_plotly_styles_use_the_same_hex_colours():
    for name in NAMED:
        p = style.plotly_strategy_style(name)
        assert p["line"]["color"] == p["marker"]["color"] == style.strategy_style(name)["color"]
    assert style.plotly_strategy_style("rotated-uniform")["line"]["dash"] == "dash"
    assert style.plotly_strategy_style("surrogate-optimal")["line"]["dash"] == "solid"  # TopK
    assert [style.plotly_kind_color(k) for k in PROJECTIONS] == [style.kind_color(k) for k in PROJECTIONS]
    assert style.plotly_color_scale("sparsity") == dict(colorscale="Magma_r", zmin=0.0, zmax=1.0)
    assert style.color_scale("alpha")["vmin"] < style.color_scale("alpha")["vmax"]
    with pytest.raises(KeyError, match="COLOR_SCALES"):
        style.color_scale("temperature")


def _committed_labels():
    import glob

    from acttail_lab.report.labels import row_labels

    grids = {}
    for path in sorted(glob.glob(str(style.__file__).replace("acttail_lab/plots/style.py", "data/results/*.csv"))):
        table = pd.read_csv(path)
        if "strategy" in table.columns:
            grids[path.rsplit("/", 1)[-1]] = list(dict.fromkeys(row_labels(table)))
    return grids


def test_no_two_labels_of_one_figure_share_a_colour_marker_line_triple():
    from acttail_lab.allocation.presets import STRATEGY_PRESETS

    grids = _committed_labels()
    assert "perplexity_related_smollm2-135m.csv" in grids
    for name, labels in grids.items():  # every committed grid is drawn in one figure somewhere
        assert style.shared_styles(labels) == {}, name
    every = set(STRATEGY_PRESETS) | set(style.STRATEGY_STYLES) | {x for labels in grids.values() for x in labels}
    assert style.shared_styles(every) == {}
    # uniform and rotated-uniform (both grey circles before) differ in colour, marker and line
    a, b = style.strategy_style("uniform"), style.strategy_style("rotated-uniform")
    assert a["color"] != b["color"] and a["marker"] != b["marker"] or a["linestyle"] != b["linestyle"]
    assert a["color"] != b["color"]
    # the peak and KS versions of one variant differ in colour
    for peak in ("acttail", "acttail-block", "acttail[fit=block-mean]", "acttail-farms", "shuffled", "acttail-rev"):
        ks = "acttail-ks" if peak == "acttail" else f"{peak[:-1]};xmin=ks]" if peak.endswith("]") else f"{peak}[xmin=ks]"
        assert style.strategy_style(peak)["color"] != style.strategy_style(ks)["color"], peak
    with pytest.raises(ValueError, match="share"):  # two labels drawn alike are caught
        style.check_distinct(["uniform", "uniform (xmin=ks)"])
    style.check_distinct(["acttail-ks", "acttail[xmin=ks]"])  # one setting, two spellings: one style, allowed


def test_one_method_one_line_style():
    from acttail_lab.allocation.presets import STRATEGY_PRESETS

    by_method = {}
    for label, spec in STRATEGY_PRESETS.items():
        by_method.setdefault(spec.method, set()).add(str(style.strategy_style(label)["linestyle"]))
    for label in style.STRATEGY_STYLES:
        method = style._method_of(label)
        if method is not None:
            by_method.setdefault(method, set()).add(str(style.strategy_style(label)["linestyle"]))
    assert all(len(v) == 1 for v in by_method.values()), by_method
    assert len({next(iter(v)) for v in by_method.values()}) == len(by_method)  # and methods differ
    assert {"topk", "rotated", "wina", "threshold"} <= set(by_method)


# --------------------------------------------------------------------------- strategies in every helper
def test_a_strategy_has_one_colour_in_every_matplotlib_helper():
    runs = make_runs()
    ppl = perplexity.plot_perplexity_vs_sparsity(runs)
    drawn = {line.get_label(): to_hex(line.get_color()) for line in ppl.lines}
    rel = perplexity.plot_relative_change(runs)
    drawn_bars = {c.get_label(): to_hex(c.patches[0].get_facecolor(), keep_alpha=False) for c in rel.containers}
    decode = make_decode()
    dec = speed.plot_decode_speedup(decode, modes=["topk"])
    tps = speed.plot_tokens_per_s(decode)
    seen = {"uniform": [], "acttail": [], "dense": []}
    for name in seen:
        if name in drawn:
            seen[name].append(drawn[name])
        if name in drawn_bars:
            seen[name].append(drawn_bars[name])
        for ax in (dec, tps):
            seen[name] += [to_hex(line.get_color()) for line in ax.lines
                           if line.get_label() in (name, f"{name} (topk)")]
    long = pd.DataFrame([dict(condition=c, strategy=s, target=t, layer=layer, var_out=1.0 + layer)
                         for c, s, t in (("dense", "dense", 0.0), ("uniform@0.5", "uniform", 0.5),
                                         ("acttail@0.5", "acttail", 0.5)) for layer in range(4)])
    prof = depth.plot_variance_profiles(long)
    for line in prof.lines:
        seen[line.get_label().split("@")[0]].append(to_hex(line.get_color()))
    for name, colors in seen.items():
        assert len(colors) >= 3, (name, colors)
        assert {c.lower() for c in colors} == {color_of(name)}, (name, colors)
    others = [label for label in drawn if label not in seen]
    assert others and all(drawn[label].lower() == color_of(label) for label in others)


def test_the_explorer_draws_uniform_and_kinds_in_the_registry_colours(state):  # noqa: F811
    view = state.update(target=0.6)
    mapping = explorer.mapping_figure(view)
    assert mapping.data[2].line.color.lower() == color_of("uniform")
    hist = explorer.histogram_figure(view)
    assert hist.data[1].line.color.lower() == color_of("uniform")
    comparison = explorer.uniform_comparison_figure(view)
    assert comparison.data[1].line.color.lower() == color_of("uniform")
    # the points' colour scale maps kind index i to kind i's colour
    steps = [color.lower() for _, color in mapping.data[1].marker.colorscale]
    for i, kind in enumerate(PROJECTIONS):  # two stops per kind (a step scale)
        assert steps[2 * i] == steps[2 * i + 1] == style.kind_color(kind).lower()
    heat = explorer.heatmap_figure(view).data[0]
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)


# --------------------------------------------------------------------------- kinds in every helper
def test_a_projection_kind_has_one_colour_in_every_helper(tables):  # noqa: F811
    table = tables["ks"]
    cost = synthetic_cost(table)
    found = {k: [] for k in PROJECTIONS}
    curves = sensitivity.plot_cost_curves(cost)
    for handle in curves.get_legend().legend_handles:
        found[handle.get_label()].append(to_hex(handle.get_color()))
    by_depth = esd.plot_alpha_by_depth(table)
    for line in by_depth.lines:
        if line.get_label() in found:
            found[line.get_label()].append(to_hex(line.get_color()))
    scatter = esd.plot_alpha_scatter(table, synthetic_table(seed=3))
    for coll in scatter.collections:
        found[coll.get_label()].append(hexes(coll.get_facecolor())[0])
    box = esd.plot_alpha_by_kind(table)
    dots = hexes(box.collections[-1].get_facecolor())
    for kind, color in zip(table["projection"].sort_values(key=lambda s: s.map(PROJECTIONS.index), kind="stable"),
                           dots):
        found[kind].append(color)
    for kind, colors in found.items():
        assert len(colors) >= 4 and set(colors) == {style.kind_color(kind).lower()}, (kind, set(colors))


def test_active_set_sites_take_their_kind_colour():
    rows = [dict(site=site, layer=layer, sparsity=0.5, token_hit=0.6, layer_hit=0.4, token_hit_chance=0.5)
            for site in ("mlp_in", "down") for layer in range(3)]
    ax = related.plot_active_set_overlap(pd.DataFrame(rows), 0.5)
    colors = {line.get_label(): to_hex(line.get_color()) for line in ax.lines}
    assert colors["down: next token"].lower() == style.kind_color("down").lower()
    assert colors["mlp_in: next layer"].lower() == style.kind_color("gate").lower()


def test_sparsity_maps_in_02_and_07_share_one_colour_scale():
    rng = np.random.default_rng(0)
    alloc = pd.DataFrame([dict(layer=layer, projection=k, n_params=100, sparsity=float(rng.uniform(0.3, 0.7)),
                               target=0.5) for layer in range(4) for k in PROJECTIONS])
    maps = perplexity.plot_sparsity_maps([alloc], ncols=1)
    side = sensitivity.plot_allocations_side_by_side({"a": alloc})
    assert maps.axes[0].images[0].get_clim() == pytest.approx(side.axes[0].images[0].get_clim())
    assert maps.axes[0].images[0].norm.vcenter == side.axes[0].images[0].norm.vcenter == 0.5
    assert maps.axes[0].images[0].get_cmap().name == side.axes[0].images[0].get_cmap().name
    plain = perplexity.plot_sparsity_map(alloc, colorbar=False)
    assert plain.images[0].get_cmap().name == style.color_scale("sparsity")["cmap"]


def test_legend_helpers_put_the_legend_outside_the_axes():
    from matplotlib.figure import Figure

    from acttail_lab.plots.style import legend_below, legend_beside

    for place in (legend_beside, legend_below):
        fig = Figure(figsize=(4, 3))
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], label="a line")
        legend = place(ax, frameon=True)
        fig.canvas.draw()
        box, axes = legend.get_window_extent(), ax.get_window_extent()
        assert box.x0 >= axes.x1 - 1 or box.y1 <= axes.y0 + 1, place.__name__  # right of or below the axes
        assert legend.get_frame_on() and legend.get_texts()[0].get_text() == "a line"
