"""One visual language: the colour, marker and line style of every run label and projection kind,
and one colour scale per quantity, for matplotlib and plotly alike.

Everything is looked up by name, never by position in a list, so a label keeps its style in every figure and
notebook. The grammar: the **line style is the method** (TopK solid, rotation dashed, WINA dash-dot, rotated
WINA dash-dot-dot, calibrated thresholds dotted, CATS long dashes; :data:`METHOD_LINESTYLES`); the **colour is
the family** (baselines grey/black, ActTail on peak alphas blue and on KS alphas sky blue, controls vermillion /
rose, TEAL's budgets bluish green, cost-based solvers orange, rotation indigo, WINA reddish purple, thresholds
olive, CATS teal: Okabe-Ito plus Paul Tol's muted colours, safe for the common forms of colour blindness); the
**marker is the variant**. Every label has its own (colour, marker) pair, so no two labels in one figure share a
(colour, marker, line style) triple (:func:`check_distinct`).

- :func:`strategy_style` -> ``dict(color, marker, linestyle)`` (matplotlib keywords); labels are those of
  ``report.labels.display_label``; an unknown name gets a deterministic fallback chosen by a hash of the name.
- :func:`method_linestyle`, :func:`shared_styles`, :func:`check_distinct`.
- :func:`kind_color` -> hex colour of a projection kind (q, k, ..., down).
- :func:`plotly_strategy_style` / :func:`plotly_kind_color`: the same hex colours for plotly.
- :func:`color_scale` / :func:`plotly_color_scale`: the fixed colour scale of a quantity
  (``alpha``, ``sparsity``, ``correlation``, ``relative_change``).
"""
from __future__ import annotations

import re
import zlib

from ..core.models import PROJECTIONS

OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7",
}
"""The Okabe-Ito palette (Okabe & Ito 2008), name -> hex."""
GREY = "#7F7F7F"
DARK_GREY = "#4D4D4D"
_C = OKABE_ITO


TOL = {"indigo": "#332288", "wine": "#882255", "olive": "#999933", "teal": "#44AA99", "rose": "#CC6677"}
"""Paul Tol's 'muted' colours used beside Okabe-Ito for the non-TopK methods and the KS controls
(also safe for the common forms of colour blindness)."""

METHOD_LINESTYLES: dict[str, object] = {
    "topk": "-", "rotated": "--", "wina": "-.", "threshold": ":",
    "rotated-wina": (0, (3, 1, 1, 1, 1, 1)), "cats": (0, (8, 2)), "": ":",
}
"""One line style per method (``sparsify`` registry names; ``""`` = dense): every run applied with a method
is drawn with its line style, whatever its allocation."""

KS_SHADE = {_C["blue"]: _C["sky_blue"], _C["vermillion"]: TOL["rose"]}
"""An alpha-based run on KS alphas (``acttail-ks``, ``...[xmin=ks]``) takes the lighter shade of its family."""


def _s(color: str, marker: str, linestyle: object = "-") -> dict:
    return dict(color=color, marker=marker, linestyle=linestyle)


