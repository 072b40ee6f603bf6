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
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from ..allocation import allocate, parse_strategy
from ..core.errors import ActTailError, AllocationError, ModelNotFoundError
from ..core.models import PROJECTIONS
from ..core.paths import DEFAULT_MODEL, RESULTS_DIR, result_path
from ..core.reference import MODEL_SHAPES, published_alphas
from .results import perplexity_path

XMIN_RULES = ("ks", "peak", "median")
PUBLISHED_PREFIX = "published:"
HIST_EDGES = np.linspace(0.0, 1.0, 41)
"""Bin edges of the budget histogram (width 0.025, fixed so views are comparable)."""
CURVE_POINTS = 200


# --------------------------------------------------------------------------- files and loaders
def spectra_csv_path(model: str = DEFAULT_MODEL, rule: str = "ks", results_dir: str | Path = RESULTS_DIR) -> Path:
    """``<results_dir>/<model>_spectra_<rule>.csv``: an ``analyze(model, xmin=rule)`` table."""
    return result_path("spectra", model, results_dir, rule=rule)


def cost_csv_path(model: str = DEFAULT_MODEL, results_dir: str | Path = RESULTS_DIR) -> Path:
    """``<results_dir>/<model>_cost_table.csv``: a ``sensitivity.cost_table(model)`` table."""
    return result_path("cost_table", model, results_dir)


def perplexity_csv_path(model: str = DEFAULT_MODEL, results_dir: str | Path = RESULTS_DIR) -> Path:
    """``<results_dir>/perplexity_<model>.csv``: columns strategy, sparsity, perplexity, ..."""
    return perplexity_path(model, results_dir)


@functools.lru_cache(maxsize=2)
def _loaded_model(name: str):
    from ..core.models import load_model

    return load_model(name)


def load_spectra(model: str = DEFAULT_MODEL, rule: str = "ks", results_dir: str | Path = RESULTS_DIR,
                 compute: bool = True) -> pd.DataFrame:
    """The alpha table of ``model`` under xmin ``rule``: the committed CSV, else ``spectra.analyze``.

    Output: one row per projection (layer, projection, name, d_out, d_in,
    n_params, alpha, ...). With ``compute=False`` a missing CSV raises
    ModelNotFoundError instead of loading the model.
    """
    if rule not in XMIN_RULES:
        raise AllocationError(f"xmin rule {rule!r} is not one of {XMIN_RULES}. Fix: pick one of those.")
    path = spectra_csv_path(model, rule, results_dir)
    if path.exists():
        return pd.read_csv(path)
    if not compute:
        raise ModelNotFoundError(f"No spectra table at {path}. Fix: run spectra.analyze(load_model({model!r}), "
                                 f"xmin={rule!r}) and save it there, or pass compute=True.")
    from ..spectral.spectra import analyze

    return analyze(_loaded_model(model), xmin=rule, progress=False)


def load_cost_table(model: str = DEFAULT_MODEL, results_dir: str | Path = RESULTS_DIR,
                    compute: bool = True) -> pd.DataFrame:
    """The TopK cost table of ``model``: the committed CSV, else ``sensitivity.cost_table`` (cached)."""
    path = cost_csv_path(model, results_dir)
    if path.exists():
        return pd.read_csv(path)
    if not compute:
        raise ModelNotFoundError(f"No cost table at {path}. Fix: run sensitivity.cost_table(load_model({model!r})) "
                                 "and save it there, or pass compute=True.")
    from ..measure.sensitivity import cost_table

    return cost_table(_loaded_model(model), progress=False)


def analysed_models(results_dir: str | Path = RESULTS_DIR) -> list[str]:
    """Models with at least one ``<model>_spectra_<rule>.csv`` in ``results_dir`` (sorted)."""
    found = set()
    for path in Path(results_dir).glob("*_spectra_*.csv"):
        model, _, rule = path.stem.rpartition("_spectra_")
        if rule in XMIN_RULES and model:
            found.add(model)
    return sorted(found)


