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
    opt = "surrogate-optimal"
    ratios = {0.5: {opt: 1.0, "uniform": 1.123, "acttail": 1.1864, "hybrid": 1.1},
              0.6: {opt: 1.0, "uniform": 1.5},
              0.8: {"acttail": 1.147, opt: 1.0, "uniform": 1.034}}
    return pd.DataFrame([{"label": label, "target": target, "rel_error / surrogate-optimal": r}
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
        "Spectral predictors of rel_error@0.8 over 210 projections (Spearman rho, 95% Fisher-z interval; the 3 "
        "largest of 3): stable_rank +0.67 [+0.59, +0.74], alpha (peak) -0.58 [-0.67, -0.48], alpha (ks) +0.55 "
        "[+0.44, +0.64]; the intervals of alpha (peak), alpha (ks) overlap that of stable_rank, so the data do not "
        "single out one best predictor.",
        "Spectral predictors of loss_increase@0.8 over 70 projections (Spearman rho, 95% Fisher-z interval; the 3 "
        "largest of 3): alpha_weighted (median) +0.57 [+0.38, +0.71], alpha (peak) +0.35 [+0.12, +0.55], alpha (ks) "
        "+0.26 [+0.02, +0.47]; the intervals of alpha (peak), alpha (ks) overlap that of alpha_weighted (median), so "
        "the data do not single out one best predictor.",
        "Cheap proxy vs loss: rho(rel_error@0.8, loss increase) = +0.35 over 70 projections, "
        "a moderate agreement (median +0.62 within a layer, strong).",
        "The kind's mean measured cost alone ranks rel_error@0.8 with rho +0.86 (an upper bound for what the kind "
        "tells); alpha (ks) reaches +0.55 overall and +0.12 within kinds, so alpha's overall correlation comes "
        "from the differences between kinds, not from layers.",
        "Within a kind (across layers), alpha is significantly related to the cost (p < 0.05) for: "
        "k (-0.50), v (+0.61) of 3; a negative sign would support the premise.",
        "Estimated cost (the surrogate, not a measurement) at 0.5, as a multiple of surrogate-optimal's, lowest "
        "first: hybrid 1.100, uniform 1.123, acttail 1.186; measured perplexity is not available here, so this is "
        "not a ranking of the allocations.",
        "Estimated cost (the surrogate, not a measurement) at 0.8, as a multiple of surrogate-optimal's, lowest "
        "first: uniform 1.034, acttail 1.147; measured perplexity is not available here, so this is not a ranking "
        "of the allocations.",
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
    assert list(table.columns) == ["sensitivity", "kind_only", "alpha (ks)", "stable_rank"]  # rule-free: no rule
    row = table.iloc[0]
    # the cost is almost only the kind (layer adds 0.01): the kind mean ranks all but ties within a kind
    assert 0.9 < row.kind_only < 1.0
    assert row["alpha (ks)"] == pytest.approx(0.55) and row["stable_rank"] == pytest.approx(0.67)


def test_allocations_by_target_meet_every_target_exactly(allocations, alphas):
    assert list(allocations) == list(TARGETS)
    for target, allocs in allocations.items():
        assert list(allocs) == [*PRESETS, "surrogate-optimal", "hybrid"]
        for label, a in allocs.items():
            assert len(a) == len(alphas) == 210
            mean = float(np.dot(a.sparsity, a.n_params) / a.n_params.sum())
            assert abs(mean - target) < 1e-9, (target, label, mean)
        assert allocs["uniform"].sparsity.to_numpy() == pytest.approx(target)
        assert allocs["surrogate-optimal"].sparsity.std() > 0.05  # the cost-driven allocations are not uniform


def test_estimated_costs_ratio_to_optimal(allocations, cost):
    curves = {value: cost_curves(cost, value) for value in ("rel_error", "rel_error_token")}
    table = estimated_costs(allocations, curves)
    assert len(table) == len(TARGETS) * (len(PRESETS) + 2)
    assert {"rel_error / surrogate-optimal", "rel_error_token / surrogate-optimal"} <= set(table.columns)
    best = table[table.label == "surrogate-optimal"]
    assert best["rel_error / surrogate-optimal"].tolist() == pytest.approx([1.0] * len(TARGETS))
    # optimal minimises the pooled rel_error, so every other rule costs more there
    assert (table.loc[table.label != "surrogate-optimal", "rel_error / surrogate-optimal"] > 1).all()
    uniform = table[(table.label == "uniform") & (table.target == 0.8)].iloc[0]
    opt = best[best.target == 0.8].iloc[0]
    assert uniform["rel_error / surrogate-optimal"] == pytest.approx(uniform.rel_error / opt.rel_error)
    assert 0 < opt.rel_error < uniform.rel_error < 1


def test_perplexity_agreement_orders_and_skips_sparse_targets():
    estimated = pd.DataFrame([dict(label=label, target=t, rel_error=e * t)
                              for t in (0.5, 0.8) for label, e in (("a", 1), ("b", 2), ("c", 3), ("d", 4))])
    ppl = pd.DataFrame({0.5: [10.0, 12.0, 15.0, 20.0], 0.8: [30.0, np.nan, np.nan, 20.0]},
                       index=["a", "b", "c", "d"])
    table = perplexity_agreement(estimated, ppl)
    assert table[["target", "n", "spearman_rho"]].to_dict("records") == [dict(target=0.5, n=4,
                                                                              spearman_rho=pytest.approx(1.0))]
    reversed_ppl = pd.DataFrame({0.5: [20.0, 15.0, 12.0, 10.0]}, index=["a", "b", "c", "d"])
    assert perplexity_agreement(estimated, reversed_ppl).spearman_rho.tolist() == pytest.approx([-1.0])
    assert perplexity_agreement(estimated, ppl, min_strategies=2).target.tolist() == [0.5, 0.8]


# --------------------------------------------------------------------------- notebook 07's tables (sensitivity_tables)
from acttail_lab.report import sensitivity_tables as tables  # noqa: E402

KINDS = {"q": 0.2, "up": 0.6}  # rel_error = slope * s (layer 1 doubles it); rel_error_token = half of that
LEVELS = (0.5, 0.8)


def _cost(levels=LEVELS, n_tokens=64):
    rows = []
    for layer in (0, 1):
        for kind, slope in KINDS.items():
            for s in levels:
                err = slope * (1 + layer) * s
                rows.append(dict(layer=layer, projection=kind, name=f"layers.{layer}.{kind}",
                                 n_params=100 if kind == "q" else 300, sparsity=s, rel_error=err,
                                 rel_error_token=err / 2, n_tokens=n_tokens))
    return pd.DataFrame(rows)


def _loss():
    rows = [dict(layer=layer, projection=kind, name=f"layers.{layer}.{kind}", n_params=1, sparsity=s,
                 loss_increase=value, n_tokens=32, dense_loss=3.0)
            for (layer, kind), values in {(0, "q"): (-0.01, 0.02), (1, "up"): (0.03, 0.3)}.items()
            for s, value in zip(LEVELS, values)]
    return pd.DataFrame(rows)


def test_provenance_lines_read_sidecar_settings():
    cost, loss = _cost(), _loss()
    cost.attrs["provenance"] = dict(settings=dict(split="calibration", corpus="austen"), timestamp="T0",
                                    git_sha="0123456789abcdef")
    loss.attrs["provenance"] = dict(settings=dict(subset="two", sparsities=[0.5, 0.8], split="calibration",
                                                  window=16), timestamp="T1", git_sha="x")
    first, second = tables.provenance_lines(cost, loss)
    assert first == "cost table: 4 projections x 2 levels, 64 calibration tokens (austen), made T0 at commit 01234567"
    assert second.startswith("loss increase: 2 projections (two) x levels [0.5, 0.8], 32 calibration tokens")
    assert second.endswith("windows of 16; dense calibration NLL 3.0000 nats")


def test_live_agreement_rank_ratio_and_difference():
    committed = _cost()
    live = committed.assign(rel_error=committed.rel_error * 2, n_tokens=16)
    table = tables.live_agreement(live[live.sparsity == 0.8], committed)
    assert table.sparsity.tolist() == [0.8] and table.tokens_live.tolist() == [16]
    row = table.iloc[0]
    assert row.spearman_rho == pytest.approx(1.0)
    assert row.median_ratio == pytest.approx(2.0)
    assert row.max_abs_diff == pytest.approx(0.6 * 2 * 0.8)  # live doubles it: the difference is the largest committed error


def test_measured_summaries_merge_pooled_and_token_errors():
    measured, loss_summary = tables.measured_summaries(_cost(), _loss(), LEVELS)
    assert len(measured) == 4 and len(loss_summary) == 2
    row = measured.set_index("name").loc["layers.1.up"]
    assert row["rel_error@0.8"] == pytest.approx(0.6 * 2 * 0.8)
    assert row["rel_error_token@0.5"] == pytest.approx(0.6 * 2 * 0.5 / 2)
    assert loss_summary.set_index("name").loc["layers.0.q", "loss_increase@0.5"] == pytest.approx(-0.01)


def test_kind_means_average_over_layers_and_loss_subset():
    measured, loss_summary = tables.measured_summaries(_cost(), _loss(), LEVELS)
    alphas = pd.DataFrame(dict(name=measured.name, alpha=[2.0, 4.0, 3.0, 6.0], stable_rank=[1.0, 1.0, 2.0, 2.0]))
    means = tables.kind_means(measured, loss_summary, alphas, LEVELS)
    assert means.index.tolist() == ["q", "up"]
    assert means.loc["q", "alpha"] == pytest.approx(2.5) and means.loc["up", "alpha"] == pytest.approx(5.0)
    assert means.loc["up", "rel_error@0.8"] == pytest.approx(0.6 * 0.8 * 1.5)  # mean of layers 0 and 1
    assert means.loc["q", "loss_increase@0.8"] == pytest.approx(0.02)  # only layer 0's q was measured
    assert means.loc["up", "loss_increase@0.5"] == pytest.approx(0.03)


def test_loss_noise_share_negative():
    noise = tables.loss_noise(_loss())
    assert noise.loc[0.5, "share_negative"] == pytest.approx(0.5)
    assert noise.loc[0.8, "share_negative"] == 0.0
    assert noise.loc[0.8, "median"] == pytest.approx(0.16)


def test_significance_counts_and_per_kind_rho(corr):
    counts = tables.significance_counts(corr, ["rel_error@0.5"], alpha_rule="ks")
    assert "all" not in counts.index.get_level_values("group_by")
    # q 0.05 / k 0.10 / v 0.30 all with p = 0.5: none significant
    assert counts.loc[("alpha", "ks", "projection"), "rel_error@0.5"] == "0 neg / 0 pos of 3"
    per_kind = tables.per_kind_rho(corr, "rel_error@0.5", metrics=("alpha",))
    assert per_kind.columns.tolist() == ["q", "k", "v"]  # PROJECTIONS order
    assert per_kind.loc[("alpha", "ks"), "v"] == pytest.approx(0.30)


def test_significance_counts_counts_signs():
    rows = [_row("stable_rank", "c", "layer", str(i), rho, p) for i, (rho, p) in
            enumerate([(-0.5, 0.01), (-0.4, 0.02), (0.6, 0.001), (0.1, 0.6)])]
    rows.append(_row("stable_rank", "c", "layer", "9", -0.9, 0.001, rule="peak"))  # other rule: not shown
    counts = tables.significance_counts(pd.DataFrame(rows), ["c"], alpha_rule="ks")
    assert counts.to_dict() == {"c": {("stable_rank", "ks", "layer"): "2 neg / 1 pos of 4"}}


def test_kind_sparsity_table_is_parameter_weighted():
    cost = _cost()
    ident = cost[cost.sparsity == 0.5][["layer", "projection", "name", "n_params"]]
    a = ident.assign(sparsity=[0.2, 0.4, 0.6, 0.8])
    u = ident.assign(sparsity=0.5)
    table = tables.kind_sparsity_table({"uniform": u, "a": a})
    assert table.index.tolist() == ["uniform", "a"] and table.columns.tolist() == ["q", "up"]
    assert table.loc["a", "q"] == pytest.approx(0.4) and table.loc["a", "up"] == pytest.approx(0.6)
    assert table.loc["uniform"].tolist() == pytest.approx([0.5, 0.5])


def test_cost_shift_sums_to_the_change_of_the_estimated_cost():
    cost = _cost()
    curve = cost_curves(cost)
    ident = cost[cost.sparsity == 0.5][["layer", "projection", "name", "n_params"]]
    uniform, moved = ident.assign(sparsity=0.5), ident.assign(sparsity=[0.8, 0.5, 0.5, 0.5])
    delta = tables.cost_shift(moved, uniform, curve)
    # only layers.0.q moves: (0.2 * 0.8 - 0.2 * 0.5) times its share 100 / 800 of the parameters
    assert delta.set_index("name").delta.to_dict() == pytest.approx(
        {"layers.0.q": 0.06 * 100 / 800, "layers.0.up": 0.0, "layers.1.q": 0.0, "layers.1.up": 0.0})
    from acttail_lab.allocation.cost_model import estimate_cost
    assert delta.delta.sum() == pytest.approx(estimate_cost(moved, cost) - estimate_cost(uniform, cost))
    lines = tables.cost_shift_lines({"acttail": moved, "uniform": uniform}, curve, 0.5)
    assert lines[0] == "acttail vs uniform at 0.5, change of the estimated cost: total +0.0075"
    assert lines[1] == "  by kind:  q +0.0075, up +0.0000"
    assert lines[2] == "  layers where it helps most: " and lines[3] == "  layers where it hurts most: 0 (+0.0075)"


def _ppl_csv(path, with_uniform=True):
    rows = [dict(strategy="dense", sparsity=0.0, perplexity=10.0, protocol="all", tokens=100, split="evaluation",
                 window=64)]
    for strategy, values in {"uniform": (20.0, 40.0), "acttail": (30.0, 20.0)}.items():
        if strategy == "uniform" and not with_uniform:
            continue
        rows += [dict(strategy=strategy, sparsity=s, perplexity=v, protocol=protocol, tokens=100, split="evaluation",
                      window=64) for s, v in zip((0.5, 0.8), values) for protocol in ("all", "last_half")]
    pd.DataFrame(rows).assign(perplexity=lambda d: d.perplexity.where(d.protocol == "all", 1e9)).to_csv(path)


def test_perplexity_by_strategy_change_and_lines(tmp_path):
    _ppl_csv(tmp_path / "perplexity_m.csv")
    table, note = tables.perplexity_by_strategy("m", tmp_path)
    assert note == "protocol 'all', 100 scored tokens, split 'evaluation', window 64; dense perplexity 10.000"
    assert table.index.tolist() == ["uniform", "acttail"] and table.columns.tolist() == [0.5, 0.8]
    change = tables.change_vs_uniform(table)
    assert change.loc["acttail"].tolist() == pytest.approx([50.0, -50.0])
    assert change.loc["uniform"].tolist() == pytest.approx([0.0, 0.0])
    assert tables.perplexity_lines(change, table) == [
        "measured perplexity, acttail vs uniform: 0.5: +50.0%, 0.8: -50.0%"]  # no single "lowest" named
    measured = pd.DataFrame(dict(label=["acttail", "acttail"], sparsity=[0.5, 0.8], low=[40.0, -60.0],
                                 high=[60.0, -40.0], note=["", "acttail collapsed"]))
    assert tables.perplexity_lines(change, table, measured) == [
        "measured perplexity, acttail vs uniform: 0.5: +50.0% [+40.0, +60.0], 0.8: collapsed"]


def test_perplexity_missing_file_or_uniform(tmp_path):
    table, note = tables.perplexity_by_strategy("m", tmp_path)
    assert table is None and "is missing" in note and "reproduce_perplexity.py" in note
    assert tables.change_vs_uniform(None) is None
    assert tables.perplexity_lines(None, None) == ["measured perplexity: not available (see section 7)"]
    _ppl_csv(tmp_path / "perplexity_m.csv", with_uniform=False)
    table, _ = tables.perplexity_by_strategy("m", tmp_path)
    assert tables.change_vs_uniform(table) is None


def test_load_results_reads_committed_tables():
    loaded = tables.load_results("smollm2-135m", ("ks",))
    assert set(loaded.spectra) == {"ks"} and "provenance" in loaded.cost.attrs
    assert loaded.cost.name.nunique() == len(loaded.spectra["ks"])
    assert len(tables.provenance_lines(loaded.cost, loaded.loss)) == 2


def test_live_cost_table_measures_on_tokens_after_the_committed_ones(monkeypatch):
    """The live re-run of notebook 07 must not re-read the committed tokens (a correlation of 1.0 would prove nothing)."""
    import types

    from acttail_lab.core.errors import CorpusError
    from acttail_lab.measure import sensitivity
    from acttail_lab.report import sensitivity_tables as st

    class WordTokenizer:  # one token per word, no BOS: ids are the word positions in the text
        bos_token_id = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text.split())))}

    seen = {}
    monkeypatch.setattr(sensitivity, "cost_table", lambda lm, windows, **kw: seen.setdefault("windows", windows))
    lm = types.SimpleNamespace(tokenizer=WordTokenizer())
    first = st.live_cost_table(lm, window=256, n_tokens=512, levels=(0.5,), skip_tokens=0)
    seen.clear()
    fresh = st.live_cost_table(lm, window=256, n_tokens=512, levels=(0.5,), skip_tokens=2048)
    assert first.shape == fresh.shape == (2, 256)
    assert int(first.min()) == 0 and int(fresh.min()) == 2048  # starts right after the committed 2048 tokens
    assert not set(first.flatten().tolist()) & set(fresh.flatten().tolist())
    assert st.committed_tokens(pd.DataFrame({"n_tokens": [2048, 2048]})) == 2048
    with pytest.raises(CorpusError, match="Fix"):
        st.live_cost_table(lm, window=256, n_tokens=512, skip_tokens=10 ** 9)


