"""The verdict engine: each comparison states its interval and verdict, collapsed runs are never compared as
numbers, "lowest" competes over every row (or names the subset), rank correlations carry an interval."""
import math

import numpy as np
import pandas as pd
import pytest

from acttail_lab.core.errors import ActTailError
from acttail_lab.report import bootstrap, results
from acttail_lab.report import verdicts as V

RNG = np.random.default_rng(0)
BASE = 3.0 + RNG.normal(0, 0.5, 16)
SHIFT = {"uniform": 0.0, "a": -0.10, "b": 0.10, "noise": 0.0, "rotated-uniform": -0.3}
COLLAPSE_NLL = math.log(20000.0)  # > 49152 / 4 for smollm2-135m


def grid(shift=SHIFT, sparsities=(0.5, 0.7), collapse=()):
    """(runs, windows) of a toy grid on smollm2-135m: per-window nll = BASE + shift (+ small noise for 'noise')."""
    win, rows = [], [dict(strategy="dense", sparsity=0.0, perplexity=10.0, model="smollm2-135m", method=None,
                          xmin_rule=None, options="{}")]
    for s in sparsities:
        for name, d in shift.items():
            nll = BASE + d + (RNG.normal(0, 0.05, len(BASE)) if name == "noise" else 0.0)
            if name == "noise":
                nll += BASE.mean() - nll.mean()
            if (name, s) in collapse:
                nll = np.full(len(BASE), COLLAPSE_NLL)
            win += [dict(strategy=name, sparsity=s, window_index=i, nll=float(v)) for i, v in enumerate(nll)]
            rows.append(dict(strategy=name, sparsity=s, perplexity=float(np.exp(nll.mean())), model="smollm2-135m",
                             method="rotated" if name.startswith("rotated") else "topk", xmin_rule=None,
                             options="{}"))
    return pd.DataFrame(rows), pd.DataFrame(win)


def test_a_comparison_states_values_change_interval_method_and_verdict():
    runs, win = grid()
    v = V.compare(runs, "a", sparsity=0.5, windows=win)
    assert v.verdict == V.BETTER and v.low <= v.change <= v.high < 0
    assert v.change == pytest.approx(100 * (math.exp(-0.1) - 1))
    text = v.sentence()
    assert "At 50%, a against uniform" in text and "paired bootstrap over 16 windows" in text and "better" in text
    assert V.compare(runs, "b", sparsity=0.5, windows=win).verdict == V.WORSE
    assert V.compare(runs, "noise", sparsity=0.5, windows=win).verdict == V.NOISE
    assert len(V.compare(runs, "a", windows=win)) == 2  # every target
    no = V.compare(runs, "a", sparsity=0.5)  # no windows: no interval, said so
    assert no.verdict == V.NO_INTERVAL and "no per-window losses" in no.sentence()
    with pytest.raises(ActTailError, match="label"):
        V.compare(runs, "zzz", windows=win)


def test_any_run_can_be_the_baseline():
    runs, win = grid()
    v = V.compare(runs, "b", baseline="a", sparsity=0.7, windows=win)
    assert v.baseline == "a" and v.change == pytest.approx(100 * (math.exp(0.2) - 1)) and v.verdict == V.WORSE


def test_collapsed_runs_are_never_compared_as_numbers():
    runs, win = grid(collapse={("a", 0.7), ("uniform", 0.7), ("b", 0.5)})
    table = V.perplexity_verdicts(runs, win)
    both = table[(table.label == "a") & (table.sparsity == 0.7)].iloc[0]
    assert both.verdict == V.COLLAPSED and both.note == "both collapsed"
    gone = table[(table.label == "b") & (table.sparsity == 0.5)].iloc[0]
    assert gone.verdict == V.WORSE and gone.note == "b collapsed"
    survived = table[(table.label == "noise") & (table.sparsity == 0.7)].iloc[0]
    assert survived.verdict == V.BETTER and survived.note == "uniform collapsed"
    for v in V.verdict_objects(table[table.note != ""]):
        assert "%" not in v.short() and "%" not in v.sentence().split(":")[-1]
    text = V.count_sentence(table)
    assert "not compared (both collapsed)" in text and "(1 of them collapsed)" in text
    cells = V.interval_text(table)
    assert cells.loc["a", 0.7] == "both collapsed" and cells.loc["b", 0.5] == "collapsed"


def test_counts_separate_the_noise_from_the_wins():
    runs, win = grid()
    table = V.perplexity_verdicts(runs, win)
    counts = V.count_verdicts(table)
    assert counts["total"] == 8 and counts[V.NOISE] == 2 and counts[V.BETTER] == 4 and counts[V.WORSE] == 2
    assert V.count_sentence(table).startswith("4 of 8 runs are better than uniform (95% paired bootstrap")
    assert "2 inside the noise" in V.count_sentence(table)


def test_lowest_competes_over_every_row_or_names_the_subset():
    runs, win = grid()
    every = V.lowest(runs, win)
    assert set(every["best"]) == {"rotated-uniform"} and (every["runner_up"] == "a").all()
    assert every["among"].iloc[0] == "of all 5 runs"
    assert V.lowest_title(every) == "lowest perplexity of all 5 runs: rotated-uniform (0.5, 0.7)"
    assert "vs next, a" in V.lowest_sentence(every) and "better" in V.lowest_sentence(every)
    topk = V.lowest(runs, win, among=lambda t: t["method"] == "topk", among_name="TopK allocations")
    assert set(topk["best"]) == {"a"}
    assert V.lowest_title(topk).startswith("lowest perplexity among TopK allocations (4 runs): a")
    with pytest.raises(ActTailError, match="among_name"):
        V.lowest(runs, win, among=["a", "uniform"])
    tie = V.lowest(runs, win, among=["uniform", "noise"], among_name="uniform and its copy")
    assert (tie["verdict"] == V.NOISE).all() and "~" in V.lowest_title(tie)
    assert "?" in V.lowest_title(V.lowest(runs, None))  # no windows: no interval, marked


