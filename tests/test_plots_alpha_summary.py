"""Alpha by depth as small multiples and alpha per kind as dots with spread draw the table's numbers."""
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex

from acttail_lab.core.models import PROJECTIONS
from acttail_lab.plots import style
from acttail_lab.plots.alpha_summary import plot_alpha_depth_panels, plot_alpha_kind_dots


def table(seed=0, n_layers=6):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([dict(layer=layer, projection=k, alpha=float(rng.uniform(2, 8)))
                         for layer in range(n_layers) for k in PROJECTIONS])


def test_depth_panels_one_per_kind_in_its_colour():
    t = table()
    fig = plot_alpha_depth_panels(t)
    assert len(fig.axes) == len(PROJECTIONS)
    for ax, kind in zip(fig.axes, PROJECTIONS):
        own = ax.lines[-1]
        expected = t[t.projection == kind].sort_values("layer")
        assert np.allclose(own.get_ydata(), expected["alpha"]) and own.get_label() == kind
        assert to_hex(own.get_color()) == style.kind_color(kind).lower()
        assert f"median {expected['alpha'].median():.2f}" in ax.get_title()


def test_kind_dots_mean_and_interquartile_per_model():
    tables = {"LLaMA-2-7B": table(1), "SmolLM2-135M (ours)": table(2)}
    ax = plot_alpha_kind_dots(tables)
    assert [c.get_label() for c in ax.containers] == list(tables)
    for container, (label, t) in zip(ax.containers, tables.items()):
        line = container.lines[0]
        means = t.groupby("projection")["alpha"].mean().reindex(list(PROJECTIONS))
        assert np.allclose(line.get_ydata(), means)
        assert to_hex(line.get_color()) == style.series_color(label).lower()
    assert not any(len(line.get_xdata()) > 1 and line.get_linestyle() not in ("None", "") for line in ax.lines)
