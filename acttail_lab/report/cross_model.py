"""Is the answer general? Every committed grid (model x text) against uniform, with paired-bootstrap intervals.

Inputs: the committed grids ``perplexity_<model>.csv`` (*Pride and Prejudice*) and
``perplexity_encyclopedic_<model>.csv`` (Wikipedia paragraphs), each with its ``_windows`` table of
per-window losses. Outputs: :func:`cross_model_table` (tidy: one row per model x text x strategy x
target, the % change of perplexity against uniform on the same windows with its 95% interval) and
:func:`cross_model_sentences` (the conclusions, computed from that table). Regenerate the grids with
``python scripts/reproduce_perplexity.py --model M`` and ``python scripts/reproduce_encyclopedic.py --model M``.
"""
from __future__ import annotations

import pandas as pd

from ..core.builtin_models import BUILTIN_MODELS
from ..core.errors import ActTailError
from ..core.paths import result_path
from ..core.results_io import load_table
from .bootstrap import paired_bootstrap
from .headline import collapse_threshold
from .noise_floor import numeric_floor
from .verdicts import BETTER, NOISE, WORSE, judge

TEXTS = {"perplexity": "austen", "perplexity_encyclopedic": "encyclopedic"}
"""Grid table -> text label (the built-in corpus each grid is scored on)."""
MODELS = tuple(BUILTIN_MODELS)
"""Every built-in model (``core.builtin_models``); those with no committed table are left out where loaded."""
COMPARED = ("acttail", "acttail-ks", "acttail-block", "acttail[fit=block-mean]", "shuffled", "acttail-rev",
            "teal-greedy", "teal-greedy-fine", "rotated-uniform")
"""The strategies the cross-model table compares with uniform (each grid has the ones it ran): the alpha-guided
ones, their two controls (random order, reversed order), TEAL's greedy search and the upper reference, and
uniform budgets on LaRoSA-rotated inputs (another method, for scale)."""
ALPHA_GUIDED = ("acttail", "acttail-ks", "acttail-block", "acttail[fit=block-mean]")
CROSS_COLUMNS = ("model", "text", "strategy", "sparsity", "perplexity", "uniform", "change_pct", "ci_low_pct",
                 "ci_high_pct", "inside_noise", "verdict", "n_windows", "tokens", "baseline", "collapsed")
"""Columns of :func:`cross_model_table`; ``verdict`` is the verdict engine's ``better`` / ``worse`` (interval
excludes 0) or ``inside the noise`` (``report.verdicts``); ``uniform`` is the perplexity of the run compared with,
named in ``baseline`` (uniform unless asked otherwise); ``collapsed``: the run's perplexity reached a quarter of the
vocabulary (``report.headline.collapsed``), so its percentage is not a comparison (:func:`wide_table` says
"collapsed" instead)."""
UPPER_REFERENCE = "teal-greedy-fine"
"""The upper reference of TopK allocations (TEAL's greedy search with fine per-projection steps)."""


def load_grids(models=MODELS, results_dir=None, tables=TEXTS) -> dict[tuple[str, str], tuple[pd.DataFrame, pd.DataFrame]]:
    """``{(model, text): (runs, windows)}`` for every committed grid of ``models`` (missing ones left out);
    ``tables``: grid table (a ``core.paths.RESULT_FILES`` key with a ``_windows`` twin) -> text label."""
    grids = {}
    for model in models:
        for table, text in tables.items():
            path = result_path(table, model, results_dir)
            windows = result_path(f"{table}_windows", model, results_dir)
            if path.exists() and windows.exists():
                grids[(model, text)] = (load_table(path), load_table(windows))
    return grids


def _verdict(row) -> str:
    """The verdict engine's word (``report.verdicts.judge``) for one change and its interval, against the
    numeric floor across CPUs at its target (``report.noise_floor``)."""
    return judge(row.ci_low_pct, row.ci_high_pct, floor=numeric_floor(float(getattr(row, "sparsity", 0.0))))


def _limit(runs: pd.DataFrame) -> float:
    """Collapse threshold of a grid (``report.headline.collapse_threshold``); infinite for an unknown model."""
    try:
        return collapse_threshold(runs)
    except ActTailError:
        return float("inf")


