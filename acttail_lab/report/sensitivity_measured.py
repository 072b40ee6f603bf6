"""The estimated cost of an allocation against its measured perplexity (notebook 07's measured conclusion).

Inputs: an estimated-cost table (``report.sensitivity.estimated_costs``) and a verdict table of the verdict
engine (``report.verdicts.perplexity_verdicts(runs, windows)``: change against uniform with its 95% paired-bootstrap
interval over evaluation windows, verdict, note). Outputs: the merged table (:func:`estimate_vs_measurement`) and
sentences (:func:`measured_lines`, :func:`disagreement_line`, :func:`measured_conclusion`); collapsed runs are named,
never given a percentage.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd


# --------------------------------------------------------------------------- estimate against measurement
def estimate_vs_measurement(estimated: pd.DataFrame, measured: pd.DataFrame, value: str = "rel_error",
                            baseline: str = "uniform") -> pd.DataFrame:
    """The estimated cost of each allocation against its measured perplexity, both relative to ``baseline``.

    Inputs: ``estimated`` (:func:`estimated_costs`: label, target, ``value``); ``measured``, a verdict table
    of the verdict engine (``report.verdicts.perplexity_verdicts(runs, windows)``: label, sparsity, change,
    low, high in percent of uniform's perplexity with its 95% paired-bootstrap interval over evaluation
    windows, verdict, note). Labels are matched by name.

    Output: one row per (label, target) present in both, ``baseline`` left out: label, target,
    estimated_pct (100 (cost / baseline's cost - 1): below 0 = the surrogate expects it better than
    uniform), change_pct, ci_low_pct, ci_high_pct, measured (the engine's verdict), note (e.g. "collapsed":
    then no percentage is meaningful), and agreement: "agree" (the estimate's sign matches a better / worse
    verdict), "disagree" (the verdict is beyond the noise on the other side), "not confirmed" (inside the
    noise) or "not compared" (any other verdict, e.g. both collapsed).
    """
    base = estimated[estimated.label == baseline].set_index("target")[value]
    est = estimated[estimated.label != baseline].assign(
        estimated_pct=lambda d: 100 * (d[value] / d.target.map(base) - 1))
    m = measured.rename(columns={"sparsity": "target", "change": "change_pct", "low": "ci_low_pct",
                                 "high": "ci_high_pct", "verdict": "measured"})
    merged = est[["label", "target", "estimated_pct"]].merge(
        m[["label", "target", "change_pct", "ci_low_pct", "ci_high_pct", "measured", "note"]], on=["label", "target"])

    def agreement(estimated_pct: float, verdict_text: str) -> str:
        if verdict_text == "inside the noise":
            return "not confirmed"
        if verdict_text not in ("better", "worse"):
            return "not compared"
        return "agree" if (estimated_pct < 0) == (verdict_text == "better") else "disagree"

    merged["agreement"] = [agreement(e, v) for e, v in zip(merged.estimated_pct, merged.measured)]
    return merged.sort_values(["target", "change_pct"]).reset_index(drop=True)


def _change(r) -> str:
    """A measured change as text: "+24.0% [+21.8, +26.3]", or the engine's note (e.g. a collapsed run)."""
    note = getattr(r, "note", "")
    if isinstance(note, str) and note:
        return note
    return f"{r.change_pct:+.1f}% [{r.ci_low_pct:+.1f}, {r.ci_high_pct:+.1f}]"


def _named(r) -> str:
    """"acttail +8.5% [+6.7, +10.2]", "teal-kind collapsed" or "acttail (uniform collapsed)"."""
    note = getattr(r, "note", "")
    if isinstance(note, str) and note:
        rest = note.replace(f"{r.label} ", "", 1)
        return f"{r.label} {rest}" if rest == "collapsed" else f"{r.label} ({rest})"
    return f"{r.label} {_change(r)}"


def measured_lines(measured: pd.DataFrame, labels: Iterable[str]) -> list[str]:
    """Per target, the measured perplexity change of ``labels`` against uniform grouped by the verdict engine's
    verdict (``report.verdicts.perplexity_verdicts``: better, inside the noise, worse, ...), each with its 95%
    paired-bootstrap interval (a collapsed run is named, not given a percentage); no single "best" is named
    here (``report.winners.lowest`` says which run is lowest and whether its lead is beyond the noise)."""
    part = measured[measured.label.isin(list(labels))].rename(
        columns={"change": "change_pct", "low": "ci_low_pct", "high": "ci_high_pct"})
    method = next((m for m in part.get("method", []) if "bootstrap" in str(m)), "")
    lines = []
    for target, rows in part.groupby("sparsity"):
        groups = []
        for verdict_name in dict.fromkeys(["better", "inside the noise", "worse", *rows.verdict]):
            these = rows[rows.verdict == verdict_name].sort_values("change_pct")
            if len(these):
                groups.append(f"{verdict_name}: " + ", ".join(_named(r) for r in these.itertuples()))
        lines.append(f"Measured perplexity against uniform at {target:g}" + (f" ({method})" if method else "")
                     + ": " + "; ".join(groups) + ".")
    return lines


def disagreement_line(table: pd.DataFrame) -> str:
    """Where the estimated cost and the measured perplexity disagree (:func:`estimate_vs_measurement`)."""
    counts = table.agreement.value_counts()
    bad = table[table.agreement == "disagree"]
    text = (f"The estimate and the measurement agree on {counts.get('agree', 0)} of {len(table)} comparisons with "
            f"uniform, disagree on {counts.get('disagree', 0)}, and the measurement cannot confirm "
            f"{counts.get('not confirmed', 0)} (inside the noise)")
    if counts.get("not compared", 0):
        text += f"; {counts['not compared']} are not compared (both collapsed)"
    if len(bad):
        text += (": " + "; ".join(f"{r.label} at {r.target:g} is estimated {r.estimated_pct:+.1f}% in cost against "
                                  f"uniform but measures {_change(r)} in perplexity" for r in bad.itertuples()))
    return text + ". Where they disagree, the measurement decides: the surrogate ignores interactions between projections."


def measured_conclusion(estimated: pd.DataFrame, measured: pd.DataFrame, targets, lowest: str | None) -> list[str]:
    """The measured part of notebook 07's conclusion: per target the verdicts of ``estimated``'s allocations
    (:func:`measured_lines`), ``lowest`` when given, and where the estimate disagrees (:func:`disagreement_line`)."""
    labels = [label for label in dict.fromkeys(estimated.label) if label != "uniform"]
    part = measured[measured.sparsity.isin(list(targets))]
    return (measured_lines(part, labels) + ([lowest] if lowest else [])
            + [disagreement_line(estimate_vs_measurement(estimated, part))])


@dataclass
class MeasuredSection:
    """Notebook 07's measured comparison against uniform (all None when the table has no uniform run).

    ``measured``: the verdict engine's table (change against uniform, 95% paired-bootstrap interval, verdict);
    ``intervals``: it as text; ``count``: how many runs are better / inside the noise / worse;
    ``lowest_among`` / ``lowest_all``: the lowest run per target among the compared allocations / over every row,
    each with its lead's verdict."""

    measured: pd.DataFrame | None = None
    intervals: pd.DataFrame | None = None
    count: str | None = None
    lowest_among: str | None = None
    lowest_all: str | None = None
    header: str = ("Perplexity change vs uniform (%) [95% paired-bootstrap interval], same target: negative = better; "
                   "~ = inside the noise")


def measured_section(model: str, results_dir, among: Iterable[str],
                     among_name: str = "the allocations of section 5") -> MeasuredSection:
    """Load ``model``'s committed perplexity grid and windows from ``results_dir`` and judge every run against
    uniform (:class:`MeasuredSection`); ``among``: the labels the restricted "lowest" sentence compares (those
    the grid lacks are named after it; none present: no such sentence)."""
    from ..core.paths import result_path
    from ..core.results_io import load_table
    from . import verdicts, winners
    from .bootstrap import load_windows

    runs = load_table(result_path("perplexity", model, results_dir))
    if not (runs["strategy"] == "uniform").any():
        return MeasuredSection()
    windows = load_windows(model=model, results_dir=results_dir)
    measured = verdicts.perplexity_verdicts(runs, windows)
    graded = set(measured["label"]) | set(measured["baseline"])
    present = [label for label in among if label in graded]
    absent = [label for label in among if label not in graded]
    lowest_among = None  # a grid that holds none of the allocations (a report's smaller set) has no such sentence
    if present:
        lowest_among = winners.lowest_sentence(winners.lowest(runs, windows, among=present, among_name=among_name))
        lowest_among += f" ({', '.join(absent)}: not in this grid)" if absent else ""
    return MeasuredSection(
        measured=measured, intervals=verdicts.interval_text(measured), count=verdicts.count_sentence(measured),
        lowest_among=lowest_among, lowest_all=winners.lowest_sentence(winners.lowest(runs, windows)))
