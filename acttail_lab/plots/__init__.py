"""Plot helpers (matplotlib, no pyplot state). The ESD helpers (``plots.esd``) take ``ax=None`` and return the Axes."""
from .esd import (  # noqa: F401
    alpha_matrix,
    plot_alpha_by_depth,
    plot_alpha_by_kind,
    plot_alpha_heatmap,
    plot_alpha_scatter,
    plot_esd,
    plot_esd_grid,
    plot_mean_alpha_by_kind,
    power_law_density,
)
from .ks_curve import plot_ks_curve  # noqa: F401,E402
from .rmt import plot_mp_fit, plot_tail_index_sweep  # noqa: F401,E402