def cross_model_table(grids, strategies=COMPARED, n_boot: int = 2000, seed: int = 0,
                      baseline: str = "uniform") -> pd.DataFrame:
    """% change of perplexity against uniform per model x text x strategy x target, with 95% paired intervals.

    ``grids``: :func:`load_grids` output. Only ``strategies`` a grid ran appear; the interval is the paired
    bootstrap over that grid's evaluation windows (``report.bootstrap.paired_bootstrap``). ``baseline``: the
    run every change is measured against (default uniform; e.g. ``"acttail"`` to compare acttail-rev with it).
    """
    parts = []
    for (model, text), (runs, windows) in grids.items():
        chosen = windows[windows["strategy"].isin([*strategies, baseline])]
        if chosen["strategy"].nunique() < 2 or baseline not in set(chosen["strategy"]):
            continue
        ci = paired_bootstrap(chosen, baseline=baseline, n_boot=n_boot, seed=seed)
        ppl = runs.set_index(["strategy", "sparsity"])["perplexity"]
        ci["perplexity"] = [float(ppl[(s, t)]) for s, t in zip(ci["strategy"], ci["sparsity"])]
        ci["uniform"] = [float(ppl[(baseline, t)]) for t in ci["sparsity"]]
        ci["tokens"] = int(runs["tokens"].iloc[0])
        ci["collapsed"] = ci["perplexity"] >= _limit(runs)
        parts.append(ci.assign(model=model, text=text))
    if not parts:
        raise ActTailError(f"No grid with {baseline} and one of {list(strategies)} was given (grids: {sorted(grids)}). "
                           "Fix: regenerate them (scripts/reproduce_perplexity.py --model M, "
                           "scripts/reproduce_encyclopedic.py --model M, scripts/reproduce_upper_reference.py --model M).")
    table = pd.concat(parts, ignore_index=True)
    table["verdict"] = [_verdict(r) for r in table.itertuples()]
    order = {name: {v: i for i, v in enumerate(dict.fromkeys(values))} for name, values in
             (("strategy", strategies), ("model", [m for m, _ in grids]), ("text", [t for _, t in grids]))}
    table = table.sort_values(["model", "text", "strategy", "sparsity"],
                              key=lambda c: c.map(order[c.name]) if c.name in order else c, kind="stable")
    return table[list(CROSS_COLUMNS)].reset_index(drop=True)


