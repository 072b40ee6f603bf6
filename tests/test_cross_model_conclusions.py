"""Notebook 10's conclusions follow the numbers: alpha's direction (acttail-rev against uniform AND against
acttail), rotation against the upper reference, and alpha-vs-sensitivity rank correlations with intervals over
all projections and within a kind. Hand-made grids and tables, so the expected sentence is known."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.report import correlations, cross_model

from synthetic_grids import window_grid

N_WINDOWS = 24


def _grid(shifts: dict, seed: int = 0, targets=(0.5, 0.7)):
    return window_grid(shifts, N_WINDOWS, seed=seed, targets=targets, noise=0.002)


def _tables(grids):
    table = cross_model.cross_model_table(grids, n_boot=300)
    rev = cross_model.cross_model_table(grids, strategies=("acttail-rev",), baseline="acttail", n_boot=300)
    ref = cross_model.cross_model_table(grids, strategies=("rotated-uniform",), baseline="teal-greedy-fine", n_boot=300)
    return table, rev, ref


def test_reversed_alpha_that_wins_is_stated_with_the_opposite_sign():
    grids = {("m1", "austen"): _grid({"acttail": 0.2, "acttail-rev": -0.1, "teal-greedy-fine": -0.2,
                                      "rotated-uniform": -0.5})}
    table, rev, ref = _tables(grids)
    assert set(rev["baseline"]) == {"acttail"} and (rev["verdict"] == "better").all()
    line = cross_model.direction_sentence(table, rev)
    assert "beats uniform beyond the noise in 0 of 2 cells and is worse in 2" in line
    assert "beats uniform in 2 of 2 cells (inside the noise in 0, worse in 0) and beats acttail in 2 of 2" in line
    assert line.endswith("with the opposite sign to ActTail's premise: the heavier-tailed (smaller-alpha) projections "
                         "tolerate more.")
    method = cross_model.method_vs_reference_sentence(table, ref)
    assert "lower perplexity than the upper reference teal-greedy-fine beyond the noise in 2 of 2 cells" in method
    assert "rotating the inputs gains more than any allocation measured here" in method


def test_when_acttail_helps_the_sentence_says_so():
    grids = {("m1", "austen"): _grid({"acttail": -0.1, "acttail-rev": 0.1, "teal-greedy-fine": -0.2,
                                      "rotated-uniform": -0.1})}
    table, rev, ref = _tables(grids)
    line = cross_model.direction_sentence(table, rev)
    assert "beats uniform beyond the noise in 2 of 2 cells" in line
    assert line.endswith("So ActTail's direction mostly helps here, as its premise predicts.")
    method = cross_model.method_vs_reference_sentence(table, ref)
    assert "beyond the noise in 0 of 2 cells" in method and "gains more" not in method


def test_without_the_reversed_rule_the_direction_is_untested():
    grids = {("m1", "austen"): _grid({"acttail": 0.2})}
    table = cross_model.cross_model_table(grids, n_boot=200)
    assert cross_model.direction_sentence(table, table.iloc[0:0]).endswith("so alpha's direction is untested.")


def test_spearman_interval_overall_and_within_groups():
    rng = np.random.default_rng(0)
    kinds = np.repeat(np.arange(7), 30)
    x = rng.normal(size=210) + kinds  # between kinds: x and y both follow the kind
    y = kinds + rng.normal(size=210)  # within a kind: independent
    whole = correlations.spearman_interval(x, y, n_boot=400)
    within = correlations.spearman_interval(x, y, groups=kinds, n_boot=400)
    assert whole["low"] > 0.3 and correlations.interval_sign(whole) == "positive"
    assert within["n_groups"] == 7 and correlations.interval_sign(within) == "indistinguishable from 0"
    assert within["low"] < within["rho"] < within["high"]
    assert correlations.interval_text(whole).startswith(f"{whole['rho']:+.2f} [")


def test_sensitivity_sentences_read_the_intervals(tmp_path):
    rng = np.random.default_rng(1)
    kinds = ["q", "k", "v", "o", "gate", "up", "down"]
    rows, cost = [], []
    for layer in range(20):
        for i, kind in enumerate(kinds):
            name = f"model.layers.{layer}.{kind}"
            rows.append(dict(layer=layer, projection=kind, name=name, alpha=2 + i + rng.normal(0, 0.3)))
            err = 0.1 * (i + 1) + abs(rng.normal(0, 0.05))
            cost += [dict(layer=layer, projection=kind, name=name, n_params=100, sparsity=s, rel_error=err * s)
                     for s in (0.4, 0.8)]
    pd.DataFrame(rows).to_csv(tmp_path / "m1_spectra_peak.csv", index=False)
    pd.DataFrame(cost).to_csv(tmp_path / "m1_cost_table.csv", index=False)
    table = cross_model.alpha_sensitivity_intervals(models=("m1",), results_dir=tmp_path, rules=("peak",), n_boot=300)
    assert list(table["scope"]) == ["all", "within kind"] and (table["n"] == 140).all()
    (line,) = cross_model.sensitivity_interval_sentences(table)
    assert line.startswith("m1, TopK output error at 80% (140 projections): rho(alpha, sensitivity) = +0.")
    assert "positive, the opposite of ActTail's premise" in line
    within = table[table.scope == "within kind"].iloc[0]
    sign = correlations.interval_sign(within.to_dict())
    assert correlations.interval_text(within.to_dict()) in line
    expected = ("within a kind it is indistinguishable from 0, so the signal lies between projection kinds"
                if sign == "indistinguishable from 0" else f"within a kind it is {sign}")
    assert expected in line


def test_collapsed_runs_read_collapsed_in_the_wide_table():
    runs, windows = _grid({"acttail": 0.2})
    runs = runs.assign(model="smollm2-135m")
    runs.loc[runs["strategy"] == "acttail", "perplexity"] = 20000.0  # >= a quarter of the 49,152 vocabulary
    table = cross_model.cross_model_table({("smollm2-135m", "austen"): (runs, windows)}, n_boot=200)
    assert table.loc[table.strategy == "acttail", "collapsed"].all()
    wide = cross_model.wide_table(table)
    assert (wide.loc["acttail"] == "collapsed").all()


@pytest.mark.parametrize("model", cross_model.MODELS)
def test_committed_sensitivity_sentences_have_intervals(model):
    table = cross_model.alpha_sensitivity_intervals(models=(model,), n_boot=200)
    if table.empty:
        pytest.skip(f"no committed sensitivity tables for {model}")
    for line in cross_model.sensitivity_interval_sentences(table):
        assert line.count("[") >= 3 and "nan" not in line.lower()
