"""State of the alpha -> sparsity explorer: plain Python, no widgets (testable without a browser).

:class:`ExplorerState` holds the alpha sources (the default model under each
xmin rule, other models already analysed, AlphaPruning's published LLaMA
alphas) and the current :class:`ExplorerSettings`. ``state.update(**changes)``
re-allocates with ``allocation.allocate(table, "acttail", target, ...)`` and
returns an :class:`ExplorerView`: the allocation, the layer x projection
sparsity matrix, the histogram of budgets, the alpha -> sparsity mapping
curve, per-layer numbers next to uniform's, and the estimated model-level
cost of the allocation and of uniform. The cost is read off per-projection
curves of TopK's relative output error measured once on calibration
activations (``sensitivity.cost_table``), so it needs no model run.

An impossible or invalid setting never raises from ``update``: the view comes
back with ``message`` set (and no allocation), which the widget shows.

Default inputs are small committed CSVs (fast and deterministic, e.g. in CI):

- ``data/results/<model>_spectra_<rule>.csv``: ``spectra.analyze(model, xmin=rule)``
  for rule in ks, peak, median;
- ``data/results/<model>_cost_table.csv``: ``sensitivity.cost_table(model)``;
- ``data/results/perplexity_<model>.csv``: measured perplexity per
  (strategy, sparsity), for :func:`strategy_costs` / :func:`rank_agreement`.

When a CSV is missing, the loaders compute the table with the package (on the
real model, cached by those modules).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ..allocation import allocate
from ..allocation.options import DEFAULT_XMIN
from ..core.errors import ActTailError, AllocationError
from ..core.models import PROJECTIONS
from ..core.paths import DEFAULT_MODEL, RESULTS_DIR
from .explorer_costs import SlicePerplexity
from .explorer_sources import AlphaSource, default_sources

HIST_EDGES = np.linspace(0.0, 1.0, 41)
"""Bin edges of the budget histogram (width 0.025, fixed so views are comparable)."""
CURVE_POINTS = 200


# --------------------------------------------------------------------------- files and loaders


# --------------------------------------------------------------------------- sources


# --------------------------------------------------------------------------- settings and view
@dataclass(frozen=True)
class ExplorerSettings:
    """Everything the explorer's controls set.

    target: model-wide (parameter-weighted) sparsity S in [0, 1); epsilon: the
    ratio spread (budgets in [1 - eps, 1 + eps] before scaling); mapping: how
    alpha becomes a score (linear, rank, power, log) with ``power`` the exponent
    of ``power``; granularity: per projection or per block (layer mean alpha);
    direction: alpha_up (higher alpha -> more sparsity) or alpha_down; s_max:
    cap on any one projection's sparsity; xmin: the xmin rule behind alpha (ks,
    peak, median; default the ``acttail`` preset's, ``allocation.options.DEFAULT_XMIN``, so the
    starting view is the preset's allocation); source: key of an AlphaSource.
    """

    target: float = 0.5
    epsilon: float = 0.3
    mapping: str = "linear"
    power: float = 2.0
    granularity: str = "projection"
    direction: str = "alpha_up"
    s_max: float = 0.99
    xmin: str = DEFAULT_XMIN
    source: str = DEFAULT_MODEL

    def allocation_options(self) -> dict:
        """Options for ``allocate(table, "acttail", target, **options)``."""
        options = dict(epsilon=self.epsilon, granularity=self.granularity, direction=self.direction,
                       mapping=self.mapping, s_max=self.s_max)
        if self.mapping == "power":
            options["power"] = self.power
        return options


@dataclass(frozen=True)
class ExplorerView:
    """What the explorer shows for one setting.

    Attributes:
        settings: the setting shown.
        message: why the setting is impossible ("" when it is valid; then the
            tables below are None and cost is NaN).
        note: information that is not an error (e.g. no cost table for this source).
        allocation: ``allocate`` output plus ``alpha_used`` (the alpha the
            mapping read: the projection's, or its layer's mean for block granularity).
        heatmap: sparsity, index = layer, columns = projection kinds.
        histogram: bin_left, bin_right, count (projections per sparsity bin).
        curve: alpha, sparsity: the mapping alpha -> sparsity as a line.
        by_layer: layer, sparsity, uniform_sparsity (parameter-weighted means) and,
            with a cost table, cost, uniform_cost (weighted mean relative output error).
        cost, uniform_cost: estimated model-level cost (parameter-weighted mean
            relative output error of TopK) of the allocation and of uniform at S; NaN without a cost table.
        seconds: time spent computing the view.
    """

    settings: ExplorerSettings
    message: str = ""
    note: str = ""
    allocation: pd.DataFrame | None = None
    heatmap: pd.DataFrame | None = None
    histogram: pd.DataFrame | None = None
    curve: pd.DataFrame | None = None
    by_layer: pd.DataFrame | None = None
    cost: float = math.nan
    uniform_cost: float = math.nan
    seconds: float = 0.0

    @property
    def valid(self) -> bool:
        return not self.message

    @property
    def cost_ratio(self) -> float:
        """cost / uniform_cost (NaN when either is unknown)."""
        if not (np.isfinite(self.cost) and np.isfinite(self.uniform_cost)) or self.uniform_cost <= 0:
            return math.nan
        return self.cost / self.uniform_cost

    def cost_text(self) -> str:
        """One line for humans: the estimate, uniform's, and their ratio."""
        if not self.valid:
            return "estimated cost: - (impossible setting)"
        if not np.isfinite(self.cost):
            return "estimated cost: - (no cost table for this source)"
        return (f"estimated cost {self.cost:.4f} vs uniform {self.uniform_cost:.4f} "
                f"(ratio {self.cost_ratio:.3f}; parameter-weighted relative output error of TopK)")