def verdict_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: how many model x text x target cells are better / noise / worse than uniform."""
    counts = table.groupby(["strategy", "verdict"], sort=False).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[BETTER, NOISE, WORSE], fill_value=0)
    counts["cells"] = counts.sum(axis=1)
    return counts


def wide_table(table: pd.DataFrame, digits: int = 0) -> pd.DataFrame:
    """``"+5 [+3, +8]"`` texts (percent vs uniform; ``~`` = inside the noise; ``collapsed`` for a run that collapsed,
    whose percentage compares nothing), strategy x (model, text, target)."""
    cells = ["collapsed" if getattr(r, "collapsed", False) else
             f"{r.change_pct:+.{digits}f} [{r.ci_low_pct:+.{digits}f}, {r.ci_high_pct:+.{digits}f}]"
             + (" ~" if r.inside_noise else "") for r in table.itertuples()]
    wide = table.assign(cell=cells).pivot(index="strategy", columns=["model", "text", "sparsity"], values="cell")
    columns = list(dict.fromkeys(zip(table["model"], table["text"], table["sparsity"])))
    return wide.loc[list(dict.fromkeys(table["strategy"])), columns]


def _cells(frame: pd.DataFrame) -> str:
    return ", ".join(f"{r.model}/{r.text} {r.sparsity:g} ({r.change_pct:+.0f}%)" for r in frame.itertuples())


def cross_model_sentences(table: pd.DataFrame) -> list[str]:
    """The cross-model conclusions as sentences computed from :func:`cross_model_table` (one per statement)."""
    settings = table[["model", "text"]].drop_duplicates()
    lines = [f"{len(settings)} model x text settings ({', '.join(f'{m}/{t}' for m, t in settings.itertuples(index=False))}); "
             f"every change is against uniform at the same target on the same windows, with a 95% paired-bootstrap "
             "interval; 'inside the noise' means the interval contains 0."]
    for strategy, counts in verdict_counts(table).iterrows():
        line = (f"{strategy}: better than uniform in {counts[BETTER]} of {counts['cells']} cells, inside the noise "
                f"in {counts[NOISE]}, worse in {counts[WORSE]}")
        rows = table[table["strategy"] == strategy]
        if 0 < counts[BETTER] < counts["cells"]:
            line += f"; better at {_cells(rows[rows['verdict'] == BETTER])}"
        if 0 < counts[WORSE] < counts["cells"]:
            line += f"; worse at {_cells(rows[rows['verdict'] == WORSE])}"
        lines.append(line + ".")
    alpha = table[table["strategy"].isin(ALPHA_GUIDED)]
    if len(alpha):
        beat = alpha[alpha["verdict"] == BETTER]
        lines.append(f"Alpha-guided budgets beat uniform beyond the noise in {len(beat)} of {len(alpha)} cells"
                     + (f" ({_cells(beat)})" if len(beat) else "") + "; "
                     + ("so ActTail's direction (more sparsity where alpha is larger) does not reliably help on these "
                        "models and texts; whether alpha carries a signal at all is the reversed rule's question "
                        "(acttail-rev, below)." if len(beat) < len(alpha) / 2
                        else "so alpha-guided budgets mostly help here."))
    pair = table[table["strategy"] == "acttail"].merge(table[table["strategy"] == "acttail-rev"],
                                                       on=["model", "text", "sparsity"], suffixes=("", "_rev"))
    if len(pair):
        lower = int((pair["change_pct_rev"] < pair["change_pct"]).sum())
        lines.append(f"Reversing alpha's direction (acttail-rev: more sparsity to heavier tails) gives lower perplexity "
                     f"than acttail in {lower} of {len(pair)} cells where both ran.")
    return lines


def calibration_check(models=MODELS, results_dir=None, strategies=("teal-greedy", "teal-greedy-fine"),
                      n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The upper reference checked where it was chosen: each of ``strategies`` against uniform on the
    CALIBRATION split (committed ``upper_reference_<model>_windows.csv``), with paired 95% intervals and a
    ``verdict``. Columns as :func:`cross_model_table` with ``text`` = ``"austen (calibration)"``."""
    grids = load_grids(models, results_dir, {"upper_reference": "austen (calibration)"})
    return cross_model_table(grids, strategies, n_boot=n_boot, seed=seed)


def upper_reference_sentence(check: pd.DataFrame, strategy: str = "teal-greedy-fine") -> str:
    """One sentence: is ``strategy`` at least as good as uniform on calibration text at every target and model?"""
    rows = check[check["strategy"] == strategy]
    worse = rows[rows["verdict"] == WORSE]
    head = (f"On calibration text {strategy} is better than uniform in {int((rows['verdict'] == BETTER).sum())} "
            f"of {len(rows)} model x target cells, inside the noise in {int((rows['verdict'] == NOISE).sum())}")
    if len(worse):
        return head + f" and worse in {len(worse)} ({_cells(worse)}): it is NOT an upper reference there."
    return head + ", worse in none: at least as good as uniform everywhere it was measured."


SENSITIVITIES = ("rel_error@0.8", "loss_increase@0.8")
"""Measured sensitivities compared across models: one projection's TopK output error, and the loss increase
with only that projection sparsified (a subset of layers), both at 80% and on calibration text."""


def sensitivity_table(models=MODELS, results_dir=None, sensitivities=SENSITIVITIES) -> pd.DataFrame:
    """Does a spectral metric predict a projection's TopK sensitivity, per model? From the committed
    ``<model>_correlations.csv`` (``scripts/reproduce_sensitivity.py --model M``): one row per (model,
    sensitivity, metric, rule) with the Spearman rho over all projections (``rho_all``) and the medians of
    the within-kind (across layers) and within-layer (across kinds) rhos. ActTail's premise (higher alpha,
    more tolerant) predicts a NEGATIVE rho of alpha with the error."""
    rows = []
    for model in models:
        path = result_path("correlations", model, results_dir)
        if not path.exists():
            continue
        corr = load_table(path)
        corr = corr[corr["sensitivity"].isin(sensitivities)]
        for (sens, metric, rule), part in corr.groupby(["sensitivity", "metric", "rule"], sort=False):
            within = part.groupby("group_by")["rho"]
            rows.append(dict(model=model, sensitivity=sens, metric=metric, rule=rule,
                             rho_all=float(part.loc[part["group_by"] == "all", "rho"].iloc[0]),
                             within_kind=float(within.median().get("projection", float("nan"))),
                             within_layer=float(within.median().get("layer", float("nan"))),
                             n=int(part.loc[part["group_by"] == "all", "n"].iloc[0])))
    return pd.DataFrame(rows)


