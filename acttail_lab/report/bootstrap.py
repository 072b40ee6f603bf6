"""Error bars for perplexity comparisons: a paired bootstrap over evaluation windows.

Every run of one grid scores the same token windows (``measure.grid_tables.window_table``: one row per run and
window, ``nll`` = that window's mean NLL in nats per scored token; all windows score the same number of
tokens). The change of a run against a baseline run (uniform at the same target) is

    change = exp(mean_w nll_run[w] - mean_w nll_base[w]) - 1        (= ppl_run / ppl_base - 1)

and its confidence interval comes from resampling the *windows* with replacement, the same resampled
windows for both runs (paired), ``n_boot`` times, and taking percentiles. A comparison whose interval
contains 0 is inside the noise of this evaluation text. Windows are consecutive stretches of one text,
so they are not fully independent: the interval is a lower bound on the true uncertainty.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.errors import ActTailError
from ..core.paths import DEFAULT_MODEL, result_path
from ..core.results_io import load_table

UNIFORM = "uniform"
BOOTSTRAP_COLUMNS = ("strategy", "sparsity", "baseline", "change_pct", "ci_low_pct", "ci_high_pct",
                     "n_windows", "inside_noise")
"""Columns of :func:`paired_bootstrap` (percentages: 100 x relative change of perplexity)."""
_KEYS = ["strategy", "sparsity"]


def _matrix(windows: pd.DataFrame) -> pd.DataFrame:
    """Per-window NLL as a (strategy, sparsity) x window_index matrix; ActTailError when runs differ in windows."""
    missing = {"strategy", "sparsity", "window_index", "nll"} - set(windows.columns)
    if missing:
        raise ActTailError(f"The window table lacks the columns {sorted(missing)}. Fix: pass the per-window "
                           "losses of a grid (measure.grid_tables.window_table or a committed *_windows.csv).")
    if windows.duplicated(_KEYS + ["window_index"]).any():
        raise ActTailError("A (strategy, sparsity, window) appears twice in the window table. Fix: pass the "
                           "windows of one grid (one setting, one method per label).")
    matrix = windows.pivot(index=_KEYS, columns="window_index", values="nll")
    if matrix.isna().any().any():
        raise ActTailError("Runs in the window table were scored on different windows. Fix: compare runs of "
                           "one grid (same tokens, window length and protocol).")
    return matrix


def resample_indices(n_windows: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_windows]`` window indices drawn with replacement (seeded; shared by every comparison)."""
    return np.random.default_rng(seed).integers(0, n_windows, size=(n_boot, n_windows))


def paired_bootstrap(windows: pd.DataFrame, baseline: str = UNIFORM, n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """Relative perplexity change of every run against ``baseline`` at the same sparsity, with a paired CI.

    Args:
        windows: tidy per-window losses (columns strategy, sparsity, window_index, nll).
        baseline: the strategy every other run is compared with (at its own sparsity).
        n_boot: bootstrap resamples. level: two-sided confidence level. seed: resampling seed.
    Returns:
        One row per run with a baseline at its sparsity (the baseline and dense rows left out), columns
        :data:`BOOTSTRAP_COLUMNS`: ``change_pct`` = 100 (ppl / ppl_baseline - 1) on all windows,
        ``ci_low_pct`` / ``ci_high_pct`` the percentile interval, ``inside_noise`` when it contains 0.
    """
    if not 0.5 < level < 1.0:
        raise ActTailError(f"level={level!r} must lie in (0.5, 1). Fix: pass e.g. 0.95.")
    matrix = _matrix(windows)
    nll = matrix.to_numpy(dtype=float)
    index = resample_indices(nll.shape[1], n_boot, seed)
    base_rows = {s: i for i, (name, s) in enumerate(matrix.index) if name == baseline}
    rows = []
    for i, (name, sparsity) in enumerate(matrix.index):
        if name == baseline or sparsity not in base_rows:
            continue
        diff = nll[i] - nll[base_rows[sparsity]]
        boot = np.expm1(diff[index].mean(axis=1)) * 100.0
        low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
        rows.append({"strategy": name, "sparsity": sparsity, "baseline": baseline,
                     "change_pct": float(np.expm1(diff.mean()) * 100.0), "ci_low_pct": float(low),
                     "ci_high_pct": float(high), "n_windows": nll.shape[1], "inside_noise": bool(low <= 0 <= high)})
    if not rows:
        raise ActTailError(f"No run has a {baseline!r} run at its sparsity in the window table. Fix: evaluate "
                           f"{baseline!r} at the same sparsities.")
    order = {key: n for n, key in enumerate(windows.drop_duplicates(_KEYS)[_KEYS].itertuples(index=False))}
    out = pd.DataFrame(rows, columns=list(BOOTSTRAP_COLUMNS))
    return out.iloc[np.argsort([order[(r.strategy, r.sparsity)] for r in out.itertuples()])].reset_index(drop=True)


def with_intervals(relative: pd.DataFrame, windows: pd.DataFrame, **bootstrap) -> pd.DataFrame:
    """``relative`` (``report.results.relative_to_uniform``) with the paired-bootstrap interval of each row
    (columns ci_low_pct, ci_high_pct, inside_noise; NaN where the window table has no such run)."""
    ci = paired_bootstrap(windows, **bootstrap)[_KEYS + ["ci_low_pct", "ci_high_pct", "inside_noise"]]
    return relative.merge(ci, on=_KEYS, how="left", validate="many_to_one")


def noise_sentence(intervals: pd.DataFrame, level: float = 0.95) -> str:
    """One sentence counting the comparisons of :func:`paired_bootstrap` whose interval contains 0."""
    inside = intervals[intervals["inside_noise"]]
    names = ", ".join(f"{r.strategy} at {r.sparsity:g} ({r.change_pct:+.1f}%)" for r in inside.itertuples())
    return (f"{len(inside)} of {len(intervals)} comparisons with {intervals['baseline'].iloc[0]} have a "
            f"{level:.0%} paired-bootstrap interval (over {intervals['n_windows'].iloc[0]} evaluation windows) "
            f"that contains 0, so they are inside the noise" + (f": {names}." if names else "."))


def load_windows(table: str = "perplexity", model: str = DEFAULT_MODEL, results_dir=None) -> pd.DataFrame:
    """The committed per-window losses of the grid ``table`` (``"perplexity"``, ``"wina_farms"``, ...): the
    ``<table>_windows`` entry of ``core.paths.RESULT_FILES``, with its sidecar in ``attrs["provenance"]``."""
    return load_table(result_path(f"{table}_windows", model, results_dir))


def committed_intervals(table: str = "perplexity", model: str = DEFAULT_MODEL, results_dir=None,
                        **bootstrap) -> pd.DataFrame:
    """:func:`paired_bootstrap` of a committed grid: every run against uniform, with its interval."""
    return paired_bootstrap(load_windows(table, model, results_dir), **bootstrap)


def interval_table(intervals: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """:func:`paired_bootstrap` as a strategy x sparsity table of ``"+5.5 [+4.1, +6.8]"`` texts (percent), with
    ``" ~"`` appended where the interval contains 0 (inside the noise); strategies in their table order."""
    text = [f"{r.change_pct:+.{digits}f} [{r.ci_low_pct:+.{digits}f}, {r.ci_high_pct:+.{digits}f}]"
            + (" ~" if r.inside_noise else "") for r in intervals.itertuples()]
    table = intervals.assign(text=text).pivot(index="strategy", columns="sparsity", values="text")
    return table.loc[list(dict.fromkeys(intervals["strategy"]))]