# --------------------------------------------------------------------------- the estimate against the measurement
def _intervals():
    """A verdict-engine table (report.verdicts.perplexity_verdicts) of four runs against uniform."""
    rows = [("hybrid", 0.5, 24.0, 21.8, 26.3, "worse", ""), ("acttail", 0.5, 8.5, 6.7, 10.2, "worse", ""),
            ("acttail", 0.8, 2.7, -9.2, 15.7, "inside the noise", ""),
            ("hybrid", 0.8, -78.5, -81.9, -74.1, "better", ""),
            ("teal-kind", 0.8, 5596.9, 5179.0, 6048.5, "worse", "teal-kind collapsed")]
    return pd.DataFrame([dict(metric="perplexity", label=l_, strategy=l_, sparsity=t_, baseline="uniform", change=c,
                              low=lo, high=hi, unit="%", verdict=v, note=n,
                              method="95% paired bootstrap over 32 windows")
                         for l_, t_, c, lo, hi, v, n in rows])


def _estimated_costs():
    costs = {0.5: {"uniform": 0.100, "acttail": 0.103, "hybrid": 0.096},
             0.8: {"uniform": 0.400, "acttail": 0.416, "hybrid": 0.406}}
    return pd.DataFrame([dict(label=label, target=target, rel_error=c)
                         for target, by_label in costs.items() for label, c in by_label.items()])


