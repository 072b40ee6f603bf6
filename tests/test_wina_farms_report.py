"""Notebook 09's tables and figures (report.wina_runs, report.alpha_estimators, plots.wina_farms) on small
hand-made tables: pairing with the TopK counterpart, relative changes, per-kind alpha, gaps, conclusions."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from acttail_lab.plots import wina_farms as wfplots
from acttail_lab.report import alpha_estimators as est
from acttail_lab.report import wina_runs


@pytest.fixture()
def runs():
    return pd.DataFrame({"strategy": ["dense", "wina", "wina", "acttail-farms[xmin=ks]", "rotated-wina"],
                         "sparsity": [0.0, 0.5, 0.4, 0.5, 0.5], "perplexity": [25.0, 40.0, 31.0, 60.0, 30.0],
                         "realised_sparsity": [0.0, 0.5, 0.4, 0.5, 0.5]})


@pytest.fixture()
def references():
    return pd.DataFrame({"strategy": ["uniform", "uniform", "acttail-ks", "rotated-uniform"],
                         "sparsity": [0.5, 0.4, 0.5, 0.5], "perplexity": [41.0, 30.0, 67.0, 33.0],
                         "source": ["perplexity", "related", "perplexity", "related"]})


def test_compare_runs_pairs_each_run_with_its_counterpart_and_uniform(runs, references):
    cmp = wina_runs.compare_runs(runs, references).set_index(["strategy", "sparsity"])
    assert "dense" not in cmp.index.get_level_values(0)
    assert cmp.loc[("wina", 0.5), "counterpart"] == "uniform"
    assert cmp.loc[("wina", 0.5), "change_vs_counterpart"] == pytest.approx(40 / 41 - 1)
    assert cmp.loc[("wina", 0.4), "change_vs_uniform"] == pytest.approx(31 / 30 - 1)
    assert cmp.loc[("acttail-farms[xmin=ks]", 0.5), "counterpart_ppl"] == 67.0
    assert cmp.loc[("acttail-farms[xmin=ks]", 0.5), "change_vs_uniform"] == pytest.approx(60 / 41 - 1)
    assert cmp.loc[("rotated-wina", 0.5), "change_vs_counterpart"] == pytest.approx(30 / 33 - 1)
    matrix = wina_runs.change_matrix(cmp.reset_index())
    assert matrix.loc["wina", 0.5] == pytest.approx(round((40 / 41 - 1) * 100, 1))
    lines = wina_runs.runs_conclusions(cmp.reset_index())
    assert any(line.startswith("wina: better than uniform (TopK) at 1 of 2") for line in lines)


def test_missing_counterpart_is_nan_not_interpolated(runs, references):
    cmp = wina_runs.compare_runs(runs, references[references["sparsity"] != 0.4])
    row = cmp[(cmp["strategy"] == "wina") & (cmp["sparsity"] == 0.4)].iloc[0]
    assert np.isnan(row["counterpart_ppl"]) and np.isnan(row["change_vs_uniform"])


@pytest.fixture()
def kinds():
    tables = {}
    for estimator, shift in (("plain", 0.0), ("farms", 1.0)):
        rows = [{"layer": layer, "projection": kind, "alpha": base + shift * (kind in ("gate", "up")) + 0.1 * layer}
                for layer in range(3) for kind, base in (("q", 3.0), ("o", 4.0), ("gate", 5.0), ("up", 6.0))]
        tables[estimator] = pd.DataFrame(rows)
    return est.kind_alpha_table(tables, "m")


def test_kind_alpha_table_and_gaps(kinds):
    assert list(kinds.columns) == list(est.KIND_COLUMNS)
    plain = kinds[(kinds["estimator"] == "plain")].set_index("kind")
    assert plain.loc["q", "alpha_mean"] == pytest.approx(3.1) and plain.loc["up", "kind_rank"] == 4
    gaps = est.aspect_gaps(kinds).set_index("estimator")["gap"]
    assert gaps["plain"] == pytest.approx(2.0) and gaps["farms"] == pytest.approx(3.0)
    assert est.kind_rank_agreement(kinds, "m") == pytest.approx(1.0)


def test_synthetic_table_has_both_estimators_and_aspect_ratios():
    table = est.synthetic_aspect_table(tail_indices=(3.0,), short=96, long=256, seeds=2, rows=32, windows=3)
    assert set(table["estimator"]) == {"plain", "farms"} and set(table["kind"]) == {"1:1", "1:2.67"}
    assert (table["n"] == 2).all() and table["alpha_mean"].gt(1).all()


def test_conclusions_and_correlation_summary(kinds):
    corr = pd.DataFrame([{"estimator": e, "sensitivity": "rel_error@0.5", "group_by": g, "group": grp, "rho": r,
                          "p_value": 0.01, "n": 30}
                         for e, r0 in (("plain", 0.5), ("farms", 0.3))
                         for g, grp, r in (("all", "all", r0), ("projection", "q", r0 / 2), ("projection", "o", 0.0))])
    summary = est.correlation_summary(corr).set_index("estimator")
    assert summary.loc["plain", "rho_all"] == 0.5 and summary.loc["farms", "rho_within_kind_median"] == 0.075
    lines = est.estimator_conclusions(kinds, corr, "m")
    assert any("+0.50 [" in line and "plain vs +0.30 [" in line and "not told apart" in line for line in lines)
    assert {"rho_all_low", "rho_all_high", "n_all"} <= set(est.correlation_summary(corr).columns)
    assert any(line.startswith("m: mean alpha of gate/up/down minus q/o +2.00 (plain) vs +3.00 (FARMS)")
               for line in lines)


def test_figures_return_axes(runs, references, kinds):
    cmp = wina_runs.compare_runs(runs, references)
    for ax in (wfplots.plot_runs_vs_topk(cmp), wfplots.plot_change_vs_counterpart(cmp),
               wfplots.plot_alpha_shift(kinds, "m", stat="alpha_mean")):
        assert isinstance(ax, Axes) and ax.has_data()
    summary = pd.DataFrame({"estimator": ["plain", "farms"], "sensitivity": ["rel_error@0.5"] * 2,
                            "rho_all": [0.5, 0.3], "rho_within_kind_median": [0.1, 0.2]})
    assert isinstance(wfplots.plot_estimator_correlations(summary), Axes)
    with pytest.raises(ValueError, match="both estimators"):
        wfplots.plot_alpha_shift(kinds[kinds["estimator"] == "plain"], "m")
    with pytest.raises(ValueError, match="not in the comparison"):
        wfplots.plot_runs_vs_topk(cmp, strategies=["nope"])


def test_farms_gap_effect_is_stated_either_way():
    assert est.gap_effect(2.29, 6.24).startswith("FARMS widens the gap (2.29 -> 6.24), the opposite of its purpose")
    assert est.gap_effect(1.76, 0.42).startswith("FARMS narrows the gap") and "as intended" in est.gap_effect(-1, 0.5)


def test_committed_runs_get_paired_intervals_against_their_counterparts():
    from acttail_lab.report.verdicts import COLLAPSED, NO_INTERVAL, VERDICTS

    table = wina_runs.comparison_verdicts()
    assert set(table["verdict"]) <= set(VERDICTS) and set(table["label"]) == set(wina_runs.COUNTERPART)
    rot = table[(table["label"] == "rotated-wina") & (table["sparsity"] == 0.5)].iloc[0]
    assert rot["baseline"] == "rotated-uniform" and rot["low"] < rot["change"] < rot["high"]
    assert "paired bootstrap over 32 windows" in rot["method"]
    # two collapsed runs are never compared as a percentage (acttail-farms vs acttail-ks at 70%)
    both = table[(table["label"] == "acttail-farms[xmin=ks]") & (table["sparsity"] == 0.7)].iloc[0]
    assert both["verdict"] == COLLAPSED
    assert (table.loc[table["sparsity"] == 0.4, "verdict"].isin([NO_INTERVAL, COLLAPSED])).all()
    lines = wina_runs.verdict_conclusions(table)
    assert any(line.startswith("rotated-wina against rotated-uniform: 0.4:") for line in lines)
    assert not any("-3.8%" in line and "acttail-farms" in line for line in lines)
    ax = wfplots.plot_change_vs_counterpart(table)
    assert ax.get_xscale() == "symlog" and "inside the noise" in ax.get_title(loc="right")
    assert sum(t.get_text().endswith("collapsed") for t in ax.texts) == int((table["note"] != "").sum())