def sensitivity_sentences(table: pd.DataFrame, rule: str = "peak") -> list[str]:
    """Per model and sensitivity: alpha's rho (``rule``) overall and within kinds, and the best single metric."""
    lines = []
    for (model, sens), part in table.groupby(["model", "sensitivity"], sort=False):
        alpha = part[(part["metric"] == "alpha") & (part["rule"] == rule)].iloc[0]
        best = part.loc[part["rho_all"].abs().idxmax()]
        sign = "supports" if alpha.rho_all < 0 else "is the opposite of"
        lines.append(f"{model}, {sens} ({alpha.n} projections): rho(alpha {rule}) = {alpha.rho_all:+.2f} overall "
                     f"({sign} ActTail's premise), median {alpha.within_kind:+.2f} within a kind across layers; "
                     f"the strongest single metric is {best.metric} ({best.rule}) with rho {best.rho_all:+.2f}.")
    return lines


def grid_summary(grids) -> pd.DataFrame:
    """One row per grid: model, text, scored tokens, windows, targets, strategies run, dense perplexity."""
    rows = []
    for (model, text), (runs, windows) in grids.items():
        dense = runs.loc[runs["strategy"] == "dense", "perplexity"]
        rows.append(dict(model=model, text=text, tokens=int(runs["tokens"].iloc[0]),
                         windows=int(windows["window_index"].nunique()),
                         targets=", ".join(f"{t:g}" for t in sorted(runs.loc[runs["sparsity"] > 0, "sparsity"].unique())),
                         strategies=int(runs.loc[runs["strategy"] != "dense", "strategy"].nunique()),
                         dense_perplexity=float(dense.iloc[0]) if len(dense) else float("nan")))
    return pd.DataFrame(rows)


def evaluation_size_sentence(summary: pd.DataFrame) -> str:
    """How much text each grid scores (:func:`grid_summary`), in one sentence: fewer windows, wider intervals."""
    parts = [f"{r.model}/{r.text} {r.tokens:,} tokens in {r.windows} windows" for r in summary.itertuples()]
    return (f"Evaluation sizes: {'; '.join(parts)}. A grid with fewer windows has wider paired intervals, so a "
            "verdict there needs a larger change.")


# --------------------------------------------------------------------------- conclusions with intervals
def _verdicts(rows: pd.DataFrame) -> dict:
    counts = {v: int((rows["verdict"] == v).sum()) for v in (BETTER, NOISE, WORSE)}
    return {"better": counts[BETTER], "noise": counts[NOISE], "worse": counts[WORSE], "cells": len(rows)}


def _span_pct(rows: pd.DataFrame) -> str:
    return f"{rows['change_pct'].max():+.0f}% to {rows['change_pct'].min():+.0f}%"


