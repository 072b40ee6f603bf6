"""Notebook 02's runs table: load the committed perplexity grid, or re-measure it, and describe its setting.

:func:`obtain_runs` decides between the committed ``perplexity_<model>.csv``
(see :mod:`acttail_lab.report.results`) and a measurement with
``measure.grid.evaluate_grid``; :func:`setting_line` says what the rows were
measured on; :func:`beside` puts a small live slice next to the committed rows.
Perplexity is ``exp(mean NLL)`` per scored token; sparsities are fractions.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from . import results


def obtain_runs(model: str, *, rerun: bool = False, fast: bool = False, fast_sizes: Mapping | None = None,
                small_grid: Mapping | None = None, results_dir: str | os.PathLike | None = None,
                load_model: Callable | None = None, evaluate_grid: Callable | None = None):
    """The runs table of notebook 02 as ``(runs, lm, note)``.

    Inputs: ``model`` (a registry name); ``rerun`` (re-measure even when a
    committed CSV exists); ``fast`` (re-measure with ``fast_sizes``, e.g.
    ``dict(tokens=512, window=256)``, and no progress bar); ``small_grid``
    (``evaluate_grid`` keywords used when no CSV is committed);
    ``load_model`` / ``evaluate_grid`` (defaults: ``core.models.load_model``
    and ``measure.grid.evaluate_grid``; pass others to test).

    Output: ``runs`` (one row per strategy and target sparsity, see
    :mod:`acttail_lab.report.results`), ``lm`` (the loaded model, or None when
    the committed runs were loaded) and ``note`` (one line saying which path
    was taken).
    """
    path = results.perplexity_path(model, results_dir)
    if path.exists() and not rerun:
        return results.load_perplexity(model, results_dir), None, f"Loaded the committed runs: {path}"
    if load_model is None:
        from ..core.models import load_model
    if evaluate_grid is None:
        from ..measure.grid import evaluate_grid
    lm = load_model(model)
    if path.exists():
        grids = results.rerun_arguments(results.load_perplexity(model, results_dir), model_name=lm,
                                        **(dict(fast_sizes or {}) if fast else {}))
        note = f"Re-measuring the committed grid{' on a small slice (FAST)' if fast else ''}."
    else:
        grid = dict(small_grid or {})
        note = (f"No committed results at {path}: measuring a SMALL grid instead "
                f"({grid.get('tokens', 'default')} tokens); these are not the committed numbers.")
        grids = [dict(model_name=lm, **grid)]
    runs = pd.concat([evaluate_grid(progress=not fast, **grid) for grid in grids], ignore_index=True)
    return runs, lm, note


def setting_line(runs: pd.DataFrame) -> str:
    """One line: model, corpus/split, scored tokens per run, window, protocol and xmin rule(s) of ``runs``
    (read from its first row; rules from ``results.xmin_rules``, "ks" when none is recorded)."""
    setting = runs.iloc[0]
    rules = results.xmin_rules(runs) or ["ks"]
    return (f"{setting.model} on {setting.corpus}/{setting.split}: {setting.tokens} scored tokens per run, "
            f"windows of {setting.window}, protocol {setting.protocol!r}, alphas from the xmin rule(s) {rules}")


def beside(live: pd.DataFrame, runs: pd.DataFrame, keys: Sequence[str] = ("strategy", "sparsity", "xmin_rule"),
           columns: Sequence[str] = ("perplexity", "tokens", "window")) -> pd.DataFrame:
    """The rows of ``live`` with their ``columns`` suffixed " (live slice)", next to the matching committed rows
    of ``runs`` (suffix " (committed)"; NaN where ``runs`` has no such row), matched on ``keys``."""
    keys, columns = list(keys), list(columns)
    return live[keys + columns].merge(runs[keys + columns], on=keys, how="left",
                                      suffixes=(" (live slice)", " (committed)"))