_M = METHOD_LINESTYLES
STRATEGY_STYLES: dict[str, dict] = {
    # baselines
    "dense": _s(_C["black"], "", _M[""]),
    "uniform": _s(DARK_GREY, "o"),
    "ffn-topk": _s(DARK_GREY, "p"),
    # ActTail on peak alphas (blue) and on KS alphas (sky blue): the marker names the variant
    "acttail": _s(_C["blue"], "s"),
    "acttail-ks": _s(_C["sky_blue"], "s"),
    "acttail-block": _s(_C["blue"], "D"),
    "acttail-block[xmin=ks]": _s(_C["sky_blue"], "D"),
    "acttail[fit=block-mean]": _s(_C["blue"], "P"),
    "acttail[fit=block-mean;xmin=ks]": _s(_C["sky_blue"], "P"),
    "acttail-fit": _s(_C["blue"], "X"),
    "acttail-fit[xmin=ks]": _s(_C["sky_blue"], "X"),
    "acttail-eps0.1": _s(_C["blue"], "^"),
    "acttail-eps0.1[xmin=ks]": _s(_C["sky_blue"], "^"),
    "acttail-eps0.5": _s(_C["blue"], "v"),
    "acttail-eps0.5[xmin=ks]": _s(_C["sky_blue"], "v"),
    "acttail-rank": _s(_C["blue"], "<"),
    "acttail-rank[xmin=ks]": _s(_C["sky_blue"], "<"),
    "acttail-power": _s(_C["blue"], ">"),
    "acttail-farms": _s(_C["blue"], "h"),
    "acttail-farms[xmin=ks]": _s(_C["sky_blue"], "h"),
    "acttail-block-farms": _s(_C["blue"], "H"),
    "acttail-block-farms[xmin=ks]": _s(_C["sky_blue"], "H"),
    # controls (vermillion; rose on KS alphas)
    "shuffled": _s(_C["vermillion"], "x"),
    "shuffled[xmin=ks]": _s(TOL["rose"], "x"),
    "acttail-rev": _s(_C["vermillion"], "v"),
    "acttail-rev[xmin=ks]": _s(TOL["rose"], "v"),
    "acttail-block[direction=alpha_down]": _s(_C["vermillion"], "D"),
    "acttail-block[direction=alpha_down;xmin=ks]": _s(TOL["rose"], "D"),
    # TEAL's budgets (bluish green) and the cost-based solvers (orange)
    "teal-greedy": _s(_C["bluish_green"], "*"),
    "teal-greedy-fine": _s(_C["bluish_green"], "P"),
    "teal-kind": _s(_C["bluish_green"], "h"),
    "surrogate-optimal": _s(_C["orange"], "*"),
    "hybrid": _s(_C["orange"], "X"),
    # rotation (LaRoSA): indigo, dashed
    "rotated-uniform": _s(TOL["indigo"], "o", _M["rotated"]),
    "rotated-acttail": _s(TOL["indigo"], "s", _M["rotated"]),
    "rotated-acttail[xmin=ks]": _s(TOL["indigo"], "D", _M["rotated"]),
    # WINA: reddish purple, dash-dot; on rotated inputs: wine, dash-dot-dot
    "wina": _s(_C["reddish_purple"], "o", _M["wina"]),
    "acttail-wina": _s(_C["reddish_purple"], "s", _M["wina"]),
    "acttail-wina[xmin=ks]": _s(_C["reddish_purple"], "D", _M["wina"]),
    "teal-greedy-wina": _s(_C["reddish_purple"], "*", _M["wina"]),
    "acttail+wina": _s(_C["reddish_purple"], "v", _M["wina"]),
    "rotated-wina": _s(TOL["wine"], "o", _M["rotated-wina"]),
    # calibrated thresholds: olive, dotted; CATS: teal, long dashes
    "teal-threshold": _s(TOL["olive"], "o", _M["threshold"]),
    "acttail-threshold": _s(TOL["olive"], "s", _M["threshold"]),
    "acttail-threshold[xmin=ks]": _s(TOL["olive"], "D", _M["threshold"]),
    "ffn-threshold": _s(TOL["olive"], "p", _M["threshold"]),
    "cats": _s(TOL["teal"], "h", _M["cats"]),
}
"""Explicit style of every known label. Every entry has its own (colour, marker) pair, so no two labels share
a (colour, marker, line style) triple, and the line style is its method's (:data:`METHOD_LINESTYLES`)."""

STYLE_ALIASES = {"acttail[xmin=ks]": "acttail-ks", "acttail (xmin=ks)": "acttail-ks", "acttail (xmin=peak)": "acttail"}
"""Labels that name the same setting as another label (``report.labels.setting_key`` is equal) share its style."""

_FALLBACK_COLORS = tuple(c for k, c in OKABE_ITO.items() if k not in ("black", "yellow")) + (GREY,)
_FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "h", "<", ">", "H", "p", "d", "8")
_FALLBACK_LINESTYLES = ("-", "--", "-.", ":")

KIND_COLORS: dict[str, str] = {
    "q": _C["blue"], "k": _C["sky_blue"], "v": _C["bluish_green"], "o": _C["black"],
    "gate": _C["vermillion"], "up": _C["orange"], "down": _C["reddish_purple"],
}
"""One colour per projection kind (attention: blues/green/black; MLP: warm colours)."""
assert set(KIND_COLORS) == set(PROJECTIONS)
OTHER_KIND_COLOR = GREY

COLOR_SCALES: dict[str, dict] = {
    "alpha": dict(cmap="viridis", vmin=1.5, vmax=10.0, plotly="Viridis"),
    "sparsity": dict(cmap="magma_r", vmin=0.0, vmax=1.0, plotly="Magma_r"),
    "correlation": dict(cmap="RdBu_r", vmin=-1.0, vmax=1.0, plotly="RdBu_r"),
    "relative_change": dict(cmap="RdBu_r", vmin=-1.0, vmax=1.0, plotly="RdBu_r"),
}
"""One colour scale per quantity, fixed ranges (values outside saturate; figures show the arrows).
``relative_change`` is log2(perplexity / uniform's): -1 = half of uniform's (blue, better),
+1 = double (red, worse)."""

_PLOTLY_SYMBOLS = {"o": "circle", "s": "square", "D": "diamond", "d": "diamond-tall", "^": "triangle-up",
                   "v": "triangle-down", "<": "triangle-left", ">": "triangle-right", "H": "hexagon2", "8": "octagon", "P": "cross", "X": "x", "*": "star", "h": "hexagon", "p": "pentagon",
                   "x": "x-thin-open", "": "circle"}
