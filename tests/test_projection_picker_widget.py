"""The projection picker's widget in plain Python: its callbacks redraw into an Image widget (no ipywidgets
Output, which nbclient cannot execute with --ExecutePreprocessor.store_widget_state=False), errors reach the
message line, and its display bundle carries the current figure as a static PNG for exported pages."""
import numpy as np
import pytest

from acttail_lab.spectral import rmt
from acttail_lab.spectral.tails import fit_power_law
from acttail_lab.widgets import ProjectionPicker

widgets = pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def spectra():
    out = {}
    for i, mu in enumerate((1.0, 3.0)):
        w = rmt.heavy_tailed_matrix(300, 150, tail_index=mu, seed=i)
        out[f"model.layers.{i}.mlp.up_proj"] = np.linalg.eigvalsh(w.T @ w)
    return out


def _pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread
    import io

    return imread(io.BytesIO(bytes(png)), format="png")


def _same_figure(a: bytes, b: bytes) -> bool:
    """Two PNGs of one figure (a redraw may move the constrained layout by a pixel: compare sizes and pixels)."""
    pa, pb = _pixels(a), _pixels(b)
    return pa.shape == pb.shape and float(np.abs(pa - pb).mean()) < 0.02


def _descendants(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _descendants(child)


def test_callbacks_redraw_the_image(spectra):
    picker = ProjectionPicker(spectra)
    box = picker.widget()
    first = bytes(picker.image.value)
    assert first.startswith(b"\x89PNG") and _same_figure(first, picker.png())
    picker.dropdown.value = picker.names[1]
    assert picker.name == picker.names[1]
    assert not _same_figure(bytes(picker.image.value), first)
    picker.toggle.value = "median"
    assert picker.fit == fit_power_law(spectra[picker.names[1]], xmin="median")
    assert _same_figure(bytes(picker.image.value), picker.png())
    assert picker.message.value == ""
    assert not any(isinstance(w, widgets.Output) for w in _descendants(box))


def test_an_error_in_select_is_shown_not_raised(spectra, monkeypatch):
    picker = ProjectionPicker(spectra)
    picker.widget()
    before = bytes(picker.image.value)

    def broken(*args, **kwargs):
        raise ValueError("fit <failed>")

    monkeypatch.setattr(picker, "select", broken)
    picker.dropdown.value = picker.names[1]  # must not raise
    assert "ValueError" in picker.message.value and "&lt;failed&gt;" in picker.message.value
    assert bytes(picker.image.value) == before


def test_display_bundle_has_the_static_figure(spectra):
    picker = ProjectionPicker(spectra)
    box = picker.widget(initial=picker.names[1])
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget in JupyterLab
    assert _same_figure(bundle["image/png"], picker.png())  # what a page exported without widget state shows
    assert picker.names[1] in bundle["text/plain"]