def direction_sentence(table: pd.DataFrame, versus_acttail: pd.DataFrame, reversed_: str = "acttail-rev",
                       guided=ALPHA_GUIDED) -> str:
    """Does alpha carry a signal, and in which direction? ActTail's rule and the reversed rule against uniform,
    and the reversed rule against acttail itself, each counted by verdicts of 95% paired intervals.

    ``table``: :func:`cross_model_table` (against uniform); ``versus_acttail``: the same with
    ``baseline="acttail"`` (at least ``reversed_``'s rows). Returns one sentence whose conclusion follows the counts.
    """
    fwd = _verdicts(table[table["strategy"].isin(guided)])
    rev_rows = table[table["strategy"] == reversed_]
    if not len(rev_rows):
        return (f"Alpha-guided budgets (more sparsity where alpha is larger) beat uniform beyond the noise in "
                f"{fwd['better']} of {fwd['cells']} cells; no grid ran the reversed rule, so alpha's direction is untested.")
    rev = _verdicts(rev_rows)
    pair_rows = versus_acttail[versus_acttail["strategy"] == reversed_]
    pair = _verdicts(pair_rows)
    where = ", ".join(dict.fromkeys(f"{m}/{t}" for m, t in zip(rev_rows["model"], rev_rows["text"])))
    text = (f"Alpha's direction: ActTail's rule (more sparsity where alpha is larger; {', '.join(g for g in guided if g in set(table['strategy']))}) "
            f"beats uniform beyond the noise in {fwd['better']} of {fwd['cells']} cells and is worse in {fwd['worse']}; "
            f"the reversed rule ({reversed_}: more sparsity where alpha is smaller, run on {where}) beats uniform in "
            f"{rev['better']} of {rev['cells']} cells (inside the noise in {rev['noise']}, worse in {rev['worse']}) and "
            f"beats acttail in {pair['better']} of {pair['cells']} (worse in {pair['worse']}"
            + (f"; {_span_pct(pair_rows)} against acttail" if len(pair_rows) else "") + "). ")
    if pair["better"] > pair["cells"] / 2 and rev["worse"] == 0 and rev["better"] > rev["cells"] / 2:
        return text + ("So on these models alpha does say which projections tolerate sparsity, with the opposite sign "
                       "to ActTail's premise: the heavier-tailed (smaller-alpha) projections tolerate more.")
    if fwd["better"] > fwd["cells"] / 2:
        return text + "So ActTail's direction mostly helps here, as its premise predicts."
    return text + "So neither direction of alpha reliably beats uniform here."


def method_vs_reference_sentence(table: pd.DataFrame, versus_reference: pd.DataFrame,
                                 method: str = "rotated-uniform", reference: str = UPPER_REFERENCE) -> str:
    """``method`` (another sparsification method, e.g. rotation) against the upper reference of TopK allocations:
    how often it is lower beyond the noise, and the cell where it gains most against uniform.

    ``table``: :func:`cross_model_table` (against uniform); ``versus_reference``: the same with
    ``baseline=reference`` (at least ``method``'s rows)."""
    rows = versus_reference[versus_reference["strategy"] == method]
    if not len(rows):
        return f"No grid ran both {method} and {reference}."
    counts = _verdicts(rows)
    own = table[table["strategy"] == method]
    top = own.loc[own["change_pct"].idxmin()] if len(own) else None
    ref = table[(table["strategy"] == reference)]
    text = (f"{method} (uniform TopK budgets on LaRoSA-rotated inputs: another method, not another allocation) has "
            f"lower perplexity than the upper reference {reference} beyond the noise in {counts['better']} of "
            f"{counts['cells']} cells where both ran (worse in {counts['worse']}; {_span_pct(rows)} against {reference})")
    if top is not None:
        match = ref[(ref["model"] == top["model"]) & (ref["text"] == top["text"]) & (ref["sparsity"] == top["sparsity"])]
        text += (f"; at {top['model']}/{top['text']} {top['sparsity']:g} it is {top['change_pct']:+.0f}% against uniform"
                 + (f", {reference} {float(match['change_pct'].iloc[0]):+.0f}%" if len(match) else ""))
    if counts["better"] == counts["cells"]:
        return text + (f". So {reference} is an upper reference for how to split TopK budgets only: for choosing what "
                       "to use on these models, rotating the inputs gains more than any allocation measured here.")
    return text + "."


SENSITIVITY_LABELS = {"rel_error@0.8": "TopK output error at 80%", "loss_increase@0.8": "loss increase at 80%"}


def _sensitivity_values(model: str, sensitivity: str, results_dir=None) -> pd.DataFrame | None:
    """Per projection (name, projection kind, value) of a committed sensitivity ``value@level``, or None."""
    from .correlations import sensitivity_summary

    value, _, level = sensitivity.partition("@")
    path = result_path("cost_table" if value == "rel_error" else value, model, results_dir)
    if not path.exists():
        return None
    summary = sensitivity_summary(load_table(path), at=(float(level),), value=value)
    return summary[["name", "projection", sensitivity]]


