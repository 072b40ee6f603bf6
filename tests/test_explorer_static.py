"""The static rendering of an explorer view draws that view's arrays; notebook 03 shows it below the live
widget and commits no widget state; the rank-agreement sentence reads the table it is given."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from test_explorer import state, synthetic_cost, synthetic_table, tables  # noqa: F401  (fixtures)

from acttail_lab.plots import style
from acttail_lab.plots.explorer_static import plot_explorer_view
from acttail_lab.report.explorer_costs import agreement_sentence

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_alpha_to_sparsity_explorer.ipynb"


def test_static_view_draws_the_view(state):  # noqa: F811
    view = state.update(target=0.6, epsilon=0.4)
    fig = plot_explorer_view(view)
    mapping, heat, hist, layers = fig.axes[:4]
    assert np.allclose(mapping.lines[0].get_ydata(), view.curve["sparsity"])
    dots = mapping.collections[0]
    assert np.allclose(dots.get_offsets()[:, 1], view.allocation["sparsity"])
    colors = [to_hex(c) for c in dots.get_facecolors()]
    assert colors == [style.kind_color(k).lower() for k in view.allocation["projection"]]
    assert np.array_equal(np.asarray(heat.images[0].get_array()), view.heatmap.to_numpy())
    assert heat.images[0].get_clim() == (0.0, 1.0)
    assert [p.get_height() for p in hist.patches] == list(view.histogram["count"])
    assert np.allclose(layers.lines[0].get_ydata(), view.by_layer["sparsity"])
    assert to_hex(layers.lines[1].get_color()) == style.strategy_style("uniform")["color"].lower()
    assert "S=0.60" in fig._suptitle.get_text()
    bad = state.update(target=0.99, s_max=0.5)
    with pytest.raises(ValueError, match="not valid"):
        plot_explorer_view(bad)


def test_notebook_03_shows_the_static_view_and_saves_no_widget_state():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert "widgets" not in nb["metadata"]
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    widget = next(i for i, c in enumerate(code) if "explorer.widget()" in c)
    assert "plot_explorer_view" in code[widget + 1]
    # a bare matplotlib Figure (made without pyplot) gets a PNG formatter only once the inline backend is on:
    # without it every export shows "<Figure size ...>" instead of the still picture
    assert "%matplotlib inline" in code[widget]
    assert "spread_sentence" in code[widget + 1]  # the budgets' range explained with this view's numbers
    assert any('granularity="projection"' in c for c in code)


def test_agreement_sentence_reads_the_table():
    table = pd.DataFrame(dict(sparsity=[0.5, 0.8], n=[18, 18], spearman_rho=[0.62, 0.43], rho_low=[0.2, -0.06],
                              rho_high=[0.85, 0.75], spearman_p=[0.006, 0.075]))
    text = agreement_sentence(table)
    assert "0.5: rho +0.62 [+0.20, +0.85], n = 18" in text and "0.8: rho +0.43 [-0.06, +0.75]" in text
    assert "above 0 at 0.5" in text and "contains 0 at 0.8" in text and "every target" not in text
    every = agreement_sentence(table.assign(rho_low=[0.2, 0.05]))
    assert "every interval lies above 0" in every and "lowest bound is +0.05, at 0.8" in every
    assert "loosely" in every  # never "orders like measured perplexity" without the caveat
    assert "does not reliably" in agreement_sentence(table.assign(rho_low=[-0.1, -0.2]))
    old = table.drop(columns=["rho_low", "rho_high"])  # without intervals: p decides
    assert "above 0 at 0.5" in agreement_sentence(old)


def test_the_widget_holds_one_plotly_figure(state):  # noqa: F811
    """Every plotly FigureWidget carries plotly's 5 MB script in a notebook saved with widget state: the
    explorer has exactly one, with every panel."""
    import ipywidgets
    import plotly.graph_objects as go

    from acttail_lab.widgets.explorer import ExplorerWidget

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    found = [w for w in walk(ExplorerWidget(state).widget()) if isinstance(w, go.FigureWidget)]
    assert len(found) == 1 and isinstance(found[0], ipywidgets.DOMWidget)
    assert {"acttail-mapping", "acttail-heatmap", "acttail-histogram", "acttail-uniform"} <= set(found[0]._dom_classes)
