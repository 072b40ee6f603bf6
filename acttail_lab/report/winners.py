"""Winners and controls, computed with the verdict engine (:mod:`report.verdicts`): the lowest-perplexity row per
target over EVERY row given (or among a named subset, whose name every title and sentence then carries) with its
verdict against the runner-up; the alpha-order controls (shuffled, acttail-rev) against the alpha-guided run of the
same xmin rule.

Inputs: a runs table of one setting and its per-window losses (or None). Outputs: tidy tables and sentences.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import pandas as pd

from ..core.errors import ActTailError
from .labels import display_label
from .verdicts import (
    BETTER,
    DENSE,
    NO_INTERVAL,
    NOISE,
    VERDICT_COLUMNS,
    WORSE,
    _as_verdict,
    _collapsed_flags,
    _labelled,
    _num,
    perplexity_verdicts,
)


def _span(values: list, order: list) -> str:
    """"0.5-0.8" when ``values`` are three or more consecutive entries of ``order``, else "0.5, 0.6"."""
    first = order.index(values[0])
    if len(values) > 2 and order[first:first + len(values)] == values:
        return f"{values[0]:g}-{values[-1]:g}"
    return ", ".join(f"{v:g}" for v in values)


def _select(table: pd.DataFrame, among) -> pd.DataFrame:
    if among is None:
        return table
    if callable(among):
        return table[among(table)]
    among = list(among)
    missing = [a for a in among if a not in set(table["label"])]
    if missing:
        raise ActTailError(f"{missing} are not labels of this table ({list(dict.fromkeys(table['label']))}).")
    return table[table["label"].isin(among)]


def lowest(runs: pd.DataFrame, windows: pd.DataFrame | None = None, among: Sequence[str] | Callable | None = None,
           among_name: str | None = None, vocab_size: int | None = None, **options) -> pd.DataFrame:
    """The lowest-perplexity row at each target over EVERY row of ``runs`` (dense left out), or over ``among``.

    Args:
        runs, windows: a runs table of one setting and its per-window losses (or None).
        among: labels, or a function of the labelled table returning a boolean mask, restricting the
            competition; then ``among_name`` (e.g. "TopK allocations") must say what competed.
    Returns:
        One row per target: sparsity, best, perplexity, runner_up, runner_up_perplexity, n_competing,
        ``among`` (the phrase titles use: "of all 20 runs" / "among TopK allocations (12 runs)") and the
        best's verdict against the runner-up (change, low, high, verdict, method; percent).
    """
    if among is not None and not among_name:
        raise ActTailError("A restricted competition must be named. Fix: pass among_name='TopK allocations' (say "
                           "which rows competed) or among=None for every row.")
    table = _labelled(runs)
    table = table[table["strategy"] != DENSE]
    table = table.assign(gone_=_collapsed_flags(table, vocab_size))
    pool = _select(table, among)
    if pool.empty:
        raise ActTailError("No rows compete. Fix: check `among`.")
    n_labels = pool["label"].nunique()
    phrase = f"among {among_name} ({n_labels} runs)" if among is not None else f"of all {n_labels} runs"
    rows = []
    for sparsity, group in pool.groupby("sparsity", sort=True):
        ranked = group.sort_values("perplexity")
        best = ranked.iloc[0]
        row = dict(sparsity=float(sparsity), best=best["label"], perplexity=float(best["perplexity"]),
                   runner_up=None, runner_up_perplexity=math.nan, n_competing=len(group), among=phrase,
                   change=math.nan, low=math.nan, high=math.nan, verdict=NO_INTERVAL, method="", note="")
        if len(ranked) > 1:
            second = ranked.iloc[1]
            row.update(runner_up=second["label"], runner_up_perplexity=float(second["perplexity"]))
            head = runs[runs["strategy"].isin([best["strategy"], second["strategy"], DENSE])]
            head = head[(head["sparsity"] - sparsity).abs() < 1e-9]
            mine = windows[windows["strategy"].isin([best["strategy"], second["strategy"]])] if windows is not None \
                else None
            if mine is not None:
                mine = mine[(mine["sparsity"] - sparsity).abs() < 1e-9]
            v = perplexity_verdicts(head, mine, baseline=second["label"], vocab_size=vocab_size, **options)
            if len(v):
                row.update({k: v.iloc[0][k] for k in ("change", "low", "high", "verdict", "method", "note")})
        rows.append(row)
    return pd.DataFrame(rows)


def lowest_title(win: pd.DataFrame, metric: str = "lowest perplexity") -> str:
    """A figure title from :func:`lowest`: "lowest perplexity of all 20 runs: rotated-uniform (0.5-0.8)";
    a winner whose lead over the runner-up is inside the noise (or has no interval) is marked "~"/"?"."""
    order = list(win["sparsity"])
    marks = {NOISE: "~", NO_INTERVAL: "?"}
    names = [f"{r.best}{marks.get(r.verdict, '')}" for r in win.itertuples()]
    groups: dict[str, list] = {}
    for name, s in zip(names, order):
        groups.setdefault(name, []).append(s)
    text = f"{metric} {win['among'].iloc[0]}: " + ", ".join(f"{n} ({_span(v, order)})" for n, v in groups.items())
    legend = [t for m, t in (("~", "~ = lead inside the noise"), ("?", "? = no interval")) if any(m in n for n in groups)]
    return text + (f" ({'; '.join(legend)})" if legend else "")


def lowest_sentence(win: pd.DataFrame) -> str:
    """"Lowest perplexity per target of all 20 runs: 0.5: rotated-uniform 33.9 (vs teal-greedy-fine 38.1:
    -11.0% [-12.1, -9.8], better); ..." (a winner tied within the noise says so)."""
    parts = []
    for r in win.itertuples():
        text = f"{r.sparsity:g}: {r.best} {_num(r.perplexity)}"
        if r.runner_up is not None:
            if r.note:
                lead = r.note
            elif math.isfinite(r.low):
                lead = f"{r.change:+.1f}% [{r.low:+.1f}, {r.high:+.1f}], {r.verdict}"
            else:
                lead = f"{r.change:+.1f}%, no interval: no per-window losses committed"
            text += f" (vs next, {r.runner_up} {_num(r.runner_up_perplexity)}: {lead})"
        parts.append(text)
    method = next((m for m in win["method"] if "bootstrap" in str(m)), "")
    return f"Lowest perplexity per target {win['among'].iloc[0]}" + (f" ({method})" if method else "") + ": " \
        + "; ".join(parts) + "."


