"""A run's displayed label is a function of its settings: strategy, options, xmin rule and method.

Result tables name each row by the ``strategy`` column (``acttail``, ``acttail-block[xmin=ks]``, ...). Newer
grids write every setting that differs from the preset's defaults into that name; older ones do not: the
related-methods grid (``perplexity_related_smollm2-135m.csv``) was measured when the default xmin rule was
``ks``, so its ``acttail`` rows are what the current tables call ``acttail-ks`` (their ``xmin_rule`` column says
``ks``). :func:`display_label` reads the row's settings and adds to the name whatever it leaves out, so a label
always means one setting:

- an xmin rule other than the one the name implies: ``acttail`` + ``ks`` -> ``acttail-ks``;
  ``rotated-acttail`` + ``ks`` -> ``rotated-acttail[xmin=ks]``;
- an option whose value differs from the name's resolved value: ``acttail`` + ``epsilon=0.1`` ->
  ``acttail[epsilon=0.1]``;
- a method or projection kinds other than the name's: ``acttail`` + method ``wina`` -> ``acttail[method=wina]``.

A name that already says everything is returned unchanged (every row of the current grids).
:func:`setting_key` is the canonical setting behind a row (what the label must identify); the tests check
that no label of any committed table stands for two settings.

Inputs: plain values or a table with columns strategy and, when present, xmin_rule, options (a JSON text or a
dict), method, kinds. Outputs: strings (labels) and hashable tuples (setting keys). No model, no file.
"""
from __future__ import annotations

import json
import math
from typing import Mapping

import pandas as pd

from ..allocation.options import DEFAULT_XMIN, XMIN_OPTION
from ..allocation.presets import parse_strategy, spec_label
from ..core.errors import ActTailError

DENSE = "dense"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _options(value) -> dict:
    """A row's ``options`` cell (JSON text, dict, NaN or empty) as a dict."""
    if _missing(value):
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError as error:
        raise ActTailError(f"options {value!r} is not JSON. Fix: pass the grid's options column as written.") from error
    return dict(parsed) if isinstance(parsed, dict) else {}


def _kinds(value) -> tuple[str, ...] | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        return tuple(k for k in value.split("+") if k)
    return tuple(value)


def _spec(strategy: str):
    """The parsed StrategySpec of a label, or None when it is not a strategy (dense, an old name)."""
    from ..core.errors import AllocationError

    try:
        return parse_strategy(str(strategy))
    except AllocationError:
        return None


def _rule(spec, options: Mapping, xmin_rule) -> str | None:
    """The xmin rule a row used: its xmin_rule column, else its options, else the one its name implies
    (the name's ``xmin`` option or :data:`DEFAULT_XMIN`); None for strategies that need no alphas."""
    if spec is None or not spec.entry.needs_alpha:
        return None
    if not _missing(xmin_rule):
        return str(xmin_rule)
    return str(options.get(XMIN_OPTION) or spec.resolved.get(XMIN_OPTION) or DEFAULT_XMIN)


def _resolved(spec, options: Mapping) -> dict:
    """The row's options resolved against the strategy's defaults (the name's own options when none given)."""
    given = {k: v for k, v in options.items() if k != XMIN_OPTION}
    if not given:
        return {k: v for k, v in spec.resolved.items() if k != XMIN_OPTION}
    try:
        resolved = spec.entry.resolve(given)
    except Exception:  # an option this version no longer knows: keep it as given
        resolved = {**spec.resolved, **given}
    return {k: v for k, v in resolved.items() if k != XMIN_OPTION}


def setting_key(strategy: str, xmin_rule=None, options=None, method=None, kinds=None) -> tuple:
    """The canonical setting of a row: (strategy, resolved options without xmin, xmin rule, method, kinds).

    Two rows with the same key were allocated and applied the same way; ``strategy`` is the registered
    strategy, not the preset name (``acttail-ks`` -> ``acttail``). Unknown names give ``(name, ...)`` as is.
    """
    spec = _spec(strategy)
    opts = _options(options)
    if spec is None:
        return (str(strategy), tuple(sorted((k, str(v)) for k, v in opts.items())), None if _missing(xmin_rule)
                else str(xmin_rule), None if _missing(method) else str(method), _kinds(kinds))
    resolved = _resolved(spec, opts)
    return (spec.strategy, tuple(sorted((k, str(v)) for k, v in resolved.items())), _rule(spec, opts, xmin_rule),
            spec.method if _missing(method) else str(method), _kinds(kinds) if not _missing(kinds) else spec.kinds)


