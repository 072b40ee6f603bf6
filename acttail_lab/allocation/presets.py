"""Named strategies, and the small text syntax the command lines use.

A strategy is written ``NAME`` or ``NAME[key=value;key=value]`` where NAME is
a preset (``acttail-block``) or a strategy (``acttail``). Options are separated
by ``;`` because ``,`` separates strategies in ``--strategies a,b,c``. ``eps``
is accepted for ``epsilon``; for ``kind``, keys that are projection kinds set
the per-kind budgets: ``kind[q=0.5;k=0.5;v=0.5;o=0.6;gate=0.45;up=0.4;down=0.6]``.

Two options belong to every strategy:

* ``method``: how the budgets are applied when a model runs, a name of the
  method registry (``acttail_lab.sparsify.registry``; built in: ``topk``
  (exact TopK, the default), ``rotated`` (TopK on LaRoSA-rotated inputs),
  ``threshold`` (TEAL-style calibrated magnitude thresholds), ``cats``
  (threshold on the MLP gate activation; budget on ``down`` only), ``wina``
  (TopK of ``|x| * ||W col||``) or ``rotated-wina``). This layer
  never applies a method, so it checks only that it is a name; the sparsify
  layer, which owns the registry, checks that it is registered
  (``sparsify.methods.resolve_spec``, ``make_sparsifier``).
* ``kinds``: the projection kinds that get a budget, joined by ``+``
  (``kinds=gate+up+down`` for FFN only); the others stay dense and the target
  is then the parameter-weighted mean over the listed kinds only.

Alpha-based strategies (acttail, shuffled, hybrid) also take ``estimator``:
``plain`` (default) or ``farms`` (alphas of FARMS' fixed-aspect-ratio window
ESDs), e.g. ``acttail[estimator=farms]`` (``options.ESTIMATOR_OPTION``), and
``xmin``: the xmin rule of their alphas (``options.XMIN_OPTION``). A run that
names none uses AlphaPruning's ``peak`` rule (``options.DEFAULT_XMIN``), so the
``acttail`` preset follows ActTail's authors' nearest public code; the KS-rule
version is the named variant ``acttail-ks`` (:func:`with_xmin` fixes the rule
of a run and names any other rule in the label: ``acttail-block[xmin=ks]``).

A spec is parsed once into a :class:`StrategySpec`: its options are checked
then and kept both as given (``options``, which name the result) and resolved
against the strategy's defaults (``resolved``). ``allocate`` itself only uses
``kinds``; ``method`` travels with the spec to the evaluation
(``acttail_lab.sparsify.methods``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from ..core.errors import AllocationError
from ..core.models import PROJECTIONS

# the built-in strategies register themselves when their modules load
from . import cost_solvers, greedy_path, strategies  # noqa: F401
from .options import DEFAULT_XMIN, XMIN_OPTION
from .registry import STRATEGIES, StrategyEntry, get_strategy

_ALIASES = {"eps": "epsilon"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class StrategySpec:
    """One typed run spec: label, registered strategy, its options (checked), method and kinds.

    ``options`` are the options as given (they name the result: ``label`` and the
    grid's ``options`` column); ``resolved`` are the strategy's defaults overridden
    by them, each checked, as ``allocate`` uses them; ``entry`` is the registered
    strategy (``registry.StrategyEntry``): what it reads and how it allocates.
    """

    label: str
    strategy: str
    options: Mapping[str, object] = field(default_factory=dict, hash=False)
    method: str = "topk"
    kinds: tuple[str, ...] | None = None
    resolved: Mapping[str, object] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "method", method_name(self.method))
        object.__setattr__(self, "kinds", check_kinds(self.kinds))
        object.__setattr__(self, "resolved", MappingProxyType(get_strategy(self.strategy).resolve(self.options)))

    @property
    def entry(self) -> StrategyEntry:
        """The registered strategy this spec runs."""
        return get_strategy(self.strategy)


def method_name(method) -> str:
    """``method`` if it is a well-formed method name (registered or not: ``sparsify.registry`` checks that)."""
    if not isinstance(method, str) or not _NAME_RE.match(method):
        raise AllocationError(f"Unknown method {method!r}: a method is a name such as topk, rotated, threshold "
                              "or cats. Fix: e.g. uniform[method=threshold].")
    return method


def check_kinds(kinds) -> tuple[str, ...] | None:
    """``kinds`` as a tuple of projection kinds (from ``"gate+up+down"`` or a sequence), or None for all."""
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.replace(",", "+").split("+") if k.strip()]
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in PROJECTIONS]
    if bad or not kinds:
        raise AllocationError(f"kinds={kinds!r} must list projection kinds from {PROJECTIONS}. "
                              "Fix: e.g. kinds=gate+up+down.")
    return tuple(k for k in PROJECTIONS if k in kinds)


def _preset(label: str, strategy: str, method: str = "topk", kinds=None, **options) -> StrategySpec:
    return StrategySpec(label, strategy, options, method=method, kinds=check_kinds(kinds))


_FFN = ("gate", "up", "down")


STRATEGY_PRESETS: dict[str, StrategySpec] = {spec.label: spec for spec in [
    _preset("uniform", "uniform"),
    _preset("acttail", "acttail", epsilon=0.3, granularity="projection", direction="alpha_up", mapping="linear"),
    _preset("acttail-ks", "acttail", epsilon=0.3, xmin="ks"),
    _preset("acttail-block", "acttail", epsilon=0.3, granularity="block"),
    _preset("acttail-rev", "acttail", epsilon=0.3, direction="alpha_down"),
    _preset("acttail-eps0.1", "acttail", epsilon=0.1),
    _preset("acttail-eps0.5", "acttail", epsilon=0.5),
    _preset("acttail-rank", "acttail", epsilon=0.3, mapping="rank"),
    _preset("acttail-power", "acttail", epsilon=0.3, mapping="power", power=2.0),
    _preset("acttail-fit", "acttail", epsilon=0.3, fit="winsorise"),
    _preset("shuffled", "shuffled", epsilon=0.3, seed=0),
    _preset("teal-kind", "kind"),
    _preset("surrogate-optimal", "surrogate-optimal"),
    _preset("hybrid", "hybrid"),
    _preset("teal-greedy", "teal-greedy"),
    _preset("teal-greedy-fine", "teal-greedy", steps="fine"),
    _preset("rotated-uniform", "uniform", method="rotated"),
    _preset("rotated-acttail", "acttail", method="rotated", epsilon=0.3),
    _preset("teal-threshold", "uniform", method="threshold"),
    _preset("acttail-threshold", "acttail", method="threshold", epsilon=0.3),
    _preset("cats", "uniform", method="cats", kinds=("down",)),
    _preset("ffn-threshold", "uniform", method="threshold", kinds=_FFN),
    _preset("ffn-topk", "uniform", kinds=_FFN),
    _preset("wina", "uniform", method="wina"),
    _preset("acttail-wina", "acttail", method="wina", epsilon=0.3),
    _preset("teal-greedy-wina", "teal-greedy", method="wina"),
    _preset("rotated-wina", "uniform", method="rotated-wina"),
    _preset("acttail-farms", "acttail", epsilon=0.3, estimator="farms"),
    _preset("acttail-block-farms", "acttail", epsilon=0.3, granularity="block", estimator="farms"),
]}
"""Readable names used in result tables -> StrategySpec."""

RENAMED = {"optimal": ("surrogate-optimal", "it is optimal only for the additive relative-error surrogate "
                        "(summed per-projection output errors), and measured worse than uniform at 50-60% on "
                        "SmolLM2; the upper reference is teal-greedy-fine.")}
"""Old strategy names -> (new name, why), so an old command line gets a message naming the new one."""

_SPEC_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[(.*)\])?\s*$")


def _value(text: str):
    """'0.2' -> 0.2, '3' -> 3, 'true' -> True, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def _parse_options(strategy: str, body: str) -> dict[str, object]:
    options: dict[str, object] = {}
    budgets: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in body.split(";"))):
        key, sep, raw = item.partition("=")
        key = _ALIASES.get(key.strip(), key.strip())
        if not sep or not key:
            raise AllocationError(f"Option {item!r} is not key=value. Fix: write e.g. acttail[eps=0.2;granularity=block].")
        if strategy == "kind" and key in PROJECTIONS:
            budgets[key] = _value(raw)
        else:
            options[key] = _value(raw)
    if budgets:
        options["budgets"] = budgets
    return options


