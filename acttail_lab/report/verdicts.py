"""One verdict engine for every computed claim: a comparison names its metric, both runs, the change, its
interval and the verdict; "lowest" is computed over every row that competes and says which rows those are;
collapsed runs are never compared as numbers; rank correlations come with an interval.

Perplexity comparisons use the paired bootstrap over evaluation windows of :mod:`report.bootstrap` (the same
resampled windows for both runs; change = 100 (ppl_run / ppl_base - 1), percent, lower is better). Accuracy
comparisons use the standard errors lm-eval reports (difference in points, interval +-1.96 x the combined
standard error, higher is better). A verdict is

- ``"better"`` / ``"worse"``: the whole 95% interval lies on one side of 0;
- ``"inside the noise"``: the interval contains 0;
- ``"not compared: collapsed"``: both runs collapsed (perplexity >= a quarter of the vocabulary,
  :func:`report.headline.collapsed`); a run that collapsed against one that did not is ``"worse"`` (and the other
  way round ``"better"``) with ``note`` saying so and no percentage printed;
- ``"not compared: both 0"``: two accuracies of exactly 0 (e.g. LAMBADA at high sparsity);
- ``"no interval"``: no per-window losses were committed for the grid, so only the point change is known.

API (inputs are the committed tables: a runs table of one setting, its ``*_windows`` table, a zero-shot table):

- :func:`perplexity_verdicts` (runs, windows, baseline) -> tidy table, one row per run x target;
  :func:`compare` -> one :class:`Verdict` (``.sentence()``, ``.short()``) or a list over targets;
- :func:`count_verdicts` / :func:`count_sentence` ("30 of 76 runs are better than uniform, 3 inside the noise, ...");
- :func:`lowest` / :func:`lowest_title` / :func:`lowest_sentence` (in :mod:`report.winners`, also reachable
  here): the lowest-perplexity row per target over EVERY row given (or ``among`` a named subset, whose name every
  title and sentence then carries), with its verdict against the runner-up;
- :func:`control_verdicts` / :func:`control_sentences` (:mod:`report.winners`): the alpha-order controls
  (shuffled, acttail-rev) against the alpha-guided run of the same xmin rule and against uniform;
- :func:`accuracy_verdicts`: zero-shot accuracy against a baseline run, per task;
- :func:`rank_correlation` -> :class:`Correlation` (Spearman rho, Fisher-z interval, p) and :func:`format_p`
  ("p < 0.001", never "p = 0.000") (:mod:`report.rank_correlation`).

Labels are those of :func:`report.labels.display_label` (a function of each row's settings).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from ..core.errors import ActTailError
from .bootstrap import paired_bootstrap
from .headline import collapsed
from .labels import row_labels
from .noise_floor import numeric_floor
from .rank_correlation import Correlation, format_p, rank_correlation  # noqa: F401  (part of this API)

LEVEL = 0.95
BETTER, NOISE, WORSE = "better", "inside the noise", "worse"
COLLAPSED = "not compared: collapsed"
BOTH_ZERO = "not compared: both 0"
NO_INTERVAL = "no interval"
VERDICTS = (BETTER, NOISE, WORSE, COLLAPSED, BOTH_ZERO, NO_INTERVAL)
"""Every verdict string; one string always means one thing."""
DENSE, UNIFORM = "dense", "uniform"
VERDICT_COLUMNS = ("metric", "label", "strategy", "sparsity", "baseline", "value", "baseline_value", "change",
                   "low", "high", "unit", "verdict", "note", "method")
"""Columns of :func:`perplexity_verdicts` and :func:`accuracy_verdicts` (``change``/``low``/``high`` in ``unit``)."""


# --------------------------------------------------------------------------- one comparison
@dataclass(frozen=True)
class Verdict:
    """One comparison: ``run`` against ``baseline`` on ``metric`` at ``sparsity``.

    ``change``, ``low``, ``high`` are in ``unit`` ("%" of the baseline's perplexity, or " points" of accuracy);
    ``low``/``high`` are NaN when no interval exists; ``note`` says why a number is not printed ("collapsed",
    "baseline collapsed", ...); ``method`` names how the interval was made.
    """

    metric: str
    run: str
    baseline: str
    sparsity: float | None
    value: float
    baseline_value: float
    change: float
    low: float
    high: float
    verdict: str
    method: str
    unit: str = "%"
    note: str = ""
    task: str | None = None

    def interval(self) -> str:
        """``"[-9.2, +15.7]"`` (empty when there is none)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return ""
        return f"[{self.low:+.1f}, {self.high:+.1f}]"

    def short(self) -> str:
        """``"+2.7% [-9.2, +15.7], inside the noise"``; a collapsed side is named instead of a percentage."""
        if self.note:
            return f"{self.note}, {self.verdict}"
        text = f"{self.change:+.1f}{self.unit}"
        if self.interval():
            text += f" {self.interval()}"
        return f"{text}, {self.verdict}"

    def sentence(self) -> str:
        """A full sentence: where, which runs, both values, the change, its interval and method, the verdict."""
        where = f"At {self.sparsity:.0%}" if self.sparsity is not None and math.isfinite(self.sparsity) else "Here"
        task = f" on {self.task}" if self.task else ""
        values = f"{_num(self.value)} vs {_num(self.baseline_value)}"
        if self.note:
            head = f"{where}{task}, {self.run} against {self.baseline}: {self.metric} {values}; "
            if self.verdict == COLLAPSED:
                return head + "both collapsed, so they are not compared."
            gone, kept = (self.run, self.baseline) if self.verdict == WORSE else (self.baseline, self.run)
            return head + f"{gone} collapsed and {kept} did not: {self.verdict} (no percentage against a collapsed run)."
        interval = f" ({self.method}: {self.interval()})" if self.interval() else f" ({self.method})"
        return (f"{where}{task}, {self.run} against {self.baseline}: {self.metric} {values}, "
                f"{self.change:+.1f}{self.unit}{interval}: {self.verdict}.")


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


FLOOR_MARK = "; numeric floor across CPUs "
"""How a verdict row's ``method`` names the floor it was judged against (followed by the floor in percent)."""


def judge(low: float, high: float, lower_is_better: bool = True, floor: float = 0.0) -> str:
    """better / inside the noise / worse from an interval of the change (run minus baseline).

    ``floor`` (>= 0, the change's unit): the numeric floor (:func:`report.noise_floor.numeric_floor`); an
    interval that reaches into [-floor, +floor] is inside the noise, since another CPU could reverse it."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return NO_INTERVAL
    if low <= floor and high >= -floor:
        return NOISE
    below = high < -floor
    return BETTER if below == lower_is_better else WORSE


# --------------------------------------------------------------------------- perplexity
def _labelled(runs: pd.DataFrame) -> pd.DataFrame:
    out = runs.reset_index(drop=True)
    return out.assign(label=row_labels(out))


def _collapsed_flags(runs: pd.DataFrame, vocab_size: int | None) -> pd.Series:
    try:
        return collapsed(runs, vocab_size)
    except ActTailError:
        return pd.Series(False, index=runs.index)


def _method_text(n_windows: int, level: float) -> str:
    return f"{level:.0%} paired bootstrap over {n_windows} windows"


def perplexity_verdicts(runs: pd.DataFrame, windows: pd.DataFrame | None = None, baseline: str = UNIFORM,
                        vocab_size: int | None = None, n_boot: int = 2000, level: float = LEVEL,
                        seed: int = 0, use_floor: bool = True) -> pd.DataFrame:
    """Every run of ``runs`` against ``baseline`` at the same target, with interval and verdict.

    Args:
        runs: a runs table of one setting (``results.load_perplexity`` etc.; dense row allowed).
        windows: its per-window losses (``bootstrap.load_windows``), or None when none were committed
            (verdict "no interval").
        baseline: the baseline's *label* (:func:`report.labels.display_label`; e.g. ``"uniform"``,
            ``"acttail-ks"``). vocab_size: for :func:`report.headline.collapsed` (default: the model's).
        n_boot, level, seed: of the paired bootstrap.
        use_floor: judge against the committed numeric floor across CPUs at each target
            (:func:`report.noise_floor.numeric_floor`); False: against 0.
    Returns:
        :data:`VERDICT_COLUMNS`, one row per labelled run with a baseline at its target (dense and the
        baseline itself left out), in table order; ``change`` = 100 (ppl / ppl_base - 1), percent.
    """
    table = _labelled(runs)
    table = table[table["strategy"] != DENSE]
    gone = _collapsed_flags(table, vocab_size)
    table = table.assign(gone_=gone)
    base = table[table["label"] == baseline]
    if base.empty:
        raise ActTailError(f"No {baseline!r} runs in this table (labels: {list(dict.fromkeys(table['label']))}). "
                           "Fix: pass a baseline label the table has.")
    base = base.set_index(base["sparsity"].round(6))
    ci = None
    if windows is not None:
        strategy_of = dict(zip(table["label"], table["strategy"]))
        ci = paired_bootstrap(windows, baseline=strategy_of[baseline], n_boot=n_boot, level=level, seed=seed)
        ci = ci.assign(key=ci["sparsity"].round(6)).set_index(["strategy", "key"])
    rows = []
    for r in table.itertuples(index=False):
        key = round(float(r.sparsity), 6)
        if r.label == baseline or key not in base.index:
            continue
        b = base.loc[key]
        change = 100.0 * (r.perplexity / b["perplexity"] - 1.0)
        low = high = math.nan
        method = "no per-window losses committed"
        if ci is not None and (r.strategy, key) in ci.index:
            c = ci.loc[(r.strategy, key)]
            change, low, high = float(c["change_pct"]), float(c["ci_low_pct"]), float(c["ci_high_pct"])
            method = _method_text(int(c["n_windows"]), level)
        floor = numeric_floor(float(r.sparsity)) if use_floor else 0.0
        verdict, note = judge(low, high, floor=floor), ""
        if floor and math.isfinite(low):
            method += f"{FLOOR_MARK}{floor:.2f}%"
        if r.gone_ and b["gone_"]:
            verdict, note = COLLAPSED, "both collapsed"
        elif r.gone_:
            verdict, note = WORSE, f"{r.label} collapsed"
        elif b["gone_"]:
            verdict, note = BETTER, f"{baseline} collapsed"
        rows.append(dict(metric="perplexity", label=r.label, strategy=r.strategy, sparsity=float(r.sparsity),
                         baseline=baseline, value=float(r.perplexity), baseline_value=float(b["perplexity"]),
                         change=change, low=low, high=high, unit="%", verdict=verdict, note=note, method=method))
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def _as_verdict(row) -> Verdict:
    return Verdict(metric=row["metric"], run=row["label"], baseline=row["baseline"], sparsity=row["sparsity"],
                   value=row["value"], baseline_value=row["baseline_value"], change=row["change"], low=row["low"],
                   high=row["high"], verdict=row["verdict"], method=row["method"], unit=row["unit"],
                   note=row["note"] or "", task=row.get("task"))


def verdict_objects(table: pd.DataFrame) -> list[Verdict]:
    """The rows of a verdict table as :class:`Verdict` objects (same order)."""
    return [_as_verdict(row) for _, row in table.iterrows()]


def compare(runs: pd.DataFrame, run: str, baseline: str = UNIFORM, sparsity: float | None = None,
            windows: pd.DataFrame | None = None, **options) -> Verdict | list[Verdict]:
    """``run`` against ``baseline`` (labels) at ``sparsity`` -> one :class:`Verdict`; without ``sparsity``,
    a list over every target both were run at. ``options`` go to :func:`perplexity_verdicts`."""
    table = perplexity_verdicts(runs, windows, baseline=baseline, **options)
    mine = table[table["label"] == run]
    if mine.empty:
        raise ActTailError(f"No {run!r} runs beside {baseline!r} in this table. Fix: pick a label of "
                           f"{list(dict.fromkeys(table['label']))}.")
    if sparsity is None:
        return verdict_objects(mine)
    at = mine[(mine["sparsity"] - sparsity).abs() < 1e-9]
    if at.empty:
        raise ActTailError(f"{run!r} was not run at {sparsity:g} (targets: {sorted(mine['sparsity'])}).")
    return _as_verdict(at.iloc[0])


def interval_text(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A verdict table as label x target texts: ``"+2.7 [-9.2, +15.7] ~"`` (~: inside the noise),
    ``"collapsed"`` / ``"both collapsed"`` where a side collapsed, ``"-0.4 (no interval)"`` without windows."""
    def cell(r):
        if r.note:
            return r.note.replace(f"{r.label} ", "").replace(f"{r.baseline} ", "baseline ")
        if not math.isfinite(r.low):
            return f"{r.change:+.{digits}f} (no interval)"
        return (f"{r.change:+.{digits}f} [{r.low:+.{digits}f}, {r.high:+.{digits}f}]"
                + (" ~" if r.verdict == NOISE else ""))
    text = table.assign(text=[cell(r) for r in table.itertuples()])
    out = text.pivot(index="label", columns="sparsity", values="text")
    return out.loc[list(dict.fromkeys(table["label"]))]


# --------------------------------------------------------------------------- counting
def count_verdicts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows of a verdict table got each verdict (every key of :data:`VERDICTS`, and ``total``)."""
    counts = {v: int((table["verdict"] == v).sum()) for v in VERDICTS}
    counts["total"] = int(len(table))
    return counts


def how_judged(table: pd.DataFrame, short: bool = False) -> str:
    """How a verdict table's intervals were judged, once: e.g. "95% paired bootstrap over 32 windows, beyond the
    numeric floor across CPUs (0.63-1.75% by target)"; ``short``: "95% paired bootstrap, CPU floor 0.6-1.7%" (for
    titles); "" when no row has an interval."""
    methods = table.loc[table["method"].str.contains("bootstrap|standard"), "method"]
    if methods.empty:
        return ""
    base = "; ".join(sorted({m.split(FLOOR_MARK)[0] for m in methods}))
    floors = sorted({float(m.split(FLOOR_MARK)[1].rstrip("%")) for m in methods if FLOOR_MARK in m})
    if short:
        base = base.split(" over ")[0]
    if not floors:
        return base
    if short:
        return f"{base}, CPU floor {floors[0]:.1f}%" + (f"-{floors[-1]:.1f}%" if len(floors) > 1 else "")
    span = f"{floors[0]:.2f}%" if len(floors) == 1 else f"{floors[0]:.2f}-{floors[-1]:.2f}% by target"
    return f"{base}, beyond the numeric floor across CPUs ({span})"


def count_sentence(table: pd.DataFrame, what: str = "runs") -> str:
    """E.g. "Against uniform (95% paired bootstrap over 32 windows), 30 of 76 runs are better, 3 inside the
    noise, 43 worse (12 of them collapsed)"; only the verdicts that occur are listed."""
    if table.empty:
        return f"No {what} to compare."
    c = count_verdicts(table)
    base = table["baseline"].iloc[0]
    how = f" ({how_judged(table)})" if how_judged(table) else ""
    parts = [f"{c[BETTER]} of {c['total']} {what} are better than {base}{how}"]
    if c[NOISE]:
        parts.append(f"{c[NOISE]} inside the noise")
    worse = f"{c[WORSE]} worse"
    n_gone = int(((table["verdict"] == WORSE) & (table["note"] != "")).sum())
    if n_gone:
        worse += f" ({n_gone} of them collapsed)"
    parts.append(worse)
    for v, text in ((COLLAPSED, "not compared (both collapsed)"), (BOTH_ZERO, "not compared (both 0)"),
                    (NO_INTERVAL, "without an interval (no per-window losses)")):
        if c[v]:
            parts.append(f"{c[v]} {text}")
    return ", ".join(parts) + "."


