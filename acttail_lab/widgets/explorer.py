"""ipywidgets front end of the alpha -> sparsity explorer (logic: ``acttail_lab.report.explorer``).

``ExplorerWidget(state)`` builds bounded controls (sliders, dropdowns, toggle
buttons) for every ``ExplorerSettings`` field, ONE plotly ``FigureWidget`` with the four
figures as panels (``plots.explorer.explorer_figure``: every FigureWidget carries plotly's 5 MB
script in a saved notebook, so one widget means one copy), a message line, the cost estimate, and a button that measures the current
allocation's perplexity on a small slice (progress bar, results table
below). Callbacks are thin: they call ``state.update`` / ``state.evaluate_perplexity``
and redraw the panels in place (one ``batch_update`` for the whole figure).

ipywidgets swallows exceptions raised in callbacks, so every callback catches
them, shows them in the message line and records them in ``errors`` (the
tests assert it stays empty). Impossible settings are not exceptions: the
state returns a view with a message, shown in the same line.

DOM classes (used by tests/test_browser.py): ``acttail-<field>`` on each
control, ``acttail-explorer`` and ``acttail-<panel>`` (mapping, heatmap, histogram, uniform) on the
one figure (its ``data[0]`` is the heat map's matrix), ``acttail-message``, ``acttail-cost`` (the span inside carries
``data-cost`` and ``data-uniform`` with full precision), ``acttail-evaluate``,
``acttail-progress``, ``acttail-results``.
"""
from __future__ import annotations

import html
import math
import traceback

import ipywidgets as widgets
import plotly.graph_objects as go

from ..allocation.strategies import DIRECTIONS, GRANULARITIES, MAPPINGS
from ..plots.explorer import FIGURES, explorer_figure, panels
from ..plots.style import GREY, OKABE_ITO
from ..report.explorer import ExplorerState, ExplorerView
from ..report.explorer_sources import XMIN_RULES

SLIDER_BOUNDS = {
    "target": (0.0, 0.95, 0.01),
    "epsilon": (0.0, 0.95, 0.01),
    "power": (0.25, 4.0, 0.25),
    "s_max": (0.5, 0.99, 0.01),
}
"""(min, max, step) of each slider: every value they allow is a valid option for ``allocate``."""

RESULT_COLUMNS = ("source", "xmin", "target", "epsilon", "mapping", "granularity", "direction", "s_max",
                  "estimated_cost", "uniform_cost", "perplexity", "n_tokens", "seconds")
_DESCRIPTIONS = dict(target="target S", epsilon="eps", power="power", s_max="s_max", mapping="mapping",
                     granularity="granularity", direction="direction", xmin="xmin rule", source="alphas")
_STYLE = {"description_width": "80px"}