def spec_label(base: str, overrides: Mapping[str, object]) -> str:
    """``base`` alone, or ``base[k=v;...]`` when options were added on top of it."""
    if not overrides:
        return base
    added = ";".join(f"{k}={v}" for k, v in overrides.items())
    return f"{base[:-1]};{added}]" if base.endswith("]") else f"{base}[{added}]"


def make_spec(strategy: str | StrategySpec, options: Mapping[str, object] | None = None,
              label: str | None = None) -> StrategySpec:
    """A checked StrategySpec from a preset, strategy name, ``NAME[...]`` text or spec, plus options.

    A StrategySpec with no options and no label passes through unchanged (it was checked when made).
    """
    if isinstance(strategy, StrategySpec) and not options and label is None:
        return strategy
    base = strategy if isinstance(strategy, StrategySpec) else parse_strategy(strategy)
    options = dict(options or {})
    merged = {**base.options, **options}
    method = merged.pop("method", base.method)
    kinds = merged.pop("kinds", base.kinds)
    # StrategySpec checks the options, the method name and the kinds
    return StrategySpec(label or spec_label(base.label, options), base.strategy, merged, method=method,
                        kinds=check_kinds(kinds))


def with_xmin(spec: StrategySpec, rule: str = DEFAULT_XMIN) -> StrategySpec:
    """``spec`` with the xmin rule of its alphas fixed: unchanged when it needs no alphas or names a rule
    itself (``acttail-ks``); else ``rule``, named in the label only when it is not :data:`DEFAULT_XMIN`
    (``acttail-block`` under ``ks`` becomes ``acttail-block[xmin=ks]``), so a label always says its rule."""
    if not spec.entry.needs_alpha or spec.resolved.get(XMIN_OPTION) is not None:
        return spec
    label = spec.label if rule == DEFAULT_XMIN else None
    return make_spec(spec, {XMIN_OPTION: rule}, label=label)