_PLOTLY_DASHES = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot", str((0, (3, 1, 1, 1, 1, 1))): "6px,2px,2px,2px,2px,2px",
                  str((0, (8, 2))): "longdash"}


def _fallback(name: str) -> dict:
    """A deterministic style for an unknown name (CRC32 of the name; the same in every process)."""
    h = zlib.crc32(name.encode("utf-8"))
    return _s(_FALLBACK_COLORS[h % len(_FALLBACK_COLORS)],
              _FALLBACK_MARKERS[(h // 7) % len(_FALLBACK_MARKERS)],
              _FALLBACK_LINESTYLES[(h // 56) % len(_FALLBACK_LINESTYLES)])


def method_linestyle(method) -> object:
    """The line style of a method (:data:`METHOD_LINESTYLES`; unknown methods: TopK's)."""
    return METHOD_LINESTYLES.get("" if method is None else str(method), METHOD_LINESTYLES["topk"])


def _method_of(name: str) -> str | None:
    """The method a label implies (``allocation.parse_strategy``), or None when it is not a strategy."""
    from ..allocation.presets import parse_strategy
    from ..core.errors import AllocationError

    try:
        return parse_strategy(name).method
    except AllocationError:
        return None


def _derived(base: str, options: str) -> dict:
    """The style of ``base[options]`` for a known ``base``: its colour and marker, the KS shade for
    ``xmin=ks``, another marker (chosen by the name) for any other option, and the label's method line style."""
    style = dict(STRATEGY_STYLES[base])
    parts = dict(p.partition("=")[::2] for p in options.split(";") if p)
    if parts.pop("xmin", None) == "ks" and style["color"] in KS_SHADE:
        style["color"] = KS_SHADE[style["color"]]
    if parts:
        taken = {v["marker"] for v in STRATEGY_STYLES.values() if v["color"] == style["color"]}
        free = [m for m in _FALLBACK_MARKERS if m not in taken] or list(_FALLBACK_MARKERS)
        style["marker"] = free[zlib.crc32(options.encode("utf-8")) % len(free)]
    method = _method_of(f"{base}[{options}]")
    if method is not None:
        style["linestyle"] = method_linestyle(method)
    return style


def strategy_style(name: str) -> dict:
    """Matplotlib style of a run label: ``dict(color=hex, marker=..., linestyle=...)``.

    Known labels (:data:`STRATEGY_STYLES`, :data:`STYLE_ALIASES`) get their own style. ``"acttail (xmin=ks)"``
    is styled as the label ``report.labels.display_label`` gives that setting (``acttail-ks``). A label with
    options on a known base (``acttail-rank[xmin=ks;eps=0.2]``) keeps the base's colour family (the KS shade for
    ``xmin=ks``) with another marker; any other name gets a deterministic fallback chosen by a hash of the
    name. The line style is always the label's method's (:func:`method_linestyle`) when the label parses.
    """
    name = str(name)
    name = STYLE_ALIASES.get(name, name)
    if name in STRATEGY_STYLES:
        return dict(STRATEGY_STYLES[name])
    base, _, rule = name.partition(" (xmin=")
    rule = rule.rstrip(")")
    if rule:
        from ..report.labels import display_label

        label = display_label(base, rule)
        return strategy_style(label) if label != name else _fallback(name)
    match = re.fullmatch(r"(.+?)\[(.*)\]", name)
    if match and match.group(1) in STRATEGY_STYLES:
        return _derived(match.group(1), match.group(2))
    style = _fallback(name)
    method = _method_of(name)
    if method is not None:
        style["linestyle"] = method_linestyle(method)
    return style


def shared_styles(labels) -> dict[tuple, list[str]]:
    """(colour, marker, line style) -> the labels drawn with it, for every triple two or more of ``labels``
    share (aliases of one setting count once); empty when every label looks different."""
    seen: dict[tuple, list[str]] = {}
    for label in dict.fromkeys(map(str, labels)):
        style = strategy_style(label)
        key = (style["color"].lower(), style["marker"], str(style["linestyle"]))
        canonical = STYLE_ALIASES.get(label, label)
        if canonical not in [STYLE_ALIASES.get(x, x) for x in seen.get(key, [])]:
            seen.setdefault(key, []).append(label)
    return {key: names for key, names in seen.items() if len(names) > 1}


def check_distinct(labels) -> None:
    """Raise ValueError naming the labels that would look identical in one figure (:func:`shared_styles`)."""
    shared = shared_styles(labels)
    if shared:
        raise ValueError(f"These labels share a (colour, marker, line style): {list(shared.values())}. Fix: give "
                         "them their own entries in plots.style.STRATEGY_STYLES.")


def kind_color(kind: str) -> str:
    """Hex colour of a projection kind (``q`` ... ``down``); grey for anything else."""
    return KIND_COLORS.get(str(kind), OTHER_KIND_COLOR)


def plotly_strategy_style(name: str) -> dict:
    """Plotly keywords of a strategy: ``dict(line=dict(color, dash), marker=dict(color, symbol))``,
    the same hex colour as :func:`strategy_style`; ``mode`` is "lines" for a style without marker."""
    style = strategy_style(name)
    return dict(line=dict(color=style["color"], dash=_PLOTLY_DASHES.get(str(style["linestyle"]), "solid")),
                marker=dict(color=style["color"], symbol=_PLOTLY_SYMBOLS.get(style["marker"], "circle")),
                mode="lines+markers" if style["marker"] else "lines")


def plotly_kind_color(kind: str) -> str:
    """The same hex colour as :func:`kind_color` (plotly takes hex strings)."""
    return kind_color(kind)


def color_scale(quantity: str) -> dict:
    """Matplotlib ``dict(cmap, vmin, vmax)`` of a quantity (alpha, sparsity, correlation, relative_change)."""
    if quantity not in COLOR_SCALES:
        raise KeyError(f"No colour scale for {quantity!r}; known quantities: {sorted(COLOR_SCALES)}. "
                       "Fix: use one of them or add an entry to plots.style.COLOR_SCALES.")
    scale = COLOR_SCALES[quantity]
    return dict(cmap=scale["cmap"], vmin=scale["vmin"], vmax=scale["vmax"])


def plotly_color_scale(quantity: str) -> dict:
    """Plotly ``dict(colorscale, zmin, zmax)`` of the same quantity (same colours and range)."""
    scale = color_scale(quantity)
    return dict(colorscale=COLOR_SCALES[quantity]["plotly"], zmin=scale["vmin"], zmax=scale["vmax"])


def sparsity_scale(center: float | None = None, vmin: float = 0.0, vmax: float = 1.0) -> dict:
    """``dict(cmap, norm)`` of a sparsity map, shared by every helper that draws one.

    ``center=None``: the sequential scale of :func:`color_scale` (``magma_r`` on [vmin, vmax] =
    [0, 1], darker = sparser). A number (e.g. the common target): the diverging
    ``relative_change`` colours on the same [0, 1] range, bent so that white is ``center``
    (red = sparser than the target, blue = denser).
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm

    if center is None:
        return dict(cmap=color_scale("sparsity")["cmap"], norm=Normalize(vmin, vmax))
    center = min(max(float(center), vmin + 1e-6), vmax - 1e-6)
    return dict(cmap=COLOR_SCALES["relative_change"]["cmap"], norm=TwoSlopeNorm(center, vmin, vmax))


SERIES_COLORS: dict[str, str] = {
    "TEAL": _C["bluish_green"], "SmolLM2": _C["orange"], "LLaMA-2-7B": _C["sky_blue"],
    "LLaMA-2-13B": _C["blue"], "LLaMA-2-70B": _C["reddish_purple"], "Mistral": _C["vermillion"],
}
"""Colour of a labelled series that is not a strategy (a model or a source), by a word in its label."""


def series_color(label: str) -> str:
    """Hex colour of a series label: a strategy's colour when the label is one, else the first
    ``SERIES_COLORS`` key found in the label ("ActTail LLaMA-2-13B" -> 13B's), else a hash fallback."""
    label = str(label)
    if label in STRATEGY_STYLES:
        return STRATEGY_STYLES[label]["color"]
    for key in sorted(SERIES_COLORS, key=len, reverse=True):
        if key.lower() in label.lower():
            return SERIES_COLORS[key]
    return _fallback(label)["color"]


XMIN_RULE_COLORS = {"ks": _C["vermillion"], "peak": _C["bluish_green"], "median": _C["reddish_purple"]}
"""Colour of the xmin line of each rule (ESD and KS-curve figures)."""
ESD_COLOR = _C["sky_blue"]
"""Histogram colour of a spectrum (fits are drawn black)."""


def legend_beside(ax, fontsize="small", **kwargs):
    """``ax``'s legend outside the axes, to the right, top-aligned (never over data); returns the Legend.

    ``kwargs`` go to ``Axes.legend`` (e.g. ``handles``, ``ncols``, ``frameon=True``)."""
    return ax.legend(**{"fontsize": fontsize, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False,
                        **kwargs})


def legend_below(ax, fontsize="small", y: float = -0.16, **kwargs):
    """``ax``'s legend outside the axes, centred below them at axes height ``y`` (never over data); returns it."""
    return ax.legend(**{"fontsize": fontsize, "loc": "upper center", "bbox_to_anchor": (0.5, y), "frameon": False,
                        **kwargs})
