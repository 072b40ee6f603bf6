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


# --------------------------------------------------------------------------- the result in words (verdict engine)
def result_sentences(runs: pd.DataFrame, windows: pd.DataFrame | None, model_label: str, sparsity: float = 0.8,
                     focus: Sequence[str] = ("acttail", "acttail-block", "teal-greedy")) -> list[str]:
    """Notebook 02's result in words, every claim from ``report.verdicts`` (intervals: paired bootstrap over
    ``windows``): the lowest run per target over every row and among TopK allocations, the collapses, the
    ``focus`` runs against uniform at ``sparsity`` beside the paper's claims, and the count of verdicts."""
    from . import verdicts, winners
    from .headline import PAPER_CLAIMS, collapse_threshold, collapsed

    out = [winners.lowest_sentence(winners.lowest(runs, windows))]
    if "method" in runs.columns and runs["method"].nunique() > 1:
        out.append(winners.lowest_sentence(winners.lowest(runs, windows, among=lambda t: t["method"] == "topk",
                                                          among_name="TopK allocations")))
    gone = runs[collapsed(runs).to_numpy()].assign(label=lambda t: results.run_labels(t))
    if len(gone):
        first = gone.groupby("label")["sparsity"].min().sort_values()
        out.append(f"Collapsed (perplexity >= {collapse_threshold(runs):.0f}, a quarter of the vocabulary; never "
                   "compared as a percentage): " + ", ".join(f"{label} from {s:g}" for label, s in first.items()) + ".")
    table = verdicts.perplexity_verdicts(runs, windows)
    at = table[(table["sparsity"] - sparsity).abs() < 1e-9]
    mine = [f"{v.run} {v.short()}" for v in verdicts.verdict_objects(at[at["label"].isin(focus)])]
    theirs = ", ".join(f"{r.model} {r.change_pct:+.1f}%" for r in PAPER_CLAIMS.itertuples())
    if mine:
        out.append(f"At {sparsity:.0%} on {model_label}, against uniform: " + "; ".join(mine)
                   + f". The ActTail abstract claims for acttail: {theirs}.")
    out.append(verdicts.count_sentence(table))
    return out


def change_title(table: pd.DataFrame, model_label: str) -> str:
    """Title of the change heat map from a verdict table: counts of better / inside the noise (~) / worse."""
    from .verdicts import BETTER, NOISE, WORSE, count_verdicts

    c = count_verdicts(table)
    return (f"{model_label}: {c[BETTER]} of {c['total']} runs beat uniform beyond the noise (blue), {c[NOISE]} "
            f"inside it (~), {c[WORSE]} worse (red)")


def noise_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Label x target booleans: the verdict is "inside the noise" (the heat map's ``noise`` argument)."""
    from .verdicts import NOISE

    return table.assign(inside=table["verdict"] == NOISE).pivot(index="label", columns="sparsity", values="inside")


def collapsed_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Label x target booleans: the run or its baseline collapsed (the heat map's ``collapsed`` argument)."""
    return table.assign(gone=table["note"] != "").pivot(index="label", columns="sparsity", values="gone")
