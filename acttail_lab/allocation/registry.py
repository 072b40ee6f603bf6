"""Registries: strategies (here) and methods (``sparsify.registry``) register themselves by name.

A strategy is registered next to its definition (lm-evaluation-harness
``@register_model`` style)::

    @register_strategy("uniform")
    def uniform_ratios(table): ...

or, for a strategy solved from a measured table, with an entry object::

    register_strategy(CostStrategy("surrogate-optimal", solve=..., defaults={...}))

The entry says what the strategy reads (``needs_alpha``; ``inputs(resolved)``:
the measured tables, e.g. ``{"greedy_path": {"s_max": 0.99}}``) and how it
turns a table into budgets (``entry.allocate``). There are three kinds:

- :class:`RatioStrategy`: relative budgets per projection, scaled to the target by ``solver.solve_scale``;
- :class:`CostStrategy`: solved from a measured cost table (input ``"cost"``);
- :class:`PathStrategy`: read off TEAL's measured greedy path (input ``"greedy_path"``, one per ``s_max``).

The built-in strategies live in ``strategies.py``, ``cost_solvers.py`` and
``greedy_path.py``; ``presets.py`` imports them, so any import of
``acttail_lab.allocation`` registers them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Iterator, Mapping, TypeVar

import numpy as np
import pandas as pd

from ..core.errors import AllocationError
from .options import ESTIMATOR_OPTION, XMIN_OPTION, option_columns, resolve
from .solver import solve_scale
from .tables import IDENTITY_COLUMNS

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries, filled by ``register``; unknown or repeated names are clear errors."""

    def __init__(self, kind: str, example: str = ""):
        self.kind = kind
        self.example = example
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if not isinstance(name, str) or not name:
            raise AllocationError(f"A {self.kind} name must be a non-empty string, got {name!r}.")
        if name in self._entries:
            raise AllocationError(f"A {self.kind} named {name!r} is already registered. "
                                  f"Fix: pick another name (registered: {', '.join(self._entries)}).")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and notebooks that register a throw-away entry)."""
        self._entries.pop(name, None)

    def get(self, name) -> T:
        if name not in self._entries:
            raise AllocationError(f"Unknown {self.kind} {name!r}. Registered {self.kind}s: "
                                  f"{', '.join(self._entries) or 'none'}.{self.example}")
        return self._entries[name]

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name) -> T:
        return self.get(name)

    def keys(self):
        return self._entries.keys()

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()


# --------------------------------------------------------------------------- strategy kinds
@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy: its options (defaults, extra validators) and what it reads."""

    name: str
    defaults: Mapping[str, object] = field(default_factory=dict)
    needs_alpha: bool = False
    validators: Mapping[str, Callable] = field(default_factory=dict)

    @property
    def needs_cost(self) -> bool:
        """True when the strategy is solved from a measured table rather than from ratios."""
        return False

    def resolve(self, options: Mapping[str, object]) -> dict[str, object]:
        """The defaults overridden by ``options``, each checked (``options.resolve``). An alpha-based
        strategy also takes ``estimator`` (default ``"plain"``; ``options.ESTIMATOR_OPTION``) and ``xmin``
        (default unset: the table's rule; ``options.XMIN_OPTION``)."""
        alpha_options = {ESTIMATOR_OPTION: "plain", XMIN_OPTION: None}
        defaults = {**self.defaults, **alpha_options} if self.needs_alpha else self.defaults
        return resolve(self.name, defaults, options, self.validators)

    def inputs(self, resolved: Mapping[str, object]) -> dict[str, dict]:
        """Measured tables the strategy reads: input name -> the parameters it is computed with."""
        return {}

    def allocate(self, table: pd.DataFrame, spec, target: float, inputs: Mapping[str, object]) -> pd.DataFrame:
        raise NotImplementedError


@dataclass(frozen=True)
class RatioStrategy(StrategyEntry):
    """Relative budgets ``ratios(table, **options)``, scaled to the target over the rows of ``spec.kinds``."""

    ratios: Callable[..., np.ndarray] | None = None

    def allocate(self, table, spec, target, inputs):
        resolved = spec.resolved
        ratio_options = {k: v for k, v in resolved.items() if k not in ("s_max", ESTIMATOR_OPTION, XMIN_OPTION)}
        selected = _selected_rows(table, spec.kinds)
        ratios = np.zeros(len(table))
        sparsity = np.zeros(len(table))
        part = table[selected].reset_index(drop=True)
        ratios[selected] = self.ratios(part, **ratio_options)
        sparsity[selected] = solve_scale(ratios[selected], part["n_params"].to_numpy(dtype=float), target,
                                         resolved.get("s_max", 1.0))
        return allocation_frame(table, ratios, sparsity, spec, target, resolved)


@dataclass(frozen=True)
class _MeasuredStrategy(StrategyEntry):
    """A strategy solved over every projection from one measured input table."""

    input: str = ""
    missing_fix: str = ""

    @property
    def needs_cost(self) -> bool:
        return True

    def inputs(self, resolved):
        return {self.input: {}}

    def _measured(self, spec, inputs) -> pd.DataFrame:
        if spec.kinds is not None:
            raise AllocationError(f"kinds= restricts ratio strategies only; {spec.strategy!r} is solved over every "
                                  "projection. Fix: drop kinds=, or use uniform / acttail / shuffled / kind.")
        measured = inputs.get(self.input)
        if measured is None:
            raise AllocationError(self.missing_fix)
        return measured