@dataclass(frozen=True)
class _Prepared:
    """Per (source, rule): the table and the index arrays every view reuses."""

    table: pd.DataFrame
    layers: np.ndarray          # sorted unique layers (heat-map rows)
    kinds: list[str]            # projection kinds present, in PROJECTIONS order (columns)
    row: np.ndarray             # heat-map row of each projection
    col: np.ndarray             # heat-map column of each projection
    n_params: np.ndarray
    curves: object | None       # sensitivity CostCurves or None
    cost_pos: np.ndarray | None  # table row of each curve (curves order)


def _prepare(table: pd.DataFrame, curves) -> tuple[_Prepared, str]:
    layers, row = np.unique(table["layer"].to_numpy(), return_inverse=True)
    kinds = [k for k in PROJECTIONS if k in set(table["projection"])]
    kinds += sorted(set(table["projection"]) - set(kinds))
    col = table["projection"].map({k: i for i, k in enumerate(kinds)}).to_numpy()
    note, pos = "", None
    if curves is not None:
        names = table["name"] if "name" in table.columns else pd.Series([], dtype=str)
        pos = pd.Index(names).get_indexer(curves.table["name"])
        if np.any(pos < 0) or len(curves.table) != len(table):
            note = ("The cost table does not cover this alpha table's projections (another model?): "
                    "no cost estimate.")
            curves, pos = None, None
    prepared = _Prepared(table=table, layers=layers, kinds=kinds, row=row, col=col,
                         n_params=table["n_params"].to_numpy(dtype=float), curves=curves, cost_pos=pos)
    return prepared, note


