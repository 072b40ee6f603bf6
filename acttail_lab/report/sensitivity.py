"""Does alpha predict sensitivity? The tables and the conclusion of notebook 07, computed from the data.

Inputs are the committed tables of ``data/results/`` (or fresh ones from
:mod:`acttail_lab.measure.sensitivity`): a cost table (``sensitivity.cost_table``), its
per-projection summaries (``sensitivity.sensitivity_summary``), the
correlation table (``sensitivity.spectral_correlations``) and an alpha table
(``spectra.analyze``). Everything here is pure pandas on those tables:

- :func:`allocations_by_target`: the alpha presets, ``surrogate-optimal`` and ``hybrid``
  at several model-wide budgets;
- :func:`proxy_agreement`, :func:`kind_only_baseline`, :func:`estimated_costs`,
  :func:`perplexity_agreement`: the comparison tables;
- :func:`estimate_vs_measurement`, :func:`measured_lines`, :func:`disagreement_line`: the estimated
  cost against the measured perplexity change (the verdict engine's table, ``report.verdicts``:
  paired-bootstrap intervals over evaluation windows, collapsed runs never compared as numbers);
- :func:`predictor_table`, :func:`predictor_line`: every spectral metric's overall rho with its
  Fisher-z interval, and which of them cannot be told apart;
- :func:`conclusions`: the conclusion sentences, so they stay true when the
  data are regenerated; :func:`verdict` and :func:`strength` word a Spearman rho.

Sign convention (ActTail's premise): rho(alpha, cost) < 0 supports it (higher
alpha, less damage), rho > 0 contradicts it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd
from scipy.stats import spearmanr

from ..allocation import allocate
from ..allocation.cost_model import estimate_cost
from ..allocation.cost_solvers import CostCurves, hybrid_allocation, optimal_allocation
from .rank_correlation import LEVEL, fisher_interval
from .sensitivity_measured import (  # noqa: F401  (part of this module's API: notebook 07 imports them here)
    disagreement_line,
    estimate_vs_measurement,
    measured_conclusion,
    measured_lines,
)

PRESETS = ("uniform", "acttail", "acttail-block", "acttail-rev", "shuffled", "teal-kind")
NO_INFORMATION = 0.2  # |rho| below this: "no useful ranking information"
MODERATE, STRONG = 0.3, 0.6  # |rho| thresholds of strength()
RULE_FREE = ("stable_rank", "lambda_max")
"""Spectral metrics that do not depend on the xmin rule (the same value in every rule's table)."""


def metric_label(metric: str, rule: str) -> str:
    """``"alpha (peak)"`` for rule-dependent metrics, the bare name for :data:`RULE_FREE` ones."""
    return metric if metric in RULE_FREE else f"{metric} ({rule})"


# --------------------------------------------------------------------------- allocations
def allocations_at(alphas: pd.DataFrame, cost: pd.DataFrame, target: float,
                   presets: Iterable[str] = PRESETS) -> dict[str, pd.DataFrame]:
    """Every allocation compared in notebook 07 at one budget.

    Inputs: ``alphas``, an alpha table (``spectra.analyze``: layer, projection,
    name, n_params, alpha); ``cost``, the calibration cost table the
    ``surrogate-optimal`` and ``hybrid`` allocations are solved from (pooled
    ``rel_error``, ``s_max`` 0.95); ``target``, the parameter-weighted mean
    sparsity in [0, 0.95]; ``presets``, preset names of ``allocation.allocate``.

    Output: ``{label: allocation}`` in the order of ``presets``, then
    "surrogate-optimal" and "hybrid"; each allocation meets ``target`` within 1e-9.
    """
    out = {label: allocate(alphas, label, target) for label in presets}
    out["surrogate-optimal"] = optimal_allocation(cost, target)
    out["hybrid"] = hybrid_allocation(alphas, cost, target)
    return out


def allocations_by_target(alphas: pd.DataFrame, cost: pd.DataFrame, targets: Iterable[float],
                          presets: Iterable[str] = PRESETS) -> dict[float, dict[str, pd.DataFrame]]:
    """:func:`allocations_at` for each budget: ``{target: {label: allocation}}`` in the order given."""
    presets = tuple(presets)
    return {target: allocations_at(alphas, cost, target, presets) for target in targets}


# --------------------------------------------------------------------------- comparison tables
def _within_layer_rho(both: pd.DataFrame, proxy: str, loss: str) -> pd.Series:
    return both.groupby("layer").apply(lambda g: spearmanr(g[proxy], g[loss]).statistic, include_groups=False)


def proxy_agreement(measured: pd.DataFrame, loss_summary: pd.DataFrame, levels: Iterable[float]) -> pd.DataFrame:
    """Does the cheap output error rank projections as the loss increase does?

    Inputs: ``measured``, ``sensitivity_summary`` of the cost table for
    ``rel_error`` merged with the one for ``rel_error_token`` (columns name,
    layer, ``rel_error@{s}``, ``rel_error_token@{s}``); ``loss_summary``,
    ``sensitivity_summary(loss, value="loss_increase")`` (name, layer,
    ``loss_increase@{s}``; a subset of the projections); ``levels``, the
    sparsities s.

    Output: one row per (level, proxy): sparsity, proxy (the column name), n
    (projections with both measures), rho_all (Spearman over those
    projections) and rho_within_layer_median (median over layers of the rho
    across the layer's kinds; NaN-valued layers count as in ``Series.median``).
    """
    rows = []
    for s in levels:
        loss = f"loss_increase@{s:g}"
        both = loss_summary[["name", "layer", loss]].merge(measured, on=["name", "layer"])
        for proxy in (f"rel_error@{s:g}", f"rel_error_token@{s:g}"):
            rows.append(dict(sparsity=s, proxy=proxy, n=len(both),
                             rho_all=spearmanr(both[proxy], both[loss]).statistic,
                             rho_within_layer_median=_within_layer_rho(both, proxy, loss).median()))
    return pd.DataFrame(rows)


def kind_only_baseline(measured: pd.DataFrame, corr: pd.DataFrame, levels: Iterable[float], alpha_rule: str = "ks",
                       metrics: Iterable[str] = ("alpha", "stable_rank")) -> pd.DataFrame:
    """How much of an overall correlation is just which kind a projection is?

    Inputs: ``measured`` (per-projection summary with projection and
    ``rel_error@{s}``), ``corr`` (``spectral_correlations``), ``levels`` (the
    sparsities s), ``alpha_rule`` (the xmin rule whose rows of ``corr`` are
    read), ``metrics`` (spectral metrics to show beside the baseline).

    Output: one row per level: sensitivity (``rel_error@{s}``), kind_only (the
    Spearman rho between every projection's cost and its kind's mean cost: what
    knowing the kind alone achieves) and ``"{metric} ({alpha_rule})"``: that
    metric's overall rho from ``corr`` (NaN when ``corr`` lacks the row); rule-free metrics
    (:data:`RULE_FREE`) are named without a rule.
    """
    rows = []
    for column in [f"rel_error@{s:g}" for s in levels]:
        kind_mean = measured.groupby("projection")[column].transform("mean")
        row = dict(sensitivity=column, kind_only=spearmanr(kind_mean, measured[column]).statistic)
        for metric in metrics:
            row[metric_label(metric, alpha_rule)] = median_rho(corr, metric, column, rule=alpha_rule)
        rows.append(row)
    return pd.DataFrame(rows)


def estimated_costs(allocations: Mapping[float, Mapping[str, pd.DataFrame]], curves: Mapping[str, CostCurves],
                    reference: str = "surrogate-optimal") -> pd.DataFrame:
    """Model-level estimated cost of every allocation (``sensitivity.estimate_cost``).

    Inputs: ``allocations`` as returned by :func:`allocations_by_target`;
    ``curves``, ``{value: sensitivity.cost_curves(cost, value)}`` (e.g.
    rel_error and rel_error_token); ``reference``, the label costs are divided by.

    Output: one row per (target, label) with label, target, one column per
    value (the parameter-weighted mean relative error) and ``"{value} /
    {reference}"`` (the ratio to the reference's cost at the same target; NaN
    where the reference is missing at that target).
    """
    estimated = pd.DataFrame([
        dict(label=label, target=target, **{value: estimate_cost(a, c) for value, c in curves.items()})
        for target, allocs in allocations.items() for label, a in allocs.items()])
    best = estimated[estimated.label == reference].set_index("target")
    for value in curves:
        estimated[f"{value} / {reference}"] = estimated[value] / estimated.target.map(best[value])
    return estimated


def perplexity_agreement(estimated: pd.DataFrame, ppl_table: pd.DataFrame, value: str = "rel_error",
                         min_strategies: int = 3) -> pd.DataFrame:
    """Does the estimated cost order the strategies as the measured perplexity does?

    Inputs: ``estimated`` (:func:`estimated_costs`); ``ppl_table``, measured
    perplexity with one row per strategy label and one column per target
    sparsity (NaN where not measured); ``value``, the estimated-cost column;
    ``min_strategies``, the fewest strategies with both numbers for a rho.

    Output: one row per target with at least ``min_strategies`` such
    strategies: target, n (the strategies compared), spearman_rho (estimated
    cost vs perplexity; +1 = same order), rho_low, rho_high (its 95% Fisher-z interval).
    """
    rows = []
    for target in ppl_table.columns:
        est = estimated[estimated.target == target].set_index("label")[value]
        common = [label for label in ppl_table.index if label in est.index and pd.notna(ppl_table.loc[label, target])]
        if len(common) >= min_strategies:
            rho = float(spearmanr(est[common], ppl_table.loc[common, target]).statistic)
            low, high = fisher_interval(rho, len(common))
            rows.append(dict(target=target, n=len(common), spearman_rho=rho, rho_low=low, rho_high=high))
    return pd.DataFrame(rows, columns=["target", "n", "spearman_rho", "rho_low", "rho_high"])


# --------------------------------------------------------------------------- reading the correlation table
def pick_correlation(corr: pd.DataFrame, metric: str, sensitivity: str, by: str = "all",
                     rule: str = "ks") -> pd.DataFrame:
    """The rows of a ``spectral_correlations`` table for one metric, cost, grouping and xmin rule.

    ``by``: "all" (one row), "projection" (one row per kind) or "layer" (one
    row per layer). Output: those rows (rule, metric, sensitivity, group_by,
    group, rho, p_value, n); empty when none match.
    """
    return corr[(corr.rule == rule) & (corr.metric == metric) & (corr.sensitivity == sensitivity)
                & (corr.group_by == by)]


def median_rho(corr: pd.DataFrame, metric: str, sensitivity: str, by: str = "all", rule: str = "ks") -> float:
    """Median Spearman rho over the groups of :func:`pick_correlation` (the rho itself for by="all");
    NaN when no row matches."""
    return pick_correlation(corr, metric, sensitivity, by, rule).rho.median()


def alpha_title(corr: pd.DataFrame, column: str, rule: str) -> str:
    """A title for alpha beside a measured cost: the overall rho with its Fisher-z interval and what it says
    about ActTail's premise (:func:`verdict`), and the median rho within kinds."""
    row = pick_correlation(corr, "alpha", column, rule=rule)
    if row.empty:
        return f"alpha ({rule}) and {column}"
    r = row.iloc[0]
    low, high = fisher_interval(float(r.rho), int(r.n))
    within = median_rho(corr, "alpha", column, "projection", rule)
    return (f"rho(alpha {rule}, {column}) = {r.rho:+.2f} [{low:+.2f}, {high:+.2f}] over {int(r.n)} projections "
            f"({verdict(r.rho)});\nwithin a kind, across layers: median {within:+.2f} ({verdict(within)})")


def verdict(rho: float) -> str:
    """What a rho(alpha, cost) says about ActTail's premise: |rho| < 0.2 is no information, then the sign."""
    if pd.isna(rho):
        return "undefined (too few projections or a constant column)"
    if abs(rho) < NO_INFORMATION:
        return "no useful ranking information"
    return "supports ActTail's premise" if rho < 0 else "the OPPOSITE of ActTail's premise"


def strength(rho: float) -> str:
    """"strong" for |rho| >= 0.6, "moderate" for >= 0.3, else "weak" ("undefined" for NaN)."""
    if pd.isna(rho):
        return "undefined"
    return "strong" if abs(rho) >= STRONG else "moderate" if abs(rho) >= MODERATE else "weak"


# --------------------------------------------------------------------------- conclusion sentences
def _error_lines(corr: pd.DataFrame, levels, rule: str) -> list[str]:
    lines = []
    for s in levels:
        c = f"rel_error@{s:g}"
        r_all, r_kind, r_layer = (median_rho(corr, "alpha", c, by, rule) for by in ("all", "projection", "layer"))
        lines.append(f"Output error at s={s:g}: rho(alpha {rule}) = {r_all:+.2f} over all projections "
                     f"({verdict(r_all)}); within kind (across layers) median {r_kind:+.2f} ({verdict(r_kind)}); "
                     f"within layer (across kinds) median {r_layer:+.2f} ({verdict(r_layer)}).")
    return lines


def _loss_line(corr: pd.DataFrame, level: float, rule: str) -> str:
    row = pick_correlation(corr, "alpha", f"loss_increase@{level:g}", rule=rule).iloc[0]
    return (f"Loss increase at s={level:g} (subset of {row.n} projections): rho(alpha {rule}) = "
            f"{row.rho:+.2f}, p = {row.p_value:.2g} ({verdict(row.rho)}).")


def predictor_table(corr: pd.DataFrame, column: str, level: float = LEVEL) -> pd.DataFrame:
    """Every spectral metric's overall Spearman rho with ``column`` (group_by "all"), with its Fisher-z interval.

    Output: metric (:func:`metric_label`: rule-free metrics once, without a rule), rho, low, high, n, p_value,
    sorted by |rho| (largest first).
    """
    rows = corr[(corr.group_by == "all") & (corr.sensitivity == column)].dropna(subset=["rho"])
    rows = rows.assign(metric_label=[metric_label(m, r) for m, r in zip(rows.metric, rows.rule)])
    rows = rows.drop_duplicates("metric_label")
    out = pd.DataFrame([dict(metric=r.metric_label, rho=float(r.rho), n=int(r.n), p_value=float(r.p_value),
                             **dict(zip(("low", "high"), fisher_interval(float(r.rho), int(r.n), level))))
                        for r in rows.itertuples()], columns=["metric", "rho", "low", "high", "n", "p_value"])
    return out.reindex(out.rho.abs().sort_values(ascending=False).index).reset_index(drop=True)


def predictor_line(corr: pd.DataFrame, column: str, shown: int = 4, level: float = LEVEL) -> str:
    """The spectral predictors of ``column`` with their intervals; every metric whose interval overlaps the
    largest |rho|'s is named as indistinguishable from it, so no single "best" is claimed unless its interval
    clears all others."""
    table = predictor_table(corr, column, level)
    if table.empty:
        return f"No spectral correlation with {column} in the table."
    top = table.iloc[0]
    # compare strengths on |rho|: a negative rho's interval is mirrored to the positive side
    mag_low = table.low.where(table.rho >= 0, -table.high)
    mag_high = table.high.where(table.rho >= 0, -table.low)
    tied = table[(table.index > 0) & (mag_high >= mag_low.iloc[0])]
    listed = ", ".join(f"{r.metric} {r.rho:+.2f} [{r.low:+.2f}, {r.high:+.2f}]" for r in table.head(shown).itertuples())
    text = (f"Spectral predictors of {column} over {int(top.n)} projections (Spearman rho, {level:.0%} Fisher-z interval; "
            f"the {min(shown, len(table))} largest of {len(table)}): {listed}")
    if len(tied):
        text += (f"; the intervals of {', '.join(tied.metric)} overlap that of {top.metric}, so the data do not single "
                 "out one best predictor")
    else:
        text += f"; only {top.metric}'s interval clears every other's"
    return text + "."


def _proxy_line(proxy_check: pd.DataFrame) -> str:
    top = proxy_check.loc[proxy_check.rho_all.idxmax()]
    return (f"Cheap proxy vs loss: rho({top.proxy}, loss increase) = {top.rho_all:+.2f} over {top.n} projections, "
            f"a {strength(top.rho_all)} agreement (median {top.rho_within_layer_median:+.2f} within a layer, "
            f"{strength(top.rho_within_layer_median)}).")


def _kind_line(corr: pd.DataFrame, baseline: pd.DataFrame, column: str, rule: str) -> str:
    kind_only = baseline.set_index("sensitivity").loc[column, "kind_only"]
    r_kind = median_rho(corr, "alpha", column, "projection", rule)
    return (f"The kind's mean measured cost alone ranks {column} with rho {kind_only:+.2f} (an upper bound for what "
            f"the kind tells); alpha ({rule}) reaches {median_rho(corr, 'alpha', column, rule=rule):+.2f} overall "
            f"and {r_kind:+.2f} within kinds, so "
            + ("alpha's overall correlation comes from the differences between kinds, not from layers."
               if abs(r_kind) < NO_INFORMATION else "alpha also ranks the layers within a kind."))


def _within_kind_line(corr: pd.DataFrame, column: str, rule: str) -> str:
    within = pick_correlation(corr, "alpha", column, "projection", rule)
    significant = within[within.p_value < 0.05]
    return ("Within a kind (across layers), alpha is significantly related to the cost (p < 0.05) for: "
            + (", ".join(f"{r.group} ({r.rho:+.2f})" for r in significant.itertuples()) or "no kind")
            + f" of {len(within)}; a negative sign would support the premise.")


def _estimated_line(estimated: pd.DataFrame, target: float, reference: str = "surrogate-optimal") -> str:
    ratios = estimated[estimated.target == target].set_index("label")[f"rel_error / {reference}"].sort_values()
    return (f"Estimated cost (the surrogate, not a measurement) at {target:g}, as a multiple of {reference}'s, "
            "lowest first: " + ", ".join(f"{label} {r:.3f}" for label, r in ratios.items() if label != reference)
            + "; measured perplexity is not available here, so this is not a ranking of the allocations.")


def conclusions(corr: pd.DataFrame, proxy_check: pd.DataFrame, baseline: pd.DataFrame, estimated: pd.DataFrame,
                levels: Iterable[float], targets: Iterable[float], alpha_rule: str = "ks",
                measured: pd.DataFrame | None = None, lowest: str | None = None) -> list[str]:
    """The conclusion of notebook 07 as sentences computed from the tables (one string per statement).

    Inputs: ``corr`` (``spectral_correlations`` over all xmin rules, with
    ``rel_error@{s}`` for every level and ``loss_increase@{levels[-1]}``);
    ``proxy_check`` (:func:`proxy_agreement`); ``baseline``
    (:func:`kind_only_baseline`, with a row for ``rel_error@{levels[-1]}``);
    ``estimated`` (:func:`estimated_costs`, with a "surrogate-optimal" reference at the
    first and last target); ``levels`` (sparsities at which costs were read);
    ``targets`` (model-wide budgets; the first and the last are summarised);
    ``alpha_rule`` (the xmin rule whose alphas are judged).

    Output, in order: per level, alpha vs output error overall / within kind /
    within layer with :func:`verdict`; alpha vs loss increase at the last
    level; the best spectral predictor of the output error and of the loss
    increase; the cheap proxy's agreement with the loss (:func:`strength`);
    the kind-only baseline against alpha; the kinds where alpha is significant
    across layers. Then, with ``measured`` (the verdict engine's
    ``report.verdicts.perplexity_verdicts(runs, windows)``: the measured perplexity change against uniform
    with paired-bootstrap intervals and verdicts): per target, the verdict of every allocation of
    ``estimated`` (:func:`measured_lines`), ``lowest`` (a sentence of ``report.winners.lowest_sentence``,
    when given) and where the estimate disagrees with the measurement (:func:`disagreement_line`); without
    them, the estimated cost at the first and last target, worded as an estimate.
    """
    levels, targets = tuple(levels), tuple(targets)
    last = f"rel_error@{levels[-1]:g}"
    return [
        *_error_lines(corr, levels, alpha_rule),
        _loss_line(corr, levels[-1], alpha_rule),
        predictor_line(corr, last),
        predictor_line(corr, f"loss_increase@{levels[-1]:g}"),
        _proxy_line(proxy_check),
        _kind_line(corr, baseline, last, alpha_rule),
        _within_kind_line(corr, last, alpha_rule),
    ] + (measured_conclusion(estimated, measured, targets, lowest) if measured is not None
         else [_estimated_line(estimated, target) for target in (targets[0], targets[-1])])