def test_estimate_vs_measurement_and_the_disagreement_line():
    from acttail_lab.report.sensitivity import disagreement_line, estimate_vs_measurement

    table = estimate_vs_measurement(_estimated_costs(), _intervals()).set_index(["label", "target"])
    assert table.loc[("hybrid", 0.5), "estimated_pct"] == pytest.approx(-4.0)
    assert table.loc[("hybrid", 0.5), "agreement"] == "disagree"  # estimated cheaper, measured worse
    assert table.loc[("acttail", 0.5), "agreement"] == "agree"
    assert table.loc[("acttail", 0.8), "agreement"] == "not confirmed"  # inside the noise
    assert table.loc[("hybrid", 0.8), "agreement"] == "disagree"  # estimated +1.5%, measured -78.5%
    line = disagreement_line(estimate_vs_measurement(_estimated_costs(), _intervals()))
    assert line.startswith("The estimate and the measurement agree on 1 of 4 comparisons with uniform, disagree on 2, "
                           "and the measurement cannot confirm 1 (inside the noise): ")
    assert "hybrid at 0.5 is estimated -4.0% in cost against uniform but measures +24.0% [+21.8, +26.3]" in line
    assert line.endswith("the measurement decides: the surrogate ignores interactions between projections.")


def test_measured_lines_group_by_verdict_and_name_no_best():
    from acttail_lab.report.sensitivity import measured_lines

    lines = measured_lines(_intervals(), ["acttail", "hybrid", "teal-kind"])
    assert lines[0] == ("Measured perplexity against uniform at 0.5 (95% paired bootstrap over 32 windows): "
                        "worse: acttail +8.5% [+6.7, +10.2], hybrid +24.0% [+21.8, +26.3].")
    assert lines[1] == ("Measured perplexity against uniform at 0.8 (95% paired bootstrap over 32 windows): "
                        "better: hybrid -78.5% [-81.9, -74.1]; inside the noise: acttail +2.7% [-9.2, +15.7]; "
                        "worse: teal-kind collapsed.")  # a collapsed run gets no percentage
    assert not any("best" in line for line in lines)