def test_controls_get_their_verdicts_against_the_guided_run():
    runs = results.load_perplexity("smollm2-135m")
    win = bootstrap.load_windows("perplexity", "smollm2-135m")
    controls = V.control_verdicts(runs, win)
    assert {("acttail", "shuffled"), ("acttail", "acttail-rev"), ("acttail-ks", "shuffled[xmin=ks]"),
            ("acttail-ks", "acttail-rev[xmin=ks]")} == set(zip(controls["baseline"], controls["label"]))
    lines = V.control_sentences(controls, V.perplexity_verdicts(runs, win))
    assert len(lines) == 4 and all("[" in line for line in lines)
    rev = controls[(controls.label == "acttail-rev") & (controls.sparsity == 0.7)].iloc[0]
    assert rev.verdict in V.VERDICTS
    if rev.verdict == V.BETTER:
        assert any("alpha points the wrong way" in line for line in lines)


def test_committed_grid_counts_agree_with_the_bootstrap_module():
    runs = results.load_perplexity("smollm2-135m")
    win = bootstrap.load_windows("perplexity", "smollm2-135m")
    table = V.perplexity_verdicts(runs, win, use_floor=False)
    plain = bootstrap.paired_bootstrap(win)
    assert len(table) == len(plain) and (table["verdict"] == V.NOISE).sum() == plain["inside_noise"].sum()
    floored = V.perplexity_verdicts(runs, win)  # the numeric floor across CPUs only adds runs to the noise
    noise = floored["verdict"] == V.NOISE
    assert noise.sum() >= (table["verdict"] == V.NOISE).sum() and (table.loc[noise, "verdict"] != V.COLLAPSED).all()
    assert floored.loc[noise & (table["verdict"] != V.NOISE), "method"].str.contains("numeric floor").all()
    v = V.compare(runs, "acttail", sparsity=0.8, windows=win)
    assert v.interval() and v.interval() in v.sentence()


def test_accuracy_verdicts_use_standard_errors_and_skip_zero_pairs():
    rows = pd.DataFrame([
        dict(strategy=s, sparsity=0.5, task=t, metric="acc", value=v, stderr=se, options="{}", method="topk")
        for s, t, v, se in [("uniform", "piqa", 0.60, 0.02), ("a", "piqa", 0.70, 0.02), ("b", "piqa", 0.61, 0.02),
                            ("uniform", "lambada_openai", 0.0, 0.0), ("a", "lambada_openai", 0.0, 0.0)]])
    table = V.accuracy_verdicts(rows)
    got = {(r.label, r.task): r.verdict for r in table.itertuples()}
    assert got == {("a", "piqa"): V.BETTER, ("b", "piqa"): V.NOISE, ("a", "lambada_openai"): V.BOTH_ZERO}
    a = table[(table.label == "a") & (table.task == "piqa")].iloc[0]
    assert a.change == pytest.approx(10.0) and a.unit == " points"
    assert a.high - a.low == pytest.approx(2 * 1.96 * 100 * math.hypot(0.02, 0.02))


def test_rank_correlation_has_an_interval_and_never_prints_p_zero():
    x = np.arange(30.0)
    c = V.rank_correlation(x, x + RNG.normal(0, 3, 30))
    assert c.low < c.rho < c.high <= 1 and c.n == 30
    assert "p < 0.001" in c.text() and "p = 0.000" not in c.text()
    assert V.format_p(0.0123) == "p = 0.012" and V.format_p(float("nan")) == "p n/a"
    b = V.rank_correlation(x, x + RNG.normal(0, 3, 30), method="bootstrap", n_boot=200)
    assert b.low < b.rho < b.high and b.method == "bootstrap"
    assert math.isnan(V.rank_correlation([1, 2], [2, 1]).rho)


def test_few_pairs_get_an_exact_p_not_the_t_approximation():
    # 3 runs in the same order: 2 of the 3! orderings reach |rho| = 1, so p = 1/3 (scipy's t approximation says 0)
    c = V.rank_correlation([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    assert c.rho == pytest.approx(1.0) and c.p == pytest.approx(1 / 3)
    assert "p = 0.333" in c.text() and "p < 0.001" not in c.text() and math.isnan(c.low)
    # 5 pairs, rho = 0.9: |rho| >= 0.9 in 10 of the 120 orderings (rho = +-1: 2, +-0.9: 8)
    five = V.rank_correlation([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    assert five.rho == pytest.approx(0.9) and five.p == pytest.approx(10 / 120)
    # above EXACT_MAX_N the t approximation stays (the 30-pair case above)
    from scipy.stats import spearmanr

    x = np.arange(12.0)
    y = x + RNG.normal(0, 4, 12)
    assert V.rank_correlation(x, y).p == pytest.approx(spearmanr(x, y)[1])
    # rho = 1 over 5 runs: exact p = 2 / 120, and no interval (Fisher z is infinite there, not [1.00, 1.00])
    perfect = V.rank_correlation([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert perfect.p == pytest.approx(2 / 120) and math.isnan(perfect.low) and "[" not in perfect.text()


def test_rank_sentences_never_promise_an_interval_they_do_not_give():
    from acttail_lab.report import zeroshot as rz

    three = V.rank_correlation([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    five = V.rank_correlation([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    text = rz.rank_sentences({"by_level": {0.5: three, 0.7: five}, "pooled": five})
    assert "p = 0.333), no interval (Fisher z needs 4 runs and |rho| < 1)." in text[0]
    assert text[1].endswith("95% Fisher-z interval.") and "[" in text[1]