# --------------------------------------------------------------------------- accuracy (standard errors)
def accuracy_verdicts(rows: pd.DataFrame, baseline: str = UNIFORM, z: float = 1.96,
                      keys: Sequence[str] = ("task", "metric")) -> pd.DataFrame:
    """Zero-shot accuracy of every run against ``baseline`` at the same target, per task.

    Args:
        rows: one metric per task (columns strategy, sparsity, task, metric, value, stderr; values as
            fractions), e.g. ``report.zeroshot.paper_rows``.
        baseline: the baseline strategy. z: the interval's half-width in combined standard errors.
    Returns:
        :data:`VERDICT_COLUMNS` plus ``task``; ``change`` in accuracy points (run - baseline), interval
        change +- z sqrt(se_run^2 + se_base^2), higher is better; two accuracies of 0 -> "not compared: both 0".
    """
    labelled = rows.assign(label=row_labels(rows.reset_index(drop=True)).to_numpy())
    labelled = labelled[labelled["strategy"] != DENSE]
    base = labelled[labelled["label"] == baseline]
    merged = labelled[labelled["label"] != baseline].merge(
        base[["sparsity", *keys, "value", "stderr"]], on=["sparsity", *keys], suffixes=("", "_base"))
    out = []
    for r in merged.itertuples(index=False):
        change = 100.0 * (r.value - r.value_base)
        se = 100.0 * math.hypot(r.stderr, r.stderr_base)
        low, high = change - z * se, change + z * se
        verdict, note = judge(low, high, lower_is_better=False), ""
        if r.value == 0 and r.value_base == 0:
            verdict, note = BOTH_ZERO, "both 0"
        out.append(dict(metric=f"{r.metric}", label=r.label, strategy=r.strategy, sparsity=float(r.sparsity),
                        baseline=baseline, value=100.0 * r.value, baseline_value=100.0 * r.value_base, change=change,
                        low=low, high=high, unit=" points", verdict=verdict, note=note,
                        method=f"+-{z:g} combined standard errors", task=r.task))
    return pd.DataFrame(out, columns=list(VERDICT_COLUMNS) + ["task"])


# --------------------------------------------------------------------------- the rest of the API
_ELSEWHERE = {"lowest": "winners", "lowest_title": "winners", "lowest_sentence": "winners",
              "control_verdicts": "winners", "control_sentences": "winners"}


def __getattr__(name):
    """``verdicts.lowest`` etc. live in :mod:`report.winners` (which builds on this module)."""
    if name in _ELSEWHERE:
        from importlib import import_module

        return getattr(import_module(f".{_ELSEWHERE[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LEVEL", "BETTER", "NOISE", "WORSE", "COLLAPSED", "BOTH_ZERO", "NO_INTERVAL", "VERDICTS", "VERDICT_COLUMNS",
    "Verdict", "judge", "perplexity_verdicts", "verdict_objects", "compare", "interval_text", "count_verdicts",
    "count_sentence", "lowest", "lowest_title", "lowest_sentence", "control_verdicts", "control_sentences",
    "accuracy_verdicts", "format_p", "Correlation", "rank_correlation",
]
