"""Figures of notebooks 00, 01 and 10 hide no data and keep one meaning per colour.

- Axis limits: every plotted value lies inside the axes, or a marker drawn at the frame (``clip_on=False``) says
  that values lie beyond (e.g. the KS curve's alpha, which explodes for tiny tails).
- Colours: within one notebook, one colour names one thing (a projection kind, an xmin rule, a model, the ESD...);
  for the strategies of notebook 10, where a colour names a family (``plots.style``), no two labels share a
  (colour, marker, line style) triple. What an artist names is its ``gid`` when set, else its legend label up to
  the first ``:``, ``,``, ``=`` or ``(``.
"""
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.lines import Line2D

from acttail_lab import plots
from acttail_lab.core.models import PROJECTIONS
from acttail_lab.plots.alpha_summary import plot_alpha_depth_panels, plot_alpha_kind_dots
from acttail_lab.spectral import rmt


# --------------------------------------------------------------------------- helpers
def _line_values_beyond(ax) -> list:
    """(label, axis, value) of clipped Line2D data outside ``ax``'s limits."""
    out = []
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    for line in ax.lines:
        if not line.get_clip_on():
            continue
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if line.get_transform() != ax.transData or x.size != y.size:
            continue  # an axhline/axvline spans the axes in axes coordinates
        ok = np.isfinite(x) & np.isfinite(y)
        out += [(line.get_label(), "y", v) for v in y[ok & ((y < y0) | (y > y1))]]
        out += [(line.get_label(), "x", v) for v in x[ok & ((x < x0) | (x > x1))]]
    return out


def _frame_marks(ax) -> list:
    return [line for line in ax.lines if not line.get_clip_on() and line.get_marker() not in ("None", "", None)]


def _handle_color(handle) -> str:
    if isinstance(handle, ErrorbarContainer):
        handle = handle.lines[0]
    if isinstance(handle, BarContainer):
        handle = handle.patches[0]
    if isinstance(handle, Line2D):
        return to_hex(handle.get_color())
    if hasattr(handle, "get_facecolor"):
        color = handle.get_facecolor()
        return to_hex(color[0] if np.ndim(color) == 2 else color)
    raise TypeError(type(handle))


def _thing(handle, label: str) -> str:
    inner = handle.lines[0] if isinstance(handle, ErrorbarContainer) else handle
    gid = inner.get_gid() if hasattr(inner, "get_gid") else None
    return gid or re.split(r"[:,=(]", label)[0].strip()


def _named(figures) -> list[tuple[str, str, object]]:
    """(colour, thing, handle) of every labelled artist in the figures (legend shown or not)."""
    out = []
    for fig in figures:
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                out.append((_handle_color(handle), _thing(handle, label), handle))
    return out


def _one_thing_per_colour(figures) -> dict:
    seen: dict[str, set] = {}
    for color, thing, _ in _named(figures):
        seen.setdefault(color, set()).add(thing)
    return {c: t for c, t in seen.items() if len(t) > 1}


@pytest.fixture(scope="module")
def spectra_set():
    out = {}
    for name, mu, seed in (("clean", 1.5, 0), ("hard", 3.0, 1), ("gauss", None, 2)):
        w = rmt.gaussian_matrix(500, 200, seed=seed) if mu is None else rmt.heavy_tailed_matrix(500, 200, tail_index=mu, seed=seed)
        out[name] = np.linalg.eigvalsh(w.T @ w)
    return out


def _alpha_table(seed=0, spikes=True):
    rng = np.random.default_rng(seed)
    rows = [dict(layer=layer, projection=k, name=f"model.layers.{layer}.{k}", alpha=float(rng.uniform(2, 8)))
            for layer in range(12) for k in PROJECTIONS]
    table = pd.DataFrame(rows)
    if spikes:
        table.loc[(table.projection == "v") & (table.layer == 4), "alpha"] = 21.9
        table.loc[(table.projection == "up") & (table.layer == 0), "alpha"] = 22.1
    return table


# --------------------------------------------------------------------------- axis limits
def test_depth_panels_show_every_alpha_or_mark_it():
    table = _alpha_table()
    fig = plot_alpha_depth_panels(table)
    for ax in fig.axes:
        assert _line_values_beyond(ax) == []
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    o_panel = fig.axes[PROJECTIONS.index("o")]
    assert any(t.get_visible() and t.get_text() for t in o_panel.get_xticklabels()), "the o panel has no layer ticks"
    q_panel = fig.axes[PROJECTIONS.index("q")]  # a panel with another panel below keeps sharing its ticks
    assert not any(t.get_visible() and t.get_text() for t in q_panel.get_xticklabels())
    robust = plot_alpha_depth_panels(table, robust=True)
    v_panel = robust.axes[PROJECTIONS.index("v")]
    top = v_panel.get_ylim()[1]
    n_beyond = int((table.loc[table.projection == "v", "alpha"] > top).sum())
    assert n_beyond >= 1 and len(_frame_marks(v_panel)) == n_beyond


def test_ks_curve_keeps_every_rule_alpha_in_view(spectra_set):
    from acttail_lab.spectral.tails import fit_power_law

    eigs = spectra_set["hard"]
    ax = plots.plot_ks_curve(eigs, what="hard")
    twin = ax.figure.axes[-1]
    top = twin.get_ylim()[1]
    for rule in ("ks", "peak", "median"):
        assert fit_power_law(eigs, xmin=rule).alpha <= top
    curve = np.asarray(twin.lines[0].get_ydata(), float)
    if (curve > top).any():
        assert len(_frame_marks(twin)) == 1  # the triangle where alpha leaves the axis
    assert ax.get_title().startswith("hard\nKS minimum at xmin")