# --------------------------------------------------------------------------- controls
def control_verdicts(runs: pd.DataFrame, windows: pd.DataFrame | None = None, pairs: Iterable[tuple] | None = None,
                     **options) -> pd.DataFrame:
    """The alpha-order controls against the alpha-guided run they control.

    ``pairs``: (guided, control) labels; default: for each xmin rule in the table, ``acttail`` of that rule
    against ``shuffled`` and ``acttail-rev`` of the same rule (labels by :func:`report.labels.display_label`:
    ``acttail-ks`` / ``shuffled[xmin=ks]`` / ``acttail-rev[xmin=ks]``), where present. Returns a verdict table
    (:data:`VERDICT_COLUMNS`) of each control against its guided run (``baseline`` = the guided run;
    ``verdict`` "better" = the control beats the alpha-guided order); empty when no pair is present.
    """
    table = _labelled(runs)
    present = set(table["label"])
    if pairs is None:
        rules = [str(r) for r in dict.fromkeys(table["xmin_rule"].dropna())] if "xmin_rule" in table else []
        pairs = [(display_label("acttail", rule), display_label(control, rule))
                 for rule in rules for control in ("shuffled", "acttail-rev")]
    pairs = [(g, c) for g, c in pairs if g in present and c in present]
    frames = []
    for guided, control in pairs:
        keep = table["label"].isin([guided, control, DENSE])
        v = perplexity_verdicts(runs[keep.to_numpy()], windows, baseline=guided, **options)
        frames.append(v[v["label"] == control])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(VERDICT_COLUMNS))


def control_sentences(controls: pd.DataFrame, against_uniform: pd.DataFrame | None = None) -> list[str]:
    """What the controls say, computed from :func:`control_verdicts` (and, optionally, the same controls'
    rows of a :func:`perplexity_verdicts` table against uniform): per pair, each target's verdict, then the
    reading ("alpha points the wrong way at 0.6-0.8", "the alpha order does not help at ...", or "carries signal")."""
    out = []
    for (control, guided), group in controls.groupby(["label", "baseline"], sort=False):
        order = list(group["sparsity"])
        detail = "; ".join(f"{r.sparsity:g}: {_as_verdict(r._asdict() | {'task': None}).short()}"
                           for r in group.itertuples(index=False))
        line = f"{control} against {guided}: {detail}."
        wins = list(group.loc[group["verdict"] == BETTER, "sparsity"])
        if wins:
            why = ("alpha points the wrong way on this model" if "rev" in control or "alpha_down" in control
                   else "the alpha order does no better than a random order with the same budgets")
            line += f" {control} beats {guided} at {_span(wins, order)}: {why} there."
        elif (group["verdict"] == WORSE).all():
            line += f" {guided} beats {control} at every target: the alpha order carries signal here."
        if against_uniform is not None:
            mine = against_uniform[against_uniform["label"] == control]
            better = list(mine.loc[mine["verdict"] == BETTER, "sparsity"])
            if better:
                line += f" {control} also beats uniform at {_span(better, list(mine['sparsity']))}."
        out.append(line)
    return out


__all__ = ["lowest", "lowest_title", "lowest_sentence", "control_verdicts", "control_sentences"]