# --------------------------------------------------------------------------- sources
class AlphaSource:
    """Where a projection table with alphas (and optionally a cost table) comes from.

    Args:
        name: key used in settings (``"smollm2-135m"``, ``"published:llama2-70b"``).
        alphas: xmin rule -> alpha table, or a callable ``rule -> table`` (called lazily, once per rule).
        rules: the rules offered; a source with one fixed rule ignores the xmin setting.
        cost: a cost table, a callable returning one (or None), or None (no cost estimate).
        model: name for ``models.load_model`` to evaluate perplexity, or None.
        label: text shown in the source dropdown.
    """

    def __init__(self, name: str, alphas: Mapping[str, pd.DataFrame] | Callable[[str], pd.DataFrame],
                 rules: tuple[str, ...] = XMIN_RULES, cost=None, model: str | None = None,
                 label: str | None = None):
        self.name = name
        self.label = label or name
        self.rules = tuple(rules)
        self.model = model
        self._alphas = alphas
        self._cost = cost
        self._tables: dict[str, pd.DataFrame] = {}
        self._curves = None
        self._curves_loaded = False

    @classmethod
    def for_model(cls, model: str = DEFAULT_MODEL, results_dir: str | Path = RESULTS_DIR,
                  compute: bool = True) -> "AlphaSource":
        """A model analysed by the package: CSVs from ``results_dir`` (computed if missing and ``compute``)."""
        def cost():
            path = cost_csv_path(model, results_dir)
            return load_cost_table(model, results_dir, compute) if compute or path.exists() else None

        return cls(model, lambda rule: load_spectra(model, rule, results_dir, compute), XMIN_RULES,
                   cost=cost, model=model, label=f"{model} (this model)")

    @classmethod
    def published(cls, key: str) -> "AlphaSource":
        """AlphaPruning's published alpha_peak of a LLaMA model (xmin rule fixed to peak, no cost table)."""
        return cls(PUBLISHED_PREFIX + key, lambda rule: published_alphas(key), rules=("peak",),
                   label=f"{key} (published alpha_peak)")

    @property
    def fixed_rule(self) -> str | None:
        """The only rule when the source offers one, else None."""
        return self.rules[0] if len(self.rules) == 1 else None

    def table(self, rule: str) -> pd.DataFrame:
        """The alpha table under ``rule`` (``fixed_rule`` wins), loaded once."""
        rule = self.fixed_rule or rule
        if rule not in self.rules:
            raise AllocationError(f"Source {self.name!r} has no alphas for xmin rule {rule!r} "
                                  f"(has {list(self.rules)}). Fix: pick one of those.")
        if rule not in self._tables:
            loader = self._alphas
            table = loader(rule) if callable(loader) else loader[rule]
            self._tables[rule] = table.reset_index(drop=True)
        return self._tables[rule]

    def curves(self):
        """``sensitivity.cost_curves`` of the cost table, or None when the source has none."""
        if not self._curves_loaded:
            cost = self._cost() if callable(self._cost) else self._cost
            if cost is not None:
                from ..measure.sensitivity import cost_curves

                self._curves = cost_curves(cost)
            self._curves_loaded = True
        return self._curves