def test_mp_fit_shows_the_largest_eigenvalue_inside_the_frame(spectra_set):
    eigs = spectra_set["clean"] / 500
    q = rmt.aspect_ratio((500, 200))
    ax = plots.plot_mp_fit(eigs, q, rmt.mp_sigma2(eigs))
    assert ax.get_xlim()[1] > eigs.max() * 1.01
    assert max(p.get_x() + p.get_width() for p in ax.patches) < ax.get_xlim()[1]
    assert _line_values_beyond(ax) == []


def test_relative_perplexity_holds_every_point_and_interval():
    from acttail_lab.plots.cross_model import plot_relative_perplexity

    rows = []
    for s, (change, low, high) in {0.5: (-97.0, -97.5, -96.5), 0.7: (12375.0, 10000.0, 14000.0)}.items():
        for strategy in ("acttail", "rotated-uniform"):
            rows.append(dict(model="m", text="t", strategy=strategy, sparsity=s, change_pct=change, ci_low_pct=low,
                             ci_high_pct=high))
    ax = plot_relative_perplexity(pd.DataFrame(rows), "m", "t")
    y0, y1 = ax.get_ylim()
    assert y0 <= 1 - 0.975 and y1 >= 1 + 140.0
    assert all(line.get_linestyle() in ("None", "") for c in ax.containers for line in c.lines[:1])
    x = sorted(v for c in ax.containers for v in c.lines[0].get_xdata())
    # a categorical target axis: group i (ticked with target i) holds its strategies side by side
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "0.7"] and list(ax.get_xticks()) == [0, 1]
    assert -0.5 < x[0] and x[1] < 0.5 < x[2] and x[-1] < 1.5


# --------------------------------------------------------------------------- colours
def test_notebook_00_one_colour_one_thing(spectra_set):
    q = rmt.aspect_ratio((500, 200))
    sweep = pd.DataFrame(dict(tail_index=[1.0, 1.5, 2.0, 3.0], alpha=[1.6, 1.9, 2.9, 12.0], n_tail=[100, 120, 90, 12]))
    figures = [plots.plot_mp_fit(spectra_set["gauss"] / 500, q, 1.0).figure,
               plots.plot_esd(spectra_set["clean"], title="clean").figure,
               plots.plot_tail_index_sweep(sweep).figure,
               plots.plot_mp_fit(spectra_set["clean"] / 500, q, rmt.mp_sigma2(spectra_set["clean"] / 500)).figure,
               plots.plot_ks_curve(spectra_set["clean"]).figure, plots.plot_ks_curve(spectra_set["hard"]).figure]
    assert _one_thing_per_colour(figures) == {}


def test_notebook_01_one_colour_one_thing(spectra_set):
    from acttail_lab.core import reference

    table, peak = _alpha_table(0, spikes=False), _alpha_table(1, spikes=False)
    spec = {f"model.layers.0.{k}": spectra_set["clean"] * (i + 1) for i, k in enumerate(PROJECTIONS)}
    models = {"LLaMA-2-7B": table, "LLaMA-2-13B": peak, "LLaMA-2-70B": table, "SmolLM2-135M (ours)": peak}
    try:
        models["LLaMA-2-7B"] = reference.published_alphas("llama2-7b")
    except Exception:  # noqa: BLE001  (the reference files are optional here)
        pass
    figures = [plots.plot_esd_grid(spec, list(spec)), plots.plot_esd(spectra_set["hard"]).figure,
               plots.plot_ks_curve(spectra_set["hard"]).figure, plots.plot_ks_curve(spectra_set["clean"]).figure,
               plots.plot_alpha_heatmap(table).figure, plots.plot_alpha_by_kind(table).figure,
               plot_alpha_depth_panels(table), plots.plot_alpha_scatter(table, peak).figure,
               plot_alpha_kind_dots(models, colors="models").figure]
    assert _one_thing_per_colour(figures) == {}
    kinds = {thing for _, thing, _ in _named(figures)} & set(PROJECTIONS)
    assert kinds == set(PROJECTIONS)


def test_notebook_10_one_style_per_label():
    from acttail_lab.plots.cross_model import plot_cross_model, plot_headlines
    from acttail_lab.report import cross_model

    grids = cross_model.load_grids()
    if not grids:
        pytest.skip("no committed grids")
    table = cross_model.cross_model_table(grids, n_boot=50)
    from acttail_lab.plots.size import plot_size
    from acttail_lab.report import size

    sizes = size.size_table(size.load_size_grids(), n_boot=50)
    figures = [plot_cross_model(table)[0, 0].figure,
               plot_headlines(grids, ["uniform", "acttail", "acttail-ks", "acttail-block", "teal-greedy",
                                      "teal-greedy-fine"])[0, 0].figure,
               plot_size(sizes, size.claimed_points())[0].figure]
    triples: dict[tuple, set] = {}
    for fig in figures:
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                inner = handle.lines[0] if isinstance(handle, ErrorbarContainer) else handle
                if not isinstance(inner, Line2D):
                    continue
                key = (to_hex(inner.get_color()), inner.get_marker(), str(inner.get_linestyle()))
                triples.setdefault(key, set()).add(label)
    shared = {k: v for k, v in triples.items() if len(v) > 1}
    assert shared == {}, shared