def test_conclusions_from_measurements_when_intervals_are_given(corr, proxy_check, baseline):
    lines = conclusions(corr, proxy_check, baseline, _estimated_costs(), (0.5, 0.8), (0.5, 0.8), "ks",
                        measured=_intervals(), lowest="Lowest perplexity per target ...")
    assert lines[-4].startswith("Measured perplexity against uniform at 0.5")
    assert lines[-2] == "Lowest perplexity per target ..."
    assert lines[-1].startswith("The estimate and the measurement agree on 1 of 4")
    assert not any(line.startswith("Estimated cost") for line in lines)


def test_predictor_line_names_one_best_only_when_its_interval_clears_the_others(corr):
    from acttail_lab.report.sensitivity import predictor_line, predictor_table

    table = predictor_table(corr, "rel_error@0.8")
    assert list(table.metric) == ["stable_rank", "alpha (peak)", "alpha (ks)"]  # by |rho|; NaN dropped
    assert table.low.iloc[0] < 0.67 < table.high.iloc[0]
    lone = corr.copy()
    lone.loc[(lone.metric == "stable_rank") & (lone.sensitivity == "rel_error@0.8"), "rho"] = 0.95
    assert predictor_line(lone, "rel_error@0.8").endswith("only stable_rank's interval clears every other's.")


def test_perplexity_agreement_has_a_fisher_interval():
    estimated = pd.DataFrame([dict(label=l_, target=0.5, rel_error=c) for l_, c in zip("abcde", (1, 2, 3, 4, 5))])
    ppl = pd.DataFrame({0.5: [10.0, 12.0, 11.0, 14.0, 15.0]}, index=list("abcde"))
    row = perplexity_agreement(estimated, ppl).iloc[0]
    assert row.spearman_rho == pytest.approx(0.9) and row.rho_low < row.spearman_rho < row.rho_high


def test_alpha_title_states_rho_interval_and_verdict(corr):
    from acttail_lab.report.sensitivity import alpha_title

    title = alpha_title(corr, "rel_error@0.8", "ks")
    assert title.startswith("rho(alpha ks, rel_error@0.8) = +0.55 [+0.44, +0.64] over 210 projections "
                            "(the OPPOSITE of ActTail's premise);")
    assert title.endswith("median +0.12 (no useful ranking information)")
