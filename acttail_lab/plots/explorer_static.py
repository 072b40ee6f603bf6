"""A static (matplotlib) rendering of one view of the alpha -> sparsity explorer.

The live explorer (``widgets.explorer``) draws plotly figures that exist only in a running
kernel; this figure shows the same view as an image, so an exported notebook, the project
page and a reader without a kernel see it too. Input: an ``report.explorer.ExplorerView``.
Colours follow ``plots.style`` (kinds, uniform, the sparsity colour scale); the mapping line and the
histogram are a neutral grey (the dots carry the kind colours, the by-layer line ActTail's style), and
the mapping line lies under the dots.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..core.models import PROJECTIONS
from .style import GREY, color_scale, kind_color, legend_below, strategy_style

_ACTTAIL = strategy_style("acttail")
_UNIFORM = strategy_style("uniform")["color"]
_NEUTRAL = GREY


def plot_explorer_view(view) -> Figure:
    """Four panels of ``view``: the alpha -> sparsity mapping with every projection as a dot
    (coloured by kind), the layer x kind sparsity map, the histogram of budgets, and the
    parameter-weighted sparsity by layer beside uniform's. The title gives the settings and the
    estimated cost against uniform's.

    Returns a new Figure; its axes in that order, then the colour bar. Raises ValueError for an
    invalid view (its message says why).
    """
    if not view.valid:
        raise ValueError(f"The view is not valid: {view.message}")
    s = view.settings
    fig = Figure(figsize=(11.0, 7.6), layout="constrained")
    (mapping, heat), (hist, layers) = fig.subplots(2, 2)
    alloc, curve = view.allocation, view.curve
    mapping.plot(curve["alpha"], curve["sparsity"], color=_NEUTRAL, lw=1.5, label="mapping", zorder=1)
    mapping.scatter(alloc["alpha_used"], alloc["sparsity"], s=14, alpha=0.85, zorder=3,
                    c=[kind_color(k) for k in alloc["projection"]])
    mapping.axhline(s.target, color=_UNIFORM, ls="--", lw=1.2, label=f"uniform ({s.target:g})", zorder=2)
    mapping.set_ylim(0, 1)
    mapping.set_xlabel(("layer-mean alpha" if s.granularity == "block" else "alpha") + f" ({s.xmin} xmin)")
    mapping.set_ylabel("sparsity")
    kinds = [k for k in PROJECTIONS if k in set(alloc["projection"])]
    handles = [Line2D([], [], ls="", marker="o", color=kind_color(k), label=k) for k in kinds]
    legend_below(mapping, "x-small", handles=mapping.get_legend_handles_labels()[0] + handles, ncols=5,
                 frameon=True)  # below the axes: never over the dots
    mapping.set_title(f"alpha -> sparsity ({s.mapping} mapping, {s.direction})", fontsize="medium")

    image = heat.imshow(view.heatmap.to_numpy(dtype=float), aspect="auto", interpolation="nearest",
                        **color_scale("sparsity"))
    heat.set_xticks(range(view.heatmap.shape[1]), view.heatmap.columns)
    step = max(1, len(view.heatmap) // 10)
    heat.set_yticks(range(0, len(view.heatmap), step), view.heatmap.index[::step])
    heat.set_xlabel("projection")
    heat.set_ylabel("layer")
    heat.set_title(f"sparsity per layer x projection ({len(alloc)} projections)", fontsize="medium")
    fig.colorbar(image, ax=heat, label="sparsity")

    h = view.histogram
    hist.bar((h["bin_left"] + h["bin_right"]) / 2, h["count"], width=(h["bin_right"] - h["bin_left"]) * 0.95,
             color=_NEUTRAL)
    hist.axvline(s.target, color=_UNIFORM, ls="--", lw=1.2)
    hist.set_xlim(0, 1)
    hist.set_xlabel("sparsity")
    hist.set_ylabel("projections")
    hist.set_title(f"budgets from {alloc['sparsity'].min():.2f} to {alloc['sparsity'].max():.2f} "
                   f"(dashed: S = {s.target:g})", fontsize="medium")

    by = view.by_layer
    layers.plot(by["layer"], by["sparsity"], color=_ACTTAIL["color"], marker=_ACTTAIL["marker"], ms=3,
                label="this ActTail allocation")
    layers.plot(by["layer"], by["uniform_sparsity"], color=_UNIFORM, ls="--", label="uniform")
    layers.set_xlabel("layer")
    layers.set_ylabel("sparsity (parameter-weighted)")
    layers.legend(fontsize="small")
    layers.set_title("sparsity by layer", fontsize="medium")
    cost = view.cost_text() if np.isfinite(view.cost) else "no cost estimate for this source"
    fig.suptitle(f"Explorer view: S={s.target:.2f}, eps={s.epsilon:.2f}, s_max={s.s_max:.2f}, "
                 f"{s.granularity} granularity, alphas of {s.source}\n{cost}", fontsize="medium")
    return fig