class ExplorerWidget:
    """The explorer's widgets around an :class:`~acttail_lab.report.explorer.ExplorerState`.

    Attributes: ``state``; ``controls`` (setting name -> widget); ``figure`` (the one
    go.FigureWidget); ``figures`` (panel name -> ``plots.explorer.Panel`` of it: ``.data`` are that
    panel's traces); ``message``, ``cost`` (HTML); ``button``,
    ``progress``, ``results`` (the perplexity part); ``errors`` (exceptions
    caught in callbacks, as text). ``widget()`` returns the whole layout.
    """

    def __init__(self, state: ExplorerState):
        self.state = state
        self.errors: list[str] = []
        self.controls = self._make_controls()
        view = state.view
        self.figure = go.FigureWidget(explorer_figure(view))
        for name in ("explorer", *FIGURES):
            self.figure.add_class(f"acttail-{name}")
        self.figures = panels(self.figure)
        self.message = widgets.HTML().add_class("acttail-message")
        self.cost = widgets.HTML().add_class("acttail-cost")
        self.button = widgets.Button(description="evaluate perplexity", icon="play",
                                     tooltip="Measure this allocation's perplexity on a small evaluation slice",
                                     layout=widgets.Layout(width="200px")).add_class("acttail-evaluate")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="",
                                            layout=widgets.Layout(width="300px")).add_class("acttail-progress")
        self.results = widgets.HTML().add_class("acttail-results")
        for name, control in self.controls.items():
            control.observe(self._on_change, names="value")
        self.button.on_click(self._on_evaluate)
        self._show(view)
        self._sync_enabled()

    # -- construction
    def _make_controls(self) -> dict[str, widgets.Widget]:
        s = self.state.settings
        controls: dict[str, widgets.Widget] = {}
        for name, (low, high, step) in SLIDER_BOUNDS.items():
            controls[name] = widgets.FloatSlider(value=min(max(getattr(s, name), low), high), min=low, max=high,
                                                 step=step, readout_format=".2f", description=_DESCRIPTIONS[name],
                                                 style=_STYLE, continuous_update=True)
        controls["mapping"] = widgets.Dropdown(options=list(MAPPINGS), value=s.mapping)
        controls["granularity"] = widgets.ToggleButtons(options=list(GRANULARITIES), value=s.granularity)
        controls["direction"] = widgets.ToggleButtons(options=list(DIRECTIONS), value=s.direction)
        controls["xmin"] = widgets.Dropdown(options=list(XMIN_RULES), value=s.xmin)
        controls["source"] = widgets.Dropdown(options=self.state.source_options(), value=s.source,
                                              layout=widgets.Layout(width="380px"))
        for name, control in controls.items():
            control.description = _DESCRIPTIONS[name]
            control.style = _STYLE if not isinstance(control, widgets.ToggleButtons) else {
                "description_width": "80px", "button_width": "100px"}
            control.add_class(f"acttail-{name}")
        # the state starts from the sliders' (clamped) values, so what is shown is what is computed
        clamped = {n: controls[n].value for n in SLIDER_BOUNDS if controls[n].value != getattr(s, n)}
        if clamped:
            self.state.update(**clamped)
        return controls

    def widget(self) -> widgets.Widget:
        """The explorer's layout: controls, message, cost, the figure, perplexity button and results."""
        c = self.controls
        left = widgets.VBox([c["source"], c["xmin"], c["target"], c["epsilon"], c["s_max"]])
        right = widgets.VBox([c["mapping"], c["power"], c["granularity"], c["direction"]])
        return widgets.VBox([widgets.HBox([left, right]), self.message, self.cost, self.figure,
                             widgets.HBox([self.button, self.progress]), self.results])

    # -- callbacks
    def _on_change(self, change) -> None:
        """Any control moved: update the state with that one setting and redraw."""
        try:
            name = next(n for n, w in self.controls.items() if w is change["owner"])
            view = self.state.update(**{name: change["new"]})
            self._sync_enabled()
            self._show(view)
        except Exception as exc:  # ipywidgets would swallow it: show and record it
            self._record(exc)

    def _on_evaluate(self, _button=None) -> None:
        """The perplexity button: evaluate the current allocation, progress bar, add a row to the table."""
        self.button.disabled = True
        self.progress.value, self.progress.max, self.progress.bar_style = 0, 1, "info"
        try:
            results = self.state.evaluate_perplexity(progress=self._on_progress)
            self.progress.bar_style = "success"
            self.results.value = self._results_html(results)
            self._show(self.state.view)
        except Exception as exc:
            self.progress.bar_style = "danger"
            self._record(exc, expected=_is_expected(exc))
        finally:
            self.button.disabled = False

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(int(total), 1)
        self.progress.value = int(done)

    # -- drawing
    def _sync_enabled(self) -> None:
        """Grey out controls that do not apply (power without the power mapping, xmin for published alphas)."""
        source = self.state.sources.get(self.state.settings.source)
        self.controls["power"].disabled = self.state.settings.mapping != "power"
        self.controls["xmin"].disabled = source is not None and source.fixed_rule is not None

    def _show(self, view: ExplorerView) -> None:
        """Redraw every panel in place (one batch), then the message and the cost line."""
        if view.valid:
            with self.figure.batch_update():
                for name, (_, update) in FIGURES.items():
                    update(self.figures[name], view)
        self.message.value = _message_html(view)
        self.cost.value = _cost_html(view)

    def _record(self, exc: BaseException, expected: bool = False) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if not expected:
            self.errors.append(traceback.format_exc())
        self.message.value = f'<span style="color:{OKABE_ITO["vermillion"]}">{html.escape(text)}</span>'

    @staticmethod
    def _results_html(results) -> str:
        columns = [c for c in RESULT_COLUMNS if c in results.columns]
        return results[columns].to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0)


def _is_expected(exc: BaseException) -> bool:
    from ..core.errors import ActTailError

    return isinstance(exc, ActTailError)


def _message_html(view: ExplorerView) -> str:
    if not view.valid:
        return (f'<span style="color:{OKABE_ITO["vermillion"]}"><b>Impossible setting:</b> {html.escape(view.message)} '
                "(figures show the last valid setting)</span>")
    if view.note:
        return f'<span style="color:{GREY}">{html.escape(view.note)}</span>'
    return ""


def _cost_html(view: ExplorerView) -> str:
    def attr(x: float) -> str:
        return repr(float(x)) if math.isfinite(x) else "nan"

    return (f'<span class="acttail-cost-value" data-cost="{attr(view.cost)}" '
            f'data-uniform="{attr(view.uniform_cost)}" data-valid="{int(view.valid)}">'
            f"<b>{html.escape(view.cost_text())}</b></span>")
