"""Pick a projection and see its spectrum: a plain class plus a thin ipywidgets front end.

``ProjectionPicker(spectra)`` holds ``name -> eigenvalues`` (e.g.
``spectra.model_spectra(model)``). ``select(name, xmin=...)`` fits the power law
and redraws the ESD figure; it is plain Python, testable without a browser.
``widget()`` returns a Dropdown (+ xmin-rule toggle) above an Image widget whose
callbacks only call ``select`` and show the figure as a PNG; displayed, it also carries that PNG
as a static ``image/png`` for pages exported without widget state.
"""
from __future__ import annotations

import difflib
import functools
import html
import io
from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..plots.esd import plot_esd

XMIN_RULES = ("ks", "peak", "median")


class ProjectionPicker:
    """Choose one projection's spectrum and draw its ESD with the power-law fit.

    Args:
        spectra: projection name -> eigenvalues of ``W^T W``.
        xmin: initial xmin rule (``"ks"``, ``"peak"`` or ``"median"``).
        rules: rules offered by the toggle.
        bins: histogram bins of the ESD plot.
    Attributes (after ``select``): ``name``, ``xmin_rule``, ``fit`` (a ``tails.PowerLawFit``),
    ``figure`` (the matplotlib Figure that is redrawn in place), ``ax``.
    """

    def __init__(self, spectra: Mapping[str, np.ndarray], xmin: str = "ks",
                 rules: Sequence[str] = XMIN_RULES, bins: int = 50):
        if len(spectra) == 0:
            raise ValueError("ProjectionPicker needs at least one spectrum (got an empty mapping).")
        self.spectra = dict(spectra)
        self.rules = tuple(rules)
        self._check_rule(xmin)
        self.xmin_rule = xmin
        self.bins = bins
        self.name: str | None = None
        self.fit = None
        self.figure = Figure(figsize=(6.0, 4.2), layout="constrained")
        self.ax: Axes | None = None

    @classmethod
    def from_model(cls, model, **kwargs) -> "ProjectionPicker":
        """A picker over every projection of a model (spectra from ``spectra.model_spectra``, cached)."""
        from ..spectral.spectra import model_spectra

        return cls(model_spectra(model), **kwargs)

    @property
    def names(self) -> list[str]:
        """Projection names in the order given."""
        return list(self.spectra)

    def _check_rule(self, rule: str) -> None:
        if rule not in self.rules:
            raise ValueError(f"Unknown xmin rule {rule!r}; choose one of {', '.join(self.rules)}.")

    def _check_name(self, name: str) -> None:
        if name in self.spectra:
            return
        close = difflib.get_close_matches(str(name), self.names, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"No projection named {name!r} among the {len(self.spectra)} spectra "
            f"(e.g. {self.names[0]!r}).{hint} Fix: pick a name from picker.names."
        )

    def select(self, name: str, xmin: str | None = None) -> Axes:
        """Fit ``name``'s spectrum with the xmin rule (default: the current one) and redraw.

        Returns the Axes drawn on; raises ValueError for an unknown name or rule.
        """
        from ..spectral.tails import fit_power_law

        self._check_name(name)
        rule = self.xmin_rule if xmin is None else xmin
        self._check_rule(rule)
        eigs = self.spectra[name]
        fit = fit_power_law(eigs, xmin=rule)
        self.figure.clear()
        ax = self.figure.add_subplot()
        plot_esd(eigs, fit=fit, ax=ax, bins=self.bins, title=name)
        self.name, self.xmin_rule, self.fit, self.ax = name, rule, fit, ax
        return ax

    def png(self) -> bytes:
        """The current figure as PNG bytes."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()

    def widget(self, initial: str | None = None):
        """An ipywidgets VBox: Dropdown of names and ToggleButtons of xmin rules above an Image of the figure.

        The callbacks call :meth:`select` and put the PNG into the Image widget (no ``Output`` widget: nbclient
        cannot execute one with ``--ExecutePreprocessor.store_widget_state=False``); an exception raised there
        is shown in the message line below the image. The box's display bundle also carries the current figure
        as ``image/png``: JupyterLab shows the live widget, and a page exported without widget state (nbconvert
        drops a widget view whose state was not saved) shows that static figure instead.
        """
        import ipywidgets as widgets

        initial = self.names[0] if initial is None else initial
        self.dropdown = widgets.Dropdown(options=self.names, value=initial, description="projection",
                                         layout=widgets.Layout(width="420px"))
        self.toggle = widgets.ToggleButtons(options=list(self.rules), value=self.xmin_rule,
                                            description="xmin rule")
        self.image = widgets.Image(format="png")
        self.message = widgets.HTML("")
        self.dropdown.observe(self._on_change, names="value")
        self.toggle.observe(self._on_change, names="value")
        self._redraw()
        return _PickerBox(self, [widgets.HBox([self.dropdown, self.toggle]),
                                 widgets.VBox([self.image, self.message])])

    def _on_change(self, change) -> None:
        self._redraw()

    def _redraw(self) -> None:
        """Select the dropdown's projection with the toggle's rule and show it; an error goes to the message
        line (ipywidgets would swallow it) and leaves the last figure in place."""
        try:
            self.select(self.dropdown.value, xmin=self.toggle.value)
        except Exception as exc:
            self.message.value = f"<b>{type(exc).__name__}</b>: {html.escape(str(exc))}"
            return
        self.image.value = self.png()
        self.message.value = ""


@functools.lru_cache(maxsize=1)
def _picker_box():
    """The VBox subclass behind :meth:`ProjectionPicker.widget` (built lazily: ipywidgets is optional)."""
    import ipywidgets as widgets

    class PickerBox(widgets.VBox):
        """A VBox whose display bundle adds the picker's current figure as ``image/png`` (the static view)."""

        def __init__(self, picker: ProjectionPicker, children):
            super().__init__(children)
            self._picker = picker

        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs) or {}
            bundle["image/png"] = self._picker.png()
            bundle["text/plain"] = f"ProjectionPicker: {self._picker.name} ({self._picker.xmin_rule} xmin)"
            return bundle

    return PickerBox


def _PickerBox(picker: ProjectionPicker, children):
    return _picker_box()(picker, children)
