import numpy as np
import pytest

from acttail_lab.spectral import rmt
from acttail_lab.spectral.tails import fit_power_law
from acttail_lab.widgets import ProjectionPicker


@pytest.fixture(scope="module")
def spectra():
    out = {}
    for i, mu in enumerate((1.0, 3.0)):
        w = rmt.heavy_tailed_matrix(400, 200, tail_index=mu, seed=i)
        out[f"model.layers.{i}.mlp.up_proj"] = np.linalg.eigvalsh(w.T @ w)
    return out


def _drawn_eigs_range(ax):
    edges = [p.get_x() for p in ax.patches]
    return min(edges), max(p.get_x() + p.get_width() for p in ax.patches)


def test_select_draws_the_chosen_spectrum(spectra):
    picker = ProjectionPicker(spectra)
    names = picker.names
    ax0 = picker.select(names[0])
    range0 = _drawn_eigs_range(ax0)
    assert picker.name == names[0]
    assert picker.fit == fit_power_law(spectra[names[0]], xmin="ks")
    assert np.allclose(ax0.lines[1].get_xdata(), picker.fit.xmin)
    assert ax0.get_title() == names[0]

    ax1 = picker.select(names[1])
    assert picker.name == names[1]
    assert _drawn_eigs_range(ax1) == pytest.approx((spectra[names[1]].min(), spectra[names[1]].max()))
    assert _drawn_eigs_range(ax1) != pytest.approx(range0)
    assert picker.figure.axes == [ax1]  # redrawn in place, not stacked


def test_select_with_another_rule(spectra):
    picker = ProjectionPicker(spectra)
    name = picker.names[0]
    picker.select(name, xmin="median")
    assert picker.xmin_rule == "median"
    assert picker.fit == fit_power_law(spectra[name], xmin="median")
    picker.select(picker.names[1])  # the rule sticks
    assert picker.fit.xmin_rule == "median"


def test_unknown_name_or_rule_errors_clearly(spectra):
    picker = ProjectionPicker(spectra)
    with pytest.raises(ValueError, match=r"No projection named 'model.layers.0.mlp.up'.*Did you mean"):
        picker.select("model.layers.0.mlp.up")
    with pytest.raises(ValueError, match="Unknown xmin rule"):
        picker.select(picker.names[0], xmin="mode")
    with pytest.raises(ValueError, match="at least one spectrum"):
        ProjectionPicker({})


def test_widget_callbacks_call_select(spectra):
    pytest.importorskip("ipywidgets")
    picker = ProjectionPicker(spectra)
    box = picker.widget()
    assert picker.name == picker.names[0]
    assert picker.png().startswith(b"\x89PNG")
    picker.dropdown.value = picker.names[1]
    assert picker.name == picker.names[1]
    picker.toggle.value = "peak"
    assert picker.fit == fit_power_law(spectra[picker.names[1]], xmin="peak")
    assert len(box.children) == 2


@pytest.mark.real
def test_picker_over_the_real_model(real_model):
    picker = ProjectionPicker.from_model(real_model.model)
    assert len(picker.names) == 210
    ax = picker.select("model.layers.15.mlp.up_proj")
    assert len(ax.patches) == 50 and picker.fit.n_eigs == 576
