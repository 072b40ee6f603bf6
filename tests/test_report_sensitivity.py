"""Notebook 07's analysis: allocations per budget, comparison tables, and the computed conclusion sentences."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.allocation.cost_model import cost_curves
from acttail_lab.core.reference import DATA_DIR
from acttail_lab.report.sensitivity import (
    PRESETS,
    allocations_by_target,
    conclusions,
    estimated_costs,
    kind_only_baseline,
    median_rho,
    perplexity_agreement,
    pick_correlation,
    proxy_agreement,
    strength,
    verdict,
)

RESULTS = DATA_DIR / "results"
TARGETS = (0.5, 0.8)


@pytest.fixture(scope="module")
def alphas():
    return pd.read_csv(RESULTS / "smollm2-135m_spectra_ks.csv")


@pytest.fixture(scope="module")
def cost():
    return pd.read_csv(RESULTS / "smollm2-135m_cost_table.csv")


@pytest.fixture(scope="module")
def allocations(alphas, cost):
    return allocations_by_target(alphas, cost, TARGETS)


# --------------------------------------------------------------------------- wording of a rho
@pytest.mark.parametrize("rho, expected", [
    (-0.45, "supports ActTail's premise"),
    (-0.2, "supports ActTail's premise"),
    (-0.19, "no useful ranking information"),
    (0.0, "no useful ranking information"),
    (0.19, "no useful ranking information"),
    (0.2, "the OPPOSITE of ActTail's premise"),
    (0.9, "the OPPOSITE of ActTail's premise"),
])
def test_verdict_thresholds_and_sign(rho, expected):
    assert verdict(rho) == expected


@pytest.mark.parametrize("rho, expected", [
    (0.0, "weak"), (0.29, "weak"), (-0.3, "moderate"), (0.59, "moderate"), (0.6, "strong"), (-0.95, "strong"),
])
def test_strength_thresholds(rho, expected):
    assert strength(rho) == expected


def test_nan_rho_is_undefined_not_a_verdict():
    assert verdict(float("nan")).startswith("undefined")
    assert strength(float("nan")) == "undefined"


# --------------------------------------------------------------------------- a hand-made correlation table
def _row(metric, sensitivity, group_by, group, rho, p_value=0.5, n=30, rule="ks"):
    return dict(rule=rule, metric=metric, sensitivity=sensitivity, group_by=group_by, group=group,
                rho=rho, p_value=p_value, n=n)


@pytest.fixture()
def corr():
    rows = [
        _row("alpha", "rel_error@0.5", "all", "all", -0.45, 1e-6, 210),
        *(_row("alpha", "rel_error@0.5", "projection", k, r) for k, r in (("q", 0.05), ("k", 0.10), ("v", 0.30))),
        *(_row("alpha", "rel_error@0.5", "layer", k, r, n=7) for k, r in (("0", 0.4), ("1", 0.6))),
        _row("alpha", "rel_error@0.8", "all", "all", 0.55, 1e-5, 210),
        _row("alpha", "rel_error@0.8", "projection", "q", 0.12, 0.4),
        _row("alpha", "rel_error@0.8", "projection", "k", -0.50, 0.01),
        _row("alpha", "rel_error@0.8", "projection", "v", 0.61, 0.001),
        *(_row("alpha", "rel_error@0.8", "layer", k, r, n=7) for k, r in (("0", -0.1), ("1", -0.3), ("2", -0.25))),
        _row("alpha", "loss_increase@0.8", "all", "all", 0.26, 0.0312, 70),
        # other metrics and xmin rules: candidates for "best predictor", never read as the ks alpha
        _row("stable_rank", "rel_error@0.8", "all", "all", 0.67, 1e-9, 210),
        _row("alpha", "rel_error@0.8", "all", "all", -0.58, 1e-9, 210, rule="peak"),
        _row("alpha", "rel_error@0.8", "all", "all", float("nan"), float("nan"), 2, rule="median"),
        _row("alpha", "rel_error@0.8", "projection", "q", 0.9, 1e-4, rule="peak"),
        _row("alpha_weighted", "loss_increase@0.8", "all", "all", 0.57, 1e-7, 70, rule="median"),
        _row("alpha", "loss_increase@0.8", "all", "all", 0.35, 0.003, 70, rule="peak"),
    ]
    return pd.DataFrame(rows)


def test_pick_correlation_filters_metric_cost_grouping_and_rule(corr):
    within = pick_correlation(corr, "alpha", "rel_error@0.8", by="projection")
    assert list(within.group) == ["q", "k", "v"] and set(within.rule) == {"ks"}
    assert list(pick_correlation(corr, "alpha", "rel_error@0.8", by="projection", rule="peak").rho) == [0.9]
    assert pick_correlation(corr, "lambda_max", "rel_error@0.8").empty


def test_median_rho_over_groups(corr):
    assert median_rho(corr, "alpha", "rel_error@0.8") == pytest.approx(0.55)
    assert median_rho(corr, "alpha", "rel_error@0.8", "projection") == pytest.approx(0.12)
    assert median_rho(corr, "alpha", "rel_error@0.8", "layer") == pytest.approx(-0.25)
    assert median_rho(corr, "alpha", "rel_error@0.8", rule="peak") == pytest.approx(-0.58)
    assert np.isnan(median_rho(corr, "alpha", "rel_error@0.8", rule="median"))  # the one row is NaN
    assert np.isnan(median_rho(corr, "lambda_max", "rel_error@0.8"))  # no row at all


# --------------------------------------------------------------------------- the conclusion sentences
@pytest.fixture()
def proxy_check():
    return pd.DataFrame([
        dict(sparsity=0.5, proxy="rel_error@0.5", n=70, rho_all=0.20, rho_within_layer_median=0.5),
        dict(sparsity=0.8, proxy="rel_error@0.8", n=70, rho_all=0.35, rho_within_layer_median=0.62),
        dict(sparsity=0.8, proxy="rel_error_token@0.8", n=70, rho_all=0.30, rho_within_layer_median=0.65),
    ])


@pytest.fixture()
def baseline():
    return pd.DataFrame([dict(sensitivity="rel_error@0.5", kind_only=0.80),
                         dict(sensitivity="rel_error@0.8", kind_only=0.86)])


@pytest.fixture()
def estimated():
    ratios = {0.5: dict(optimal=1.0, uniform=1.123, acttail=1.1864, hybrid=1.1),
              0.6: dict(optimal=1.0, uniform=1.5),
              0.8: dict(acttail=1.147, optimal=1.0, uniform=1.034)}
    return pd.DataFrame([{"label": label, "target": target, "rel_error / optimal": r}
                         for target, by_label in ratios.items() for label, r in by_label.items()])


def test_conclusions_sentences(corr, proxy_check, baseline, estimated):
    lines = conclusions(corr, proxy_check, baseline, estimated, (0.5, 0.8), (0.5, 0.6, 0.8), "ks")
    assert lines == [
        "Output error at s=0.5: rho(alpha ks) = -0.45 over all projections (supports ActTail's premise); "
        "within kind (across layers) median +0.10 (no useful ranking information); "
        "within layer (across kinds) median +0.50 (the OPPOSITE of ActTail's premise).",
        "Output error at s=0.8: rho(alpha ks) = +0.55 over all projections (the OPPOSITE of ActTail's premise); "
        "within kind (across layers) median +0.12 (no useful ranking information); "
        "within layer (across kinds) median -0.25 (supports ActTail's premise).",
        "Loss increase at s=0.8 (subset of 70 projections): rho(alpha ks) = +0.26, p = 0.031 "
        "(the OPPOSITE of ActTail's premise).",
        "Best single spectral predictor of rel_error@0.8: stable_rank (ks) with rho +0.67; "
        "the best alpha rule is peak with -0.58.",
        "Best single spectral predictor of loss_increase@0.8: alpha_weighted (median) with rho +0.57; "
        "the best alpha rule is peak with +0.35.",
        "Cheap proxy vs loss: rho(rel_error@0.8, loss increase) = +0.35 over 70 projections, "
        "a moderate agreement (median +0.62 within a layer, strong).",
        "The kind's mean measured cost alone ranks rel_error@0.8 with rho +0.86 (an upper bound for what the kind "
        "tells); alpha (ks) reaches +0.55 overall and +0.12 within kinds, so alpha's overall correlation comes "
        "from the differences between kinds, not from layers.",
        "Within a kind (across layers), alpha is significantly related to the cost (p < 0.05) for: "
        "k (-0.50), v (+0.61) of 3; a negative sign would support the premise.",
        "Estimated cost at 0.5, as a multiple of optimal's (best first): hybrid 1.100, uniform 1.123, acttail 1.186.",
        "Estimated cost at 0.8, as a multiple of optimal's (best first): uniform 1.034, acttail 1.147.",
    ]


def test_conclusions_when_alpha_ranks_layers_and_no_kind_is_significant(corr, proxy_check, baseline, estimated):
    within = (corr.rule == "ks") & (corr.group_by == "projection") & (corr.sensitivity == "rel_error@0.8")
    corr.loc[within, "rho"] = [-0.7, -0.4, -0.3]
    corr.loc[within, "p_value"] = 0.2
    lines = conclusions(corr, proxy_check, baseline, estimated, (0.5, 0.8), (0.5, 0.8), "ks")
    assert lines[6].endswith("reaches +0.55 overall and -0.40 within kinds, so alpha also ranks the layers "
                             "within a kind.")
    assert lines[7] == ("Within a kind (across layers), alpha is significantly related to the cost (p < 0.05) for: "
                        "no kind of 3; a negative sign would support the premise.")
    assert "median -0.40 (supports ActTail's premise)" in lines[1]


# --------------------------------------------------------------------------- comparison tables
def _measured(layers=3):
    rows = []
    for layer in range(layers):
        for i, kind in enumerate(("q", "k", "v", "up")):
            err = (i + 1) * 0.1 + layer * 0.01
            rows.append(dict(name=f"{layer}.{kind}", layer=layer, projection=kind,
                             **{"rel_error@0.8": err, "rel_error_token@0.8": 1 - err}))
    return pd.DataFrame(rows)


def test_proxy_agreement_signs_and_counts():
    measured = _measured()
    kind_index = measured.projection.map({"q": 0, "k": 1, "v": 2, "up": 3})
    # within a layer the loss follows rel_error's kind order; across layers it falls where rel_error rises
    loss = measured[["name", "layer"]].assign(**{"loss_increase@0.8": kind_index - 0.5 * measured.layer})
    loss = loss[loss.layer < 2]
    table = proxy_agreement(measured, loss, (0.8,))
    assert list(table.proxy) == ["rel_error@0.8", "rel_error_token@0.8"]
    assert list(table.n) == [8, 8]  # only the projections with a loss measurement
    # overall: each kind's two layers swap ranks -> sum d^2 = 8, rho = 1 - 6 * 8 / (8 * 63)
    assert table.rho_all.tolist() == pytest.approx([1 - 48 / 504, -(1 - 48 / 504)])
    assert table.rho_within_layer_median.tolist() == pytest.approx([1.0, -1.0])


def test_kind_only_baseline_reads_kind_and_correlation_table(corr):
    measured = _measured()
    table = kind_only_baseline(measured, corr, (0.8,), "ks")
    assert list(table.columns) == ["sensitivity", "kind_only", "alpha (ks)", "stable_rank (ks)"]
    row = table.iloc[0]
    # the cost is almost only the kind (layer adds 0.01): the kind mean ranks all but ties within a kind
    assert 0.9 < row.kind_only < 1.0
    assert row["alpha (ks)"] == pytest.approx(0.55) and row["stable_rank (ks)"] == pytest.approx(0.67)


def test_allocations_by_target_meet_every_target_exactly(allocations, alphas):
    assert list(allocations) == list(TARGETS)
    for target, allocs in allocations.items():
        assert list(allocs) == [*PRESETS, "optimal", "hybrid"]
        for label, a in allocs.items():
            assert len(a) == len(alphas) == 210
            mean = float(np.dot(a.sparsity, a.n_params) / a.n_params.sum())
            assert abs(mean - target) < 1e-9, (target, label, mean)
        assert allocs["uniform"].sparsity.to_numpy() == pytest.approx(target)
        assert allocs["optimal"].sparsity.std() > 0.05  # the cost-driven allocations are not uniform


def test_estimated_costs_ratio_to_optimal(allocations, cost):
    curves = {value: cost_curves(cost, value) for value in ("rel_error", "rel_error_token")}
    table = estimated_costs(allocations, curves)
    assert len(table) == len(TARGETS) * (len(PRESETS) + 2)
    assert {"rel_error / optimal", "rel_error_token / optimal"} <= set(table.columns)
    best = table[table.label == "optimal"]
    assert best["rel_error / optimal"].tolist() == pytest.approx([1.0] * len(TARGETS))
    # optimal minimises the pooled rel_error, so every other rule costs more there
    assert (table.loc[table.label != "optimal", "rel_error / optimal"] > 1).all()
    uniform = table[(table.label == "uniform") & (table.target == 0.8)].iloc[0]
    opt = best[best.target == 0.8].iloc[0]
    assert uniform["rel_error / optimal"] == pytest.approx(uniform.rel_error / opt.rel_error)
    assert 0 < opt.rel_error < uniform.rel_error < 1


def test_perplexity_agreement_orders_and_skips_sparse_targets():
    estimated = pd.DataFrame([dict(label=label, target=t, rel_error=e * t)
                              for t in (0.5, 0.8) for label, e in (("a", 1), ("b", 2), ("c", 3), ("d", 4))])
    ppl = pd.DataFrame({0.5: [10.0, 12.0, 15.0, 20.0], 0.8: [30.0, np.nan, np.nan, 20.0]},
                       index=["a", "b", "c", "d"])
    table = perplexity_agreement(estimated, ppl)
    assert table.to_dict("records") == [dict(target=0.5, n=4, spearman_rho=pytest.approx(1.0))]
    reversed_ppl = pd.DataFrame({0.5: [20.0, 15.0, 12.0, 10.0]}, index=["a", "b", "c", "d"])
    assert perplexity_agreement(estimated, reversed_ppl).spearman_rho.tolist() == pytest.approx([-1.0])
    assert perplexity_agreement(estimated, ppl, min_strategies=2).target.tolist() == [0.5, 0.8]
