"""Plotly figures of the alpha -> sparsity explorer, built from an ``explorer.ExplorerView``.

Each view has a ``*_figure(view)`` builder returning a new ``go.Figure`` and an
``update_*(fig, view)`` function that rewrites the same traces in place. The
builders call the updaters, so a figure and a ``go.FigureWidget`` made from it
show exactly what a fresh build would; the widget calls the updaters inside
``fig.batch_update()`` so one control change sends one message per figure.

Trace layout (fixed, the updaters rely on it):
- mapping: [0] the curve, [1] the projections (points), [2] uniform's S (dashed line).
- heatmap: [0] the layer x projection sparsity matrix (colour scale fixed to [0, 1]).
- histogram: [0] projections per sparsity bin, [1] uniform's S (vertical line).
- uniform comparison: [0] / [1] sparsity by layer (allocation / uniform), left;
  [2] / [3] estimated relative output error by layer (allocation / uniform), right.

An invalid view (``view.message`` set) leaves the traces as they were: the
widget shows the message next to the last valid picture.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.models import PROJECTIONS
from .style import OTHER_KIND_COLOR, plotly_color_scale, plotly_kind_color, plotly_strategy_style

_UNIFORM = plotly_strategy_style("uniform")["line"]["color"]
_ALLOCATION = plotly_strategy_style("acttail")["line"]["color"]
_HEIGHT = 360
_WIDTH = 540  # fixed: two figures side by side fit a notebook column, and the widget never re-flows
_MARGIN = dict(l=55, r=20, t=50, b=45)


def _base(fig: go.Figure, title: str, **layout) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=_HEIGHT, width=_WIDTH, margin=_MARGIN,
                      template="plotly_white", **layout)
    return fig


# --------------------------------------------------------------------------- mapping curve
def mapping_figure(view) -> go.Figure:
    """Alpha -> sparsity: the mapping as a line, each projection as a point, uniform's S dashed."""
    fig = go.Figure([
        go.Scatter(mode="lines", name="mapping", line=dict(color=_ALLOCATION, width=2), hoverinfo="skip"),
        go.Scatter(mode="markers", name="projections",
                   marker=dict(size=6, opacity=0.8, colorscale=_kind_colorscale(), cmin=-0.5,
                               cmax=len(PROJECTIONS) + 0.5),
                   hovertemplate="%{text}<br>alpha %{x:.3f}<br>sparsity %{y:.3f}<extra></extra>"),
        go.Scatter(mode="lines", name="uniform", line=dict(color=_UNIFORM, dash="dash"), hoverinfo="skip"),
    ])
    _base(fig, "alpha -> sparsity", xaxis_title="alpha", yaxis_title="sparsity",
          yaxis_range=[0, 1], legend=dict(orientation="h", y=-0.2))
    return update_mapping(fig, view)


def update_mapping(fig: go.Figure, view) -> go.Figure:
    """Rewrite the mapping figure's traces from ``view`` (no-op for an invalid view)."""
    if not view.valid:
        return fig
    alloc, curve, s = view.allocation, view.curve, view.settings
    fig.data[0].x, fig.data[0].y = curve["alpha"].to_numpy(), curve["sparsity"].to_numpy()
    fig.data[1].x, fig.data[1].y = alloc["alpha_used"].to_numpy(), alloc["sparsity"].to_numpy()
    _set_identity(fig.data[1], alloc)
    lo, hi = float(curve["alpha"].min()), float(curve["alpha"].max())
    fig.data[2].x, fig.data[2].y = [lo, hi], [s.target, s.target]
    what = "layer-mean alpha" if s.granularity == "block" else "alpha"
    fig.layout.xaxis.title.text = f"{what} ({s.mapping} mapping, {s.direction})"
    fig.layout.title.text = f"alpha -> sparsity: S={s.target:.2f}, eps={s.epsilon:.2f}, s_max={s.s_max:.2f}"
    return fig


def _set_identity(trace, alloc) -> None:
    """Hover names and kind colours of the points, re-sent only when the projections change.

    Colours are kind indices on a discrete colour scale: numeric arrays are
    validated far faster by plotly than arrays of colour strings.
    """
    names = _names(alloc)
    key = f"{len(names)}:{names[0]}:{names[-1]}"
    if trace.meta == key:
        return
    order = {kind: i for i, kind in enumerate(PROJECTIONS)}
    trace.text = names
    trace.marker.color = alloc["projection"].map(order).fillna(len(PROJECTIONS)).to_numpy(dtype=float)
    trace.meta = key


def _kind_colorscale() -> list:
    """A step colour scale: kind index i (0..6, 7 = other) -> its colour."""
    colors = [plotly_kind_color(k) for k in PROJECTIONS] + [OTHER_KIND_COLOR]
    n = len(colors)
    return [[edge, color] for i, color in enumerate(colors) for edge in (i / n, (i + 1) / n)]