def parse_strategy(text: str) -> StrategySpec:
    """Parse ``NAME`` or ``NAME[key=value;...]`` into a checked StrategySpec.

    NAME is a preset (its options are the starting point) or a strategy.
    The label is NAME, or the text itself when options were given.
    """
    match = _SPEC_RE.match(text or "")
    name = match.group(1) if match else None
    if name in RENAMED:
        raise AllocationError(f"Strategy {name!r} was renamed {RENAMED[name][0]!r}: {RENAMED[name][1]} "
                              f"Fix: write {RENAMED[name][0]}{text.strip()[len(name):]}.")
    if name in STRATEGY_PRESETS:
        base = STRATEGY_PRESETS[name]
    elif name in STRATEGIES:
        base = StrategySpec(name, name, {})
    else:
        raise AllocationError(
            f"Unknown strategy {text!r}. Presets: {', '.join(STRATEGY_PRESETS)}; strategies: "
            f"{', '.join(STRATEGIES)}. Fix: use one of those names (check the spelling); options go in "
            "brackets, e.g. acttail[eps=0.2;granularity=block]."
        )
    overrides = _parse_options(base.strategy, match.group(2) or "")
    return make_spec(base, overrides)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside [...]."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in parts + [current] if p.strip()]


def parse_strategies(text: str) -> list[StrategySpec]:
    """``"uniform,acttail[eps=0.2],teal-kind"`` -> one StrategySpec each; labels must be unique."""
    specs = [parse_strategy(part) for part in _split_top_level(text)]
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise AllocationError(f"Strategy labels repeat: {duplicates}. Fix: list each strategy once.")
    if not specs:
        raise AllocationError("No strategy given. Fix: e.g. --strategies uniform,acttail.")
    return specs


def presets_help() -> str:
    """One line per preset: label = strategy[options]."""
    def text(spec):
        extra = {**spec.options, **({"method": spec.method} if spec.method != "topk" else {}),
                 **({"kinds": "+".join(spec.kinds)} if spec.kinds else {})}
        return spec_label(spec.strategy, extra)

    return "\n".join(f"{label:17s} {text(spec)}" for label, spec in STRATEGY_PRESETS.items())