def default_sources(results_dir: str | Path = RESULTS_DIR, model: str = DEFAULT_MODEL,
                    published: tuple[str, ...] = tuple(MODEL_SHAPES), compute: bool = True) -> dict[str, AlphaSource]:
    """The default model, every other model analysed in ``results_dir``, then the published LLaMA alphas."""
    names = [model] + [m for m in analysed_models(results_dir) if m != model]
    sources = {m: AlphaSource.for_model(m, results_dir, compute=compute if m == model else False) for m in names}
    for key in published:
        source = AlphaSource.published(key)
        sources[source.name] = source
    return sources


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
    peak, median); source: key of an AlphaSource.
    """

    target: float = 0.5
    epsilon: float = 0.3
    mapping: str = "linear"
    power: float = 2.0
    granularity: str = "projection"
    direction: str = "alpha_up"
    s_max: float = 0.99
    xmin: str = "ks"
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
    [min alpha, max alpha] (which fixes the same min-max normalisation), times
    the solved scale, clipped at s_max. The rank mapping depends on the other
    alphas, so its line joins the points in alpha order.
    """
    from ..allocation.strategies import acttail_ratios

    if settings.mapping == "rank" or np.ptp(used) == 0:
        order = np.argsort(used, kind="stable")
        return pd.DataFrame({"alpha": used[order], "sparsity": sparsity[order]})
    free = (sparsity < settings.s_max - 1e-12) & (ratio > 0)
    scale = float(np.median(sparsity[free] / ratio[free])) if free.any() else settings.s_max / float(ratio.min())
    grid = np.linspace(used.min(), used.max(), CURVE_POINTS)
    options = dict(epsilon=settings.epsilon, direction=settings.direction, mapping=settings.mapping)
    if settings.mapping == "power":
        options["power"] = settings.power
    grid_table = pd.DataFrame({"alpha": grid, "layer": np.arange(len(grid))})
    r = acttail_ratios(grid_table, granularity="projection", **options)
    return pd.DataFrame({"alpha": grid, "sparsity": np.minimum(scale * r, settings.s_max)})