@dataclass(frozen=True)
class CostStrategy(_MeasuredStrategy):
    """Solved from a measured cost table: ``solve(table, cost, target, label=..., **options)``."""

    solve: Callable[..., pd.DataFrame] | None = None
    input: str = "cost"

    def allocate(self, table, spec, target, inputs):
        cost = self._measured(spec, inputs)
        options = {k: v for k, v in spec.resolved.items()
                   if k not in (ESTIMATOR_OPTION, XMIN_OPTION)}  # they chose the table
        out = self.solve(table, cost, target, label=spec.label, **options)
        if "name" in table.columns:  # same row order as the input table
            out = out.set_index("name").loc[table["name"]].reset_index()
        return out


@dataclass(frozen=True)
class PathStrategy(_MeasuredStrategy):
    """Read off a measured greedy path (one per ``s_max``): ``read(path, target, label=...)``."""

    read: Callable[..., pd.DataFrame] | None = None
    input: str = "greedy_path"

    def inputs(self, resolved):
        fine = {"steps": resolved["steps"]} if resolved.get("steps", "block") != "block" else {}
        return {self.input: {"s_max": resolved["s_max"], **fine}}

    def allocate(self, table, spec, target, inputs):
        path = self._measured(spec, inputs)
        resolved = spec.resolved
        if float(path["sparsity"].max()) > resolved["s_max"] + 1e-12:
            raise AllocationError(f"The greedy path goes above s_max={resolved['s_max']}. "
                                  "Fix: recompute it with greedy_path(model, s_max=...) at the same s_max.")
        out = self.read(path, target, label=spec.label)
        for name, value in option_columns(resolved).items():
            out[name] = value
        if "name" in table.columns:  # same row order as the input table
            missing = sorted(set(table["name"]) - set(out["name"]))
            if missing:
                raise AllocationError(f"The greedy path has no rows for {missing[:3]}. "
                                      "Fix: compute greedy_path on the same model as the table.")
            out = out.set_index("name").loc[table["name"]].reset_index()
        return out


STRATEGIES: Registry[StrategyEntry] = Registry(
    "strategy", " Options go in brackets, e.g. acttail[eps=0.2;granularity=block].")
"""Every registered strategy, by name (filled by :func:`register_strategy`)."""


def register_strategy(entry_or_name, *, defaults: Mapping[str, object] | None = None, needs_alpha: bool = False,
                      validators: Mapping[str, Callable] | None = None):
    """Register a strategy: an entry object, or ``@register_strategy(name, defaults=..., needs_alpha=...)``
    on a ratio function ``table, **options -> ratios`` (a :class:`RatioStrategy`). Returns what it was given."""
    if isinstance(entry_or_name, StrategyEntry):
        return STRATEGIES.register(entry_or_name.name, entry_or_name)

    def decorator(ratios):
        STRATEGIES.register(entry_or_name, RatioStrategy(entry_or_name, dict(defaults or {}), needs_alpha,
                                                         dict(validators or {}), ratios=ratios))
        return ratios

    return decorator


def get_strategy(name: str) -> StrategyEntry:
    """The registered strategy ``name``; AllocationError listing the registered ones otherwise."""
    return STRATEGIES.get(name)


# --------------------------------------------------------------------------- shared output
def _selected_rows(table: pd.DataFrame, kinds) -> np.ndarray:
    """Boolean mask of the rows whose projection kind gets a budget (all rows when ``kinds`` is None)."""
    if kinds is None:
        return np.ones(len(table), dtype=bool)
    mask = table["projection"].isin(kinds).to_numpy()
    if not mask.any():
        raise AllocationError(f"No projection of kinds {list(kinds)} in the table. Fix: list kinds the model has.")
    return mask


def allocation_frame(table: pd.DataFrame, ratios: np.ndarray, sparsity: np.ndarray, spec, target: float,
                     resolved: Mapping[str, object]) -> pd.DataFrame:
    """The allocation schema: identity columns, ratio, sparsity, label, strategy, target, options, method, kinds."""
    out = table[[c for c in IDENTITY_COLUMNS if c in table.columns]].reset_index(drop=True).copy()
    if "xmin_rule" not in out and "xmin_rule" in table.attrs:
        out["xmin_rule"] = table.attrs["xmin_rule"]
    out["ratio"] = ratios
    out["sparsity"] = sparsity
    out["label"] = spec.label
    out["strategy"] = spec.strategy
    out["target"] = target
    for name, value in option_columns(resolved).items():
        out[name] = value
    if spec.method != "topk":
        out["method"] = spec.method
    if spec.kinds is not None:
        out["kinds"] = "+".join(spec.kinds)
    out.attrs = {k: v for k, v in table.attrs.items() if isinstance(v, (str, int, float))}
    return out