def display_label(strategy: str, xmin_rule=None, options=None, method=None, kinds=None) -> str:
    """The label of a row: ``strategy`` plus every setting of the row that the name does not already imply.

    Args:
        strategy: the row's strategy column (a preset, a strategy or ``NAME[k=v;...]``).
        xmin_rule: the rule of its alphas (column ``xmin_rule``; NaN/None: the one its options or name say).
        options: the options the row was run with (JSON text or dict; those the name implies add nothing).
        method, kinds: how the budgets were applied (NaN/None: the name's own).
    Returns:
        e.g. ``"acttail-ks"`` for (``acttail``, ``ks``), ``"rotated-acttail[xmin=ks]"`` for
        (``rotated-acttail``, ``ks``), ``strategy`` unchanged when the name says it all or is not a strategy.
    """
    name = str(strategy)
    spec = _spec(name)
    if spec is None:
        return name
    opts = _options(options)
    added: dict[str, object] = {}
    named = {k: v for k, v in spec.resolved.items() if k != XMIN_OPTION}
    for key, value in _resolved(spec, opts).items():
        if key in named and str(named[key]) != str(value) or key not in named:
            added[key] = value
    if not _missing(method) and str(method) != spec.method:
        added["method"] = method
    row_kinds = _kinds(kinds)
    if row_kinds is not None and row_kinds != spec.kinds:
        added["kinds"] = "+".join(row_kinds)
    rule = _rule(spec, opts, xmin_rule)
    implied = spec.resolved.get(XMIN_OPTION) or DEFAULT_XMIN
    if rule is not None and rule != implied:
        if name == "acttail" and rule == "ks" and not added:
            return "acttail-ks"
        added[XMIN_OPTION] = rule
    return spec_label(name, added)


def row_labels(runs: pd.DataFrame) -> pd.Series:
    """:func:`display_label` of every row of a table (index kept); dense rows stay ``"dense"``."""
    columns = ("xmin_rule", "options", "method", "kinds")
    values = [runs[c] if c in runs.columns else pd.Series([None] * len(runs), index=runs.index) for c in columns]
    labels = [s if s == DENSE else display_label(s, *rest)
              for s, *rest in zip(runs["strategy"].astype(str), *values)]
    return pd.Series(labels, index=runs.index, dtype=object, name="label")


def row_settings(runs: pd.DataFrame) -> pd.Series:
    """:func:`setting_key` of every row (index kept)."""
    columns = ("xmin_rule", "options", "method", "kinds")
    values = [runs[c] if c in runs.columns else pd.Series([None] * len(runs), index=runs.index) for c in columns]
    keys = [setting_key(s, *rest) for s, *rest in zip(runs["strategy"].astype(str), *values)]
    return pd.Series(keys, index=runs.index, dtype=object, name="setting")


def shared_labels(runs: pd.DataFrame) -> dict[str, list[tuple]]:
    """Labels that stand for more than one setting in ``runs``: label -> its settings (empty when none)."""
    table = pd.DataFrame({"label": row_labels(runs), "setting": row_settings(runs)})
    table = table[table["label"] != DENSE]
    groups = table.groupby("label")["setting"].apply(lambda s: list(dict.fromkeys(s)))
    return {label: keys for label, keys in groups.items() if len(keys) > 1}


def relabelled(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows whose label differs from their strategy name: columns strategy, xmin_rule, method, label
    (one row per strategy), e.g. the related grid's ``acttail`` -> ``acttail-ks``."""
    table = runs.assign(label=row_labels(runs))
    moved = table[table["label"] != table["strategy"].astype(str)]
    keep = [c for c in ("strategy", "xmin_rule", "method", "label") if c in moved.columns]
    return moved[keep].drop_duplicates("strategy").reset_index(drop=True)


def relabel_sentence(runs: pd.DataFrame) -> str:
    """One sentence saying which rows were relabelled by their settings and why ('' when none)."""
    moved = relabelled(runs)
    if moved.empty:
        return ""
    parts = [f"{r.strategy} -> {r.label}" for r in moved.itertuples()]
    rules = sorted(set(moved["xmin_rule"].dropna().astype(str))) if "xmin_rule" in moved.columns else []
    why = f" (their alphas use the {', '.join(rules)} xmin rule, not the default {DEFAULT_XMIN})" if rules else ""
    return "Labelled by their settings: " + ", ".join(parts) + why + "."


__all__ = ["display_label", "setting_key", "row_labels", "row_settings", "shared_labels", "relabelled",
           "relabel_sentence"]