def _names(alloc) -> np.ndarray:
    if "name" in alloc.columns:
        return alloc["name"].astype(str).to_numpy()
    return (alloc["layer"].astype(str) + "." + alloc["projection"].astype(str)).to_numpy()


# --------------------------------------------------------------------------- heat map
def heatmap_figure(view) -> go.Figure:
    """Sparsity of every projection: layers down, projection kinds across, colour scale [0, 1]."""
    fig = go.Figure(go.Heatmap(**plotly_color_scale("sparsity"), colorbar=dict(title="sparsity"),
                               hovertemplate="layer %{y}, %{x}: %{z:.3f}<extra></extra>"))
    _base(fig, "sparsity per layer x projection", xaxis_title="projection", yaxis_title="layer",
          yaxis_autorange="reversed")
    return update_heatmap(fig, view)


def update_heatmap(fig: go.Figure, view) -> go.Figure:
    """Rewrite the heat map's matrix from ``view`` (no-op for an invalid view)."""
    if not view.valid:
        return fig
    heat = view.heatmap
    trace = fig.data[0]
    trace.z = heat.to_numpy()
    trace.x = list(heat.columns)
    trace.y = heat.index.to_numpy()
    s = view.settings
    fig.layout.title.text = f"sparsity per layer x projection ({len(view.allocation)} projections, S={s.target:.2f})"
    return fig


# --------------------------------------------------------------------------- histogram
def histogram_figure(view) -> go.Figure:
    """How many projections get each sparsity (bins of 0.025), with uniform's S as a vertical line."""
    fig = go.Figure([
        go.Bar(name="projections", marker_color=_ALLOCATION,
               hovertemplate="sparsity %{x:.3f}: %{y} projections<extra></extra>"),
        go.Scatter(mode="lines", name="uniform", line=dict(color=_UNIFORM, dash="dash"), hoverinfo="skip"),
    ])
    _base(fig, "histogram of budgets", xaxis_title="sparsity", yaxis_title="projections",
          xaxis_range=[0, 1], bargap=0.05, showlegend=False)
    return update_histogram(fig, view)


def update_histogram(fig: go.Figure, view) -> go.Figure:
    """Rewrite the histogram's bars and uniform line from ``view`` (no-op for an invalid view)."""
    if not view.valid:
        return fig
    hist = view.histogram
    left, right = hist["bin_left"].to_numpy(), hist["bin_right"].to_numpy()
    counts = hist["count"].to_numpy()
    fig.data[0].x, fig.data[0].y, fig.data[0].width = (left + right) / 2, counts, right - left
    s = view.settings.target
    fig.data[1].x, fig.data[1].y = [s, s], [0, int(counts.max()) if counts.size else 1]
    alloc = view.allocation["sparsity"]
    fig.layout.title.text = f"histogram of budgets: min {alloc.min():.3f}, max {alloc.max():.3f} (uniform: {s:.2f})"
    return fig


# --------------------------------------------------------------------------- side by side with uniform
def uniform_comparison_figure(view) -> go.Figure:
    """Left: parameter-weighted sparsity by layer; right: estimated relative output error by layer.

    Both for the current allocation and for uniform at the same S.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("sparsity by layer", "estimated error by layer"),
                        horizontal_spacing=0.12)
    styles = [("allocation", _ALLOCATION, None), ("uniform", _UNIFORM, "dash")]
    for col in (1, 2):
        for name, color, dash in styles:
            fig.add_trace(go.Scatter(mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                                     line=dict(color=color, dash=dash), marker=dict(size=4)), row=1, col=col)
    _base(fig, "side by side with uniform", legend=dict(orientation="h", y=-0.2))
    fig.update_layout(margin=dict(_MARGIN, t=85))  # room for the title above the subplot titles
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="sparsity", row=1, col=1)
    fig.update_yaxes(title_text="relative output error", row=1, col=2)
    return update_uniform_comparison(fig, view)


def update_uniform_comparison(fig: go.Figure, view) -> go.Figure:
    """Rewrite the four by-layer lines from ``view`` (no-op for an invalid view)."""
    if not view.valid:
        return fig
    by_layer = view.by_layer
    layers = by_layer["layer"].to_numpy()
    columns = ("sparsity", "uniform_sparsity", "cost", "uniform_cost")
    for trace, column in zip(fig.data, columns):
        trace.x = layers
        trace.y = by_layer[column].to_numpy() if column in by_layer.columns else np.full(len(layers), np.nan)
    fig.layout.title.text = "side by side with uniform: " + view.cost_text().split(" (")[0]
    return fig


FIGURES = {
    "mapping": (mapping_figure, update_mapping),
    "heatmap": (heatmap_figure, update_heatmap),
    "histogram": (histogram_figure, update_histogram),
    "uniform": (uniform_comparison_figure, update_uniform_comparison),
}
"""name -> (builder, updater) of every explorer figure."""
