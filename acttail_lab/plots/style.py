"""One visual language: the colour, marker and line style of every strategy and projection kind,
and one colour scale per quantity, for matplotlib and plotly alike.

Everything is looked up by name, never by position in a list, so a strategy keeps its
style in every figure and notebook. Colours are the Okabe-Ito palette (safe for the
common forms of colour blindness) plus greys; families share a hue and differ by
marker / line style: baselines grey/black, ActTail blues, TEAL bluish green,
cost-based solvers (surrogate-optimal, hybrid) orange, WINA reddish purple, controls vermillion.

- :func:`strategy_style` -> ``dict(color, marker, linestyle)`` (matplotlib keywords);
  an unknown name gets a deterministic fallback chosen by a hash of the name.
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


def _s(color: str, marker: str, linestyle: str = "-") -> dict:
    return dict(color=color, marker=marker, linestyle=linestyle)


STRATEGY_STYLES: dict[str, dict] = {
    # baselines
    "dense": _s(_C["black"], "", ":"),
    "uniform": _s(DARK_GREY, "o", "-"),
    "rotated-uniform": _s(DARK_GREY, "o", "-."),
    # ActTail and its variants (blues)
    "acttail": _s(_C["blue"], "s", "-"),
    "acttail-ks": _s(_C["blue"], "P", "-"),
    "acttail-block": _s(_C["sky_blue"], "D", "-"),
    "acttail-eps0.1": _s(_C["sky_blue"], "^", ":"),
    "acttail-eps0.5": _s(_C["blue"], "^", ":"),
    "acttail-rank": _s(_C["sky_blue"], "P", "--"),
    "acttail-power": _s(_C["blue"], "X", "--"),
    "acttail-threshold": _s(_C["blue"], "d", "--"),
    "rotated-acttail": _s(_C["blue"], "o", "-."),
    # TEAL family (bluish green)
    "teal-greedy": _s(_C["bluish_green"], "*", "-"),
    "teal-greedy-fine": _s(_C["bluish_green"], "*", "--"),
    "teal-kind": _s(_C["bluish_green"], "h", "-"),
    "teal-threshold": _s(_C["bluish_green"], "d", "--"),
    "ffn-threshold": _s(_C["bluish_green"], "p", ":"),
    "ffn-topk": _s(_C["bluish_green"], "p", "-."),
    # cost-based solvers (orange)
    "surrogate-optimal": _s(_C["orange"], "*", "--"),
    "hybrid": _s(_C["orange"], "X", "-"),
    # WINA family (reddish purple)
    "wina": _s(_C["reddish_purple"], "o", "-"),
    "acttail+wina": _s(_C["reddish_purple"], "s", "-"),
    "cats": _s(_C["reddish_purple"], "h", ":"),
    # controls (vermillion)
    "acttail-rev": _s(_C["vermillion"], "v", "--"),
    "shuffled": _s(_C["vermillion"], "x", ":"),
}
"""Explicit style of every known strategy label; every entry is distinct (colour, marker, line style)."""

_FALLBACK_COLORS = tuple(c for k, c in OKABE_ITO.items() if k not in ("black", "yellow")) + (GREY,)
_FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "h")
_FALLBACK_LINESTYLES = ("-", "--", "-.", ":")
_RULE_LINESTYLES = {"peak": "-.", "median": ":"}

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
                   "v": "triangle-down", "P": "cross", "X": "x", "*": "star", "h": "hexagon", "p": "pentagon",
                   "x": "x-thin-open", "": "circle"}
_PLOTLY_DASHES = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot"}


def _fallback(name: str) -> dict:
    """A deterministic style for an unknown name (CRC32 of the name; the same in every process)."""
    h = zlib.crc32(name.encode("utf-8"))
    return _s(_FALLBACK_COLORS[h % len(_FALLBACK_COLORS)],
              _FALLBACK_MARKERS[(h // 7) % len(_FALLBACK_MARKERS)],
              _FALLBACK_LINESTYLES[(h // 56) % len(_FALLBACK_LINESTYLES)])


def strategy_style(name: str) -> dict:
    """Matplotlib style of a strategy label: ``dict(color=hex, marker=..., linestyle=...)``.

    Known labels (``STRATEGY_STYLES``) get their own style. A label with an xmin suffix
    (``"acttail (xmin=peak)"``) or options (``"acttail-block[direction=alpha_down]"``) keeps
    its base strategy's colour and marker with another line style (dash-dot for peak, dotted
    otherwise); any other name gets a deterministic fallback chosen by a hash of the name.
    """
    name = str(name)
    if name in STRATEGY_STYLES:
        return dict(STRATEGY_STYLES[name])
    base, _, rule = name.partition(" (xmin=")
    rule = rule.rstrip(")")
    if rule:
        style = strategy_style(base)
        if rule != "ks":
            style["linestyle"] = _RULE_LINESTYLES.get(rule, ":")
        return style
    match = re.fullmatch(r"(.+?)\[.*\]", name)
    if match and match.group(1) in STRATEGY_STYLES:
        style = dict(STRATEGY_STYLES[match.group(1)])
        style["linestyle"] = ":" if style["linestyle"] != ":" else "--"
        return style
    return _fallback(name)


def kind_color(kind: str) -> str:
    """Hex colour of a projection kind (``q`` ... ``down``); grey for anything else."""
    return KIND_COLORS.get(str(kind), OTHER_KIND_COLOR)


def plotly_strategy_style(name: str) -> dict:
    """Plotly keywords of a strategy: ``dict(line=dict(color, dash), marker=dict(color, symbol))``,
    the same hex colour as :func:`strategy_style`; ``mode`` is "lines" for a style without marker."""
    style = strategy_style(name)
    return dict(line=dict(color=style["color"], dash=_PLOTLY_DASHES.get(style["linestyle"], "solid")),
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