def alpha_sensitivity_intervals(models=MODELS, results_dir=None, sensitivities=SENSITIVITIES, rules=("peak", "ks"),
                                n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Spearman rho of alpha with each measured sensitivity, with 95% intervals,
    from the committed spectra and sensitivity tables (``scripts/reproduce_sensitivity.py --model M``).

    One row per (model, sensitivity, rule, scope): ``scope`` ``"all"`` (every projection; the verdict engine's
    ``report.rank_correlation``: Fisher-z interval and p) or ``"within kind"`` (the mean of the per-kind rhos across
    layers, with a bootstrap that resamples projections within each kind: ``correlations.spearman_interval``);
    columns rho, low, high, n (projections), n_groups, p, interval (how it was made). ActTail's premise predicts a
    NEGATIVE rho of alpha with the error.
    """
    from .correlations import spearman_interval
    from .rank_correlation import rank_correlation

    rows = []
    for model in models:
        for sens in sensitivities:
            values = _sensitivity_values(model, sens, results_dir)
            for rule in rules:
                path = result_path("spectra", model, results_dir, rule=rule)
                if values is None or not path.exists():
                    continue
                both = values.merge(load_table(path)[["name", "alpha"]], on="name")
                overall = rank_correlation(both["alpha"], both[sens])
                rows.append(dict(model=model, sensitivity=sens, rule=rule, scope="all", rho=overall.rho,
                                 low=overall.low, high=overall.high, n=overall.n, n_groups=1, p=overall.p,
                                 interval=overall.method))
                within = spearman_interval(both["alpha"], both[sens], groups=both["projection"], n_boot=n_boot, seed=seed)
                rows.append(dict(model=model, sensitivity=sens, rule=rule, scope="within kind", **within,
                                 p=float("nan"), interval="stratified bootstrap"))
    return pd.DataFrame(rows)


def sensitivity_interval_sentences(intervals: pd.DataFrame, rule: str = "peak", other: str = "ks") -> list[str]:
    """Per model and sensitivity: alpha's rho over all projections and within a kind, each with its interval,
    and what the signs say about ActTail's premise (computed from the intervals, not the point values)."""
    from .correlations import interval_sign, interval_text
    from .rank_correlation import format_p

    lines = []
    for (model, sens), part in intervals.groupby(["model", "sensitivity"], sort=False):
        get = {(r.rule, r.scope): r._asdict() for r in part.itertuples()}
        if (rule, "all") not in get:
            continue
        whole, within = get[(rule, "all")], get.get((rule, "within kind"))
        text = (f"{model}, {SENSITIVITY_LABELS.get(sens, sens)} ({whole['n']} projections): rho(alpha, sensitivity) = "
                f"{interval_text(whole)} ({format_p(whole['p'])}) over all projections with {rule} alphas")
        if (other, "all") in get:
            text += f" ({interval_text(get[(other, 'all')])} with {other})"
        if within is not None:
            text += f", {interval_text(within)} within a kind across layers (mean over {within['n_groups']} kinds)"
        text += ("; 95% intervals (over all projections Fisher z, within a kind a bootstrap of projections within "
                 "each kind). ")
        sign_all = interval_sign(whole)
        sign_within = interval_sign(within) if within is not None else None
        if sign_all == "positive":
            text += "Over all projections it is positive, the opposite of ActTail's premise (which predicts a negative rho)"
        elif sign_all == "negative":
            text += "Over all projections it is negative, as ActTail's premise predicts"
        else:
            text += "Over all projections it is indistinguishable from 0: no evidence for or against ActTail's premise"
        if sign_within == "indistinguishable from 0" and sign_all != sign_within:
            text += "; within a kind it is indistinguishable from 0, so the signal lies between projection kinds"
        elif sign_within == sign_all == "indistinguishable from 0":
            text += "; within a kind it is indistinguishable from 0 too"
        elif sign_within == sign_all and abs(within["rho"]) < abs(whole["rho"]) / 2:
            text += (f"; within a kind it is {sign_within} too but less than half as strong, so most of the signal lies "
                     "between projection kinds")
        elif sign_within is not None:
            text += f"; within a kind it is {sign_within}"
        lines.append(text + ".")
    return lines
