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

The widget shows all four as panels of ONE figure (:func:`explorer_figure`, the heat map's trace
first): every plotly ``FigureWidget`` carries plotly's whole 5 MB script in a notebook's saved
widget state, so one widget means one copy. :func:`panels` gives each panel as a figure-like
object (``.data``, ``.layout.title``, ``.layout.xaxis``) that the updaters above rewrite in place.

Colours: the mapping line is grey and drawn under the projection dots (which carry the kind
colours); the histogram bars are grey; uniform is the dark grey dashed line; the allocation by
layer takes ActTail's style (it is an ActTail allocation).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.models import PROJECTIONS
from .style import GREY, OTHER_KIND_COLOR, plotly_color_scale, plotly_kind_color, plotly_strategy_style

_UNIFORM = plotly_strategy_style("uniform")["line"]["color"]
_ALLOCATION = plotly_strategy_style("acttail")["line"]["color"]
_MAPPING = GREY  # the mapping line and the histogram: neutral, so no kind colour means two things
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
        go.Scatter(mode="lines", name="mapping", line=dict(color=_MAPPING, width=1.5), hoverinfo="skip"),
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
        go.Bar(name="projections", marker_color=_MAPPING,
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


# --------------------------------------------------------------------------- all four in one figure
_PANEL_ORDER = ("heatmap", "mapping", "histogram", "uniform")
"""Order of the panels' traces in :func:`explorer_figure` (the heat map's matrix is ``data[0]``)."""
_CELLS = {"mapping": [(1, 1)], "heatmap": [(1, 2)], "histogram": [(1, 3)], "uniform": [(2, 1), (2, 3)]}
_TITLES = ("alpha -> sparsity", "sparsity per layer x projection", "histogram of budgets",
           "sparsity by layer", "estimated error by layer")
_AXES = {"mapping": ("xaxis", "yaxis"), "heatmap": ("xaxis2", "yaxis2"), "histogram": ("xaxis3", "yaxis3"),
         "by_layer": ("xaxis4", "yaxis4"), "error": ("xaxis5", "yaxis5")}
EXPLORER_WIDTH, EXPLORER_HEIGHT = 1120, 760


class _PanelLayout:
    """What an updater reads of ``fig.layout``: the panel's ``title`` (an object with ``.text``) and ``xaxis``."""

    def __init__(self, title, xaxis):
        self.title, self.xaxis = title, xaxis


class Panel:
    """One panel of :func:`explorer_figure` seen as the figure its updater expects.

    ``data``: the panel's traces (a slice of the whole figure's, same order as the panel's own
    builder); ``layout.title``: its subplot title (the uniform panel: the whole figure's title);
    ``layout.xaxis``: its x axis. Setting a property writes into the whole figure (a FigureWidget
    sends it to the browser).
    """

    def __init__(self, figure: go.Figure, start: int, stop: int, title, xaxis):
        self.figure, self._slice = figure, slice(start, stop)
        self.layout = _PanelLayout(title, xaxis)

    @property
    def data(self) -> tuple:
        return self.figure.data[self._slice]


def _panel_traces(view) -> dict[str, list]:
    return {name: list(FIGURES[name][0](view).data) for name in _PANEL_ORDER}


def explorer_figure(view) -> go.Figure:
    """The four explorer figures as panels of one figure (mapping, heat map, histogram on top; sparsity and
    estimated error by layer below), each panel's traces as its own builder makes them, the heat map's
    first. Use :func:`panels` and :data:`FIGURES`' updaters to redraw it in place. An invalid view (a
    widget started on an impossible setting) gives empty panels titled with its message; the next valid
    view fills them."""
    fig = make_subplots(rows=2, cols=3, specs=[[{}, {}, {}], [{"colspan": 2}, None, {}]],
                        subplot_titles=_TITLES, horizontal_spacing=0.12, vertical_spacing=0.16)
    for name, traces in _panel_traces(view).items():
        cells = _CELLS[name]
        for i, trace in enumerate(traces):
            row, col = cells[0] if len(cells) == 1 else cells[i // 2]
            fig.add_trace(trace, row=row, col=col)
    fig.update_layout(height=EXPLORER_HEIGHT, width=EXPLORER_WIDTH, template="plotly_white",
                      margin=dict(l=55, r=20, t=80, b=100), legend=dict(orientation="h", y=-0.13, x=0),
                      title=dict(font=dict(size=14)), bargap=0.05)
    fig.update_annotations(font_size=11)  # the panels' titles carry numbers: small enough not to meet a neighbour's
    heat_domain = fig.layout.xaxis2.domain
    fig.update_traces(selector=dict(type="heatmap"),
                      colorbar=dict(title="sparsity", x=heat_domain[1] + 0.005, len=0.42, y=0.79, thickness=12))
    for trace in fig.data:  # one legend entry per meaning: uniform once, mapping and projections once
        trace.showlegend = trace.type == "scatter" and trace.name in ("mapping", "projections") or (
            trace.name in ("allocation", "uniform") and trace.legendgroup == trace.name and trace.xaxis == "x4")
    fig.update_yaxes(range=[0, 1], title_text="sparsity", row=1, col=1)
    fig.update_xaxes(title_text="projection", row=1, col=2)
    fig.update_yaxes(autorange="reversed", title_text="layer", row=1, col=2)
    fig.update_xaxes(range=[0, 1], title_text="sparsity", row=1, col=3)
    fig.update_yaxes(title_text="projections", row=1, col=3)
    fig.update_xaxes(title_text="layer", row=2, col=1)
    fig.update_xaxes(title_text="layer", row=2, col=3)
    fig.update_yaxes(title_text="sparsity", row=2, col=1)
    fig.update_yaxes(title_text="relative output error", row=2, col=3)
    for name, panel in panels(fig).items():
        FIGURES[name][1](panel, view)
    if not view.valid:
        fig.layout.title.text = f"Impossible setting: {view.message}"
    return fig


def panels(fig: go.Figure) -> dict[str, Panel]:
    """name -> :class:`Panel` of a figure made by :func:`explorer_figure` (also a FigureWidget of one)."""
    out, start = {}, 0
    titles = fig.layout.annotations
    sizes = {"heatmap": 1, "mapping": 3, "histogram": 2, "uniform": 4}
    title_of = {"mapping": titles[0], "heatmap": titles[1], "histogram": titles[2], "uniform": fig.layout.title}
    for name in _PANEL_ORDER:
        xaxis = fig.layout[_AXES[name if name != "uniform" else "by_layer"][0]]
        out[name] = Panel(fig, start, start + sizes[name], title_of[name], xaxis)
        start += sizes[name]
    return out