# --------------------------------------------------------------------------- perplexity on a slice
class SlicePerplexity:
    """Perplexity of an allocation on a small slice of the evaluation text, one window at a time.

    Args:
        n_tokens: tokens evaluated (``n_tokens // window`` windows of the evaluation split).
        window: tokens per window.
        corpus: corpus name for ``corpus.corpus_text``.
        protocol: TopK protocol passed to ``evaluation.perplexity`` ("all": every token sparsified).
    Called as ``(state, allocation, progress)``; loads the source's model once
    (``models.load_model``), runs ``evaluation.perplexity`` window by window (so
    ``progress(done, total)`` can report) and returns dict(perplexity, n_tokens
    (scored tokens), realised_sparsity, protocol, seconds). The slice
    perplexity is ``exp`` of the token-weighted mean NLL over the windows: the
    same number one call on all windows gives.
    """

    def __init__(self, n_tokens: int = 1024, window: int = 256, corpus: str = "austen", protocol: str = "all"):
        self.n_tokens, self.window, self.corpus, self.protocol = n_tokens, window, corpus, protocol
        self._windows = {}

    def windows(self, loaded) -> "object":
        from ..core.corpus import corpus_text, token_windows

        if loaded.name not in self._windows:
            text = corpus_text(self.corpus, split="evaluation")
            self._windows[loaded.name] = token_windows(loaded.tokenizer, text, window=self.window,
                                                       n_tokens=self.n_tokens)
        return self._windows[loaded.name]

    def __call__(self, state: ExplorerState, allocation: pd.DataFrame,
                 progress: Callable[[int, int], None] | None = None) -> dict:
        from ..measure.grid import perplexity

        source = state.sources[state.settings.source]
        if source.model is None:
            raise ModelNotFoundError(f"{source.label}: there is no model to run for these alphas (only published "
                                     "numbers). Fix: pick a model source to evaluate perplexity.")
        loaded = _loaded_model(source.model)
        windows = self.windows(loaded)
        start, nll, tokens, realised = time.perf_counter(), 0.0, 0, []
        for i in range(len(windows)):
            result = perplexity(loaded, windows[i:i + 1], allocation=allocation, protocol=self.protocol,
                                progress=False)
            nll += result.nll * result.tokens
            tokens += result.tokens
            realised.append(result.realised_sparsity)
            if progress is not None:
                progress(i + 1, len(windows))
        return dict(perplexity=float(math.exp(nll / tokens)), n_tokens=int(tokens),
                    realised_sparsity=float(np.mean(realised)), protocol=self.protocol,
                    seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------- estimate vs measurement
def strategy_costs(runs: pd.DataFrame, tables, cost, default_rule: str = "ks") -> pd.DataFrame:
    """Estimated cost of each measured run's allocation, next to its measured perplexity.

    Inputs: ``runs`` with columns strategy (a preset name or ``NAME[k=v;...]``),
    sparsity (the target), perplexity and optionally xmin_rule, e.g.
    ``data/results/perplexity_<model>.csv`` (``evaluation.evaluate_grid`` output);
    ``tables``: the alpha table the runs were allocated from, or rule -> table
    (a mapping or a callable such as ``AlphaSource.table``), picked by each
    run's xmin_rule (``default_rule`` when absent); ``cost``: a cost table or
    ``sensitivity.cost_curves``. Rows whose strategy is not an allocation
    (e.g. "dense") or whose target is impossible are dropped.
    Output: the kept rows of ``runs`` plus ``estimated_cost``.
    """
    from ..measure.sensitivity import cost_curves, estimate_cost

    curves = cost_curves(cost) if isinstance(cost, pd.DataFrame) else cost
    runs = runs.reset_index(drop=True)
    estimates, keep = [], []
    for i, run in runs.iterrows():
        rule = run.get("xmin_rule")
        rule = default_rule if rule is None or (isinstance(rule, float) and math.isnan(rule)) else str(rule)
        try:
            spec = parse_strategy(str(run["strategy"]))
            table = tables if isinstance(tables, pd.DataFrame) else (
                tables(rule) if callable(tables) else tables[rule])
            allocation = allocate(table, spec, float(run["sparsity"]))
        except AllocationError:
            continue
        keep.append(i)
        estimates.append(estimate_cost(allocation, curves))
    out = runs.iloc[keep].reset_index(drop=True)
    out["estimated_cost"] = estimates
    return out


def measured_rank_agreement(source: AlphaSource, runs_path: str | Path | None = None) -> pd.DataFrame:
    """:func:`rank_agreement` of the cost estimate against the measured perplexity of ``source``'s model.

    ``runs_path`` defaults to ``perplexity_csv_path(source.model)``. Raises
    ModelNotFoundError (with the fix) when the runs file or the cost table is missing.
    """
    path = Path(runs_path) if runs_path is not None else perplexity_csv_path(source.model or source.name)
    if not path.exists():
        raise ModelNotFoundError(f"No measured perplexity at {path} yet, so there is nothing to rank against. "
                                 "Fix: run evaluation.evaluate_grid(...) over the allocation presets and "
                                 f"evaluation.write_results(frame, {str(path)!r}).")
    curves = source.curves()
    if curves is None:
        raise ModelNotFoundError(f"{source.label} has no cost table. Fix: commit {cost_csv_path(source.name)}.")
    return rank_agreement(strategy_costs(pd.read_csv(path), source.table, curves))


def rank_agreement(frame: pd.DataFrame, estimate: str = "estimated_cost", measured: str = "perplexity",
                   by: tuple[str, ...] | None = None) -> pd.DataFrame:
    """How well ``estimate`` ranks runs the way ``measured`` does, within each group.

    ``by`` defaults to whichever of sparsity and protocol ``frame`` has (the
    strategies compared are then at one target under one protocol). Output: one
    row per group: the group keys, n, spearman_rho, spearman_p, kendall_tau,
    kendall_p (NaN when n < 3 or a column is constant), and the strategies in
    measured order. +1 means the estimate orders the strategies exactly as the
    measured perplexity does.
    """
    from scipy.stats import kendalltau, spearmanr

    by = tuple(c for c in ("sparsity", "protocol") if c in frame.columns) if by is None else tuple(by)
    groups = frame.groupby(list(by), sort=True) if by else [((), frame)]
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        x, y = part[estimate].to_numpy(float), part[measured].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho, rho_p = spearmanr(x, y)
            tau, tau_p = kendalltau(x, y)
        else:
            rho = rho_p = tau = tau_p = math.nan
        ordered = part.loc[ok].sort_values(measured)
        strategies = ", ".join(ordered["strategy"].astype(str)) if "strategy" in part else ""
        rows.append(dict(zip(by, key), n=int(len(x)), spearman_rho=float(rho), spearman_p=float(rho_p),
                         kendall_tau=float(tau), kendall_p=float(tau_p), strategies=strategies))
    return pd.DataFrame(rows)