# --------------------------------------------------------------------------- the state
class ExplorerState:
    """The explorer without a browser: settings in, :class:`ExplorerView` out.

    Args:
        sources: key -> AlphaSource, or a list of AlphaSource keyed by their names
            (default: :func:`default_sources`).
        settings: initial settings (default: ExplorerSettings(), with the first
            source when the default model is not among ``sources``).
        evaluator: callable ``(state, allocation, progress) -> dict`` used by
            :meth:`evaluate_perplexity` (default: :class:`SlicePerplexity`).
    Attributes: ``settings``, ``view`` (the last view), ``results`` (one row per
    perplexity evaluation).
    """

    def __init__(self, sources: Mapping[str, AlphaSource] | list[AlphaSource] | None = None,
                 settings: ExplorerSettings | None = None, evaluator: Callable | None = None):
        sources = default_sources() if sources is None else sources
        self.sources = dict(sources) if isinstance(sources, Mapping) else {s.name: s for s in sources}
        if not self.sources:
            raise AllocationError("ExplorerState needs at least one alpha source.")
        settings = settings or ExplorerSettings()
        if settings.source not in self.sources:
            settings = dataclasses.replace(settings, source=next(iter(self.sources)))
        self.settings = settings
        self.evaluator = evaluator
        self.results = pd.DataFrame()
        self._prepared: dict[tuple[str, str], tuple[_Prepared, str]] = {}
        self.view = self.compute(self.settings)

    # -- settings
    @staticmethod
    def fields() -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(ExplorerSettings))

    def source_options(self) -> list[tuple[str, str]]:
        """(label, key) pairs for a dropdown."""
        return [(s.label, key) for key, s in self.sources.items()]

    def update(self, **changes) -> ExplorerView:
        """Apply ``changes`` (ExplorerSettings field names) and return the new view (also ``self.view``).

        Unknown field names raise TypeError (a programming error). Impossible
        values never raise: the view carries a message instead.
        """
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise TypeError(f"Unknown explorer setting(s) {unknown}; settings are {list(self.fields())}.")
        self.settings = dataclasses.replace(self.settings, **changes)
        self.view = self.compute(self.settings)
        return self.view

    def rule_for(self, settings: ExplorerSettings | None = None) -> str:
        """The xmin rule actually used: the source's fixed rule, else the setting."""
        settings = settings or self.settings
        source = self.sources.get(settings.source)
        return (source.fixed_rule if source is not None else None) or settings.xmin

    def _prepared_for(self, settings: ExplorerSettings) -> tuple[_Prepared, str]:
        """The prepared table of ``settings``' source and rule (loaded once) and a note."""
        if settings.source not in self.sources:
            raise AllocationError(f"Unknown alpha source {settings.source!r}. Sources: {', '.join(self.sources)}.")
        source = self.sources[settings.source]
        key = (settings.source, self.rule_for(settings))
        if key not in self._prepared:
            table = source.table(key[1])
            try:
                curves, failed = source.curves(), ""
            except (ActTailError, ImportError, OSError) as exc:  # alphas without a cost estimate still work
                curves, failed = None, f"No cost estimate: {_message(exc)}"
            prepared, note = _prepare(table, curves)
            self._prepared[key] = (prepared, " ".join(filter(None, [failed, note])))
        return self._prepared[key]

    # -- views
    def compute(self, settings: ExplorerSettings) -> ExplorerView:
        """The view of ``settings`` (does not change the state)."""
        start = time.perf_counter()
        try:
            prep, note = self._prepared_for(settings)
            view = _compute_view(prep, settings, note)
        except (ActTailError, ImportError, OSError) as exc:
            view = ExplorerView(settings=settings, message=_message(exc))
        source = self.sources.get(settings.source)
        if view.valid and source is not None and source.fixed_rule and settings.xmin != source.fixed_rule:
            extra = (f"{source.label}: alphas come with the xmin rule '{source.fixed_rule}'; "
                     "the xmin control does not apply.")
            view = dataclasses.replace(view, note=" ".join(filter(None, [view.note, extra])))
        return dataclasses.replace(view, seconds=time.perf_counter() - start)

    # -- perplexity
    def evaluate_perplexity(self, progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
        """Measure the current allocation's perplexity on a small slice and append a row to ``results``.

        ``progress(done, total)`` is called as windows finish. Returns ``results``.
        Raises ActTailError when the setting is impossible or the source has no model to run.
        """
        view = self.view
        if not view.valid:
            raise AllocationError(f"Nothing to evaluate: {view.message}")
        evaluator = self.evaluator or SlicePerplexity()
        measured = evaluator(self, view.allocation, progress)
        settings = dataclasses.asdict(view.settings)
        settings["xmin"] = self.rule_for(view.settings)
        row = dict(settings, estimated_cost=view.cost, uniform_cost=view.uniform_cost, **measured)
        self.results = pd.concat([self.results, pd.DataFrame([row])], ignore_index=True)
        return self.results


def spread(view: ExplorerView) -> dict:
    """Why the budgets of ``view`` span what they span (a valid view).

    ``allocate`` maps alpha to ratios r_i in [1 - eps, 1 + eps], then solves one scale c so that the
    parameter-weighted mean of min(c r_i, s_max) is S. So the budgets lie in c [1 - eps, 1 + eps] (not
    S +- eps): c = S / (weighted mean ratio) when nothing is clipped, above S when the largest
    projections get ratios below 1, and raised further when clipped projections hand their excess to the
    others. Output: dict(scale, ratio_min, ratio_max, weighted_ratio (parameter-weighted mean of r),
    low, high (the budgets' range), n_clipped (projections at s_max), n).
    """
    if not view.valid:
        raise AllocationError(f"The view is not valid: {view.message}")
    alloc, s = view.allocation, view.settings
    ratio, sparsity = alloc["ratio"].to_numpy(float), alloc["sparsity"].to_numpy(float)
    clipped = sparsity >= s.s_max - 1e-12
    free = ~clipped & (ratio > 0)
    scale = float(np.median(sparsity[free] / ratio[free])) if free.any() else math.nan
    return dict(scale=scale, ratio_min=float(ratio.min()), ratio_max=float(ratio.max()),
                weighted_ratio=float(np.average(ratio, weights=alloc["n_params"].to_numpy(float))),
                low=float(sparsity.min()), high=float(sparsity.max()), n_clipped=int(clipped.sum()), n=len(alloc))


def spread_sentence(view: ExplorerView) -> str:
    """:func:`spread` in words, for the page under the still picture."""
    d, s = spread(view), view.settings
    text = (f"At S={s.target:.2f} and eps={s.epsilon:.2f} the alphas become ratios from {d['ratio_min']:.2f} to "
            f"{d['ratio_max']:.2f}; their parameter-weighted mean is {d['weighted_ratio']:.2f}, so the solver "
            f"multiplies them by c = {d['scale']:.2f} to meet S, and the budgets span {d['low']:.2f}-{d['high']:.2f}, "
            f"c x [1 - eps, 1 + eps] rather than S +- eps")
    if d["n_clipped"]:
        text += (f"; {d['n_clipped']} of {d['n']} projections hit s_max={s.s_max:.2f} and the solver re-spreads "
                 "what they cannot take over the others, which raises c")
    else:
        text += f"; no projection reaches s_max={s.s_max:.2f}"
    return text + "."


def _message(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return (f"Could not load these alphas: {exc}. Fix: commit the CSVs under {RESULTS_DIR} "
                "(see acttail_lab.report.explorer) or install the missing module.")
    return str(exc)


def _compute_view(prep: _Prepared, settings: ExplorerSettings, note: str) -> ExplorerView:
    table = prep.table
    allocation = allocate(table, "acttail", settings.target, label="explorer", **settings.allocation_options())
    alpha = table["alpha"].to_numpy(dtype=float)
    used = _alpha_used(alpha, prep.row, len(prep.layers)) if settings.granularity == "block" else alpha
    allocation["alpha_used"] = used
    s = allocation["sparsity"].to_numpy()
    ratio = allocation["ratio"].to_numpy()
    heat = np.full((len(prep.layers), len(prep.kinds)), np.nan)
    heat[prep.row, prep.col] = s
    counts, _ = np.histogram(s, HIST_EDGES)
    cost = uniform_cost = math.nan
    layer_weight = np.bincount(prep.row, prep.n_params, len(prep.layers))
    by_layer = {"layer": prep.layers,
                "sparsity": np.bincount(prep.row, s * prep.n_params, len(prep.layers)) / layer_weight,
                "uniform_sparsity": np.full(len(prep.layers), settings.target)}
    if prep.curves is not None:
        curves, pos = prep.curves, prep.cost_pos
        per_curve = curves.evaluate(s[pos])
        per_curve_uniform = curves.evaluate_all(settings.target)
        cost = float(np.dot(prep.n_params[pos], per_curve) / prep.n_params.sum())
        uniform_cost = float(np.dot(prep.n_params[pos], per_curve_uniform) / prep.n_params.sum())
        rows, weights = prep.row[pos], prep.n_params[pos]
        by_layer["cost"] = np.bincount(rows, weights * per_curve, len(prep.layers)) / layer_weight
        by_layer["uniform_cost"] = np.bincount(rows, weights * per_curve_uniform, len(prep.layers)) / layer_weight
    return ExplorerView(
        settings=settings, note=note, allocation=allocation,
        heatmap=pd.DataFrame(heat, index=pd.Index(prep.layers, name="layer"),
                             columns=pd.Index(prep.kinds, name="projection")),
        histogram=pd.DataFrame({"bin_left": HIST_EDGES[:-1], "bin_right": HIST_EDGES[1:], "count": counts}),
        curve=_mapping_curve(used, s, ratio, settings),
        by_layer=pd.DataFrame(by_layer), cost=cost, uniform_cost=uniform_cost)


def _alpha_used(alpha: np.ndarray, row: np.ndarray, n_rows: int) -> np.ndarray:
    """Each projection's layer-mean alpha (AlphaPruning's block granularity: a plain mean)."""
    mean = np.bincount(row, alpha, n_rows) / np.bincount(row, minlength=n_rows)
    return mean[row]


def _mapping_curve(used: np.ndarray, sparsity: np.ndarray, ratio: np.ndarray,
                   settings: ExplorerSettings) -> pd.DataFrame:
    """The mapping alpha -> sparsity as a line through the projections' points.

    For linear, power and log mappings it is the formula itself on a grid over
    [min alpha, max alpha] (plus every projection's alpha) (which fixes the same min-max normalisation), times
    the solved scale, clipped at s_max. The rank mapping depends on the other
    alphas, so its line joins the points in alpha order.
    """
    from ..allocation.strategies import acttail_ratios

    if settings.mapping == "rank" or np.ptp(used) == 0:
        order = np.argsort(used, kind="stable")
        return pd.DataFrame({"alpha": used[order], "sparsity": sparsity[order]})
    free = (sparsity < settings.s_max - 1e-12) & (ratio > 0)
    scale = float(np.median(sparsity[free] / ratio[free])) if free.any() else settings.s_max / float(ratio.min())
    # the projections' own alphas join the grid, so the line passes exactly through every dot (also next to
    # the kink where c * r reaches s_max, which a plain grid would cut)
    grid = np.union1d(np.linspace(used.min(), used.max(), CURVE_POINTS), used)
    options = dict(epsilon=settings.epsilon, direction=settings.direction, mapping=settings.mapping)
    if settings.mapping == "power":
        options["power"] = settings.power
    grid_table = pd.DataFrame({"alpha": grid, "layer": np.arange(len(grid))})
    r = acttail_ratios(grid_table, granularity="projection", **options)
    return pd.DataFrame({"alpha": grid, "sparsity": np.minimum(scale * r, settings.s_max)})


# --------------------------------------------------------------------------- perplexity on a slice


# --------------------------------------------------------------------------- estimate vs measurement


