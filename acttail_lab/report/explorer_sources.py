"""Where the alpha-to-sparsity explorer's alphas come from: committed spectra, cost tables and published alphas.

:class:`AlphaSource` holds one set of alpha tables (per xmin rule) with the model shapes;
:func:`default_sources` builds the committed SmolLM2 source(s) and the published LLaMA-2
alphas; ``load_spectra`` / ``load_cost_table`` read the committed CSVs (or measure them on
request). Paths come from :mod:`acttail_lab.core.paths`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from ..core.errors import AllocationError, ModelNotFoundError
from ..core.paths import DEFAULT_MODEL, RESULTS_DIR, result_path
from ..core.reference import MODEL_SHAPES, published_alphas
from .results import perplexity_path

XMIN_RULES = ("ks", "peak", "median")


PUBLISHED_PREFIX = "published:"


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

    def cost_table(self) -> pd.DataFrame | None:
        """The cost table itself (``sensitivity.cost_table``: one row per projection and level), loaded
        once, or None when the source has none (what ``surrogate-optimal`` / ``hybrid`` are solved from)."""
        if not hasattr(self, "_cost_table"):
            self._cost_table = self._cost() if callable(self._cost) else self._cost
        return self._cost_table

    def curves(self):
        """``sensitivity.cost_curves`` of the cost table, or None when the source has none."""
        if not self._curves_loaded:
            cost = self.cost_table()
            if cost is not None:
                from ..allocation.cost_model import cost_curves

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
