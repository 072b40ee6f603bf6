"""The paired bootstrap over evaluation windows: point estimate, pairing, noise verdict, bad input."""
import math

import numpy as np
import pandas as pd
import pytest

from acttail_lab.core.errors import ActTailError
from acttail_lab.report import bootstrap


def windows_of(runs: dict, sparsity=0.5) -> pd.DataFrame:
    """A window table from {strategy: per-window nll array} at one sparsity."""
    rows = [{"strategy": name, "sparsity": sparsity, "method": "topk", "window_index": i, "nll": float(v)}
            for name, values in runs.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows)


RNG = np.random.default_rng(0)
BASE = 3.0 + RNG.normal(0, 0.5, 32)  # windows differ a lot in difficulty


def test_point_estimate_is_the_perplexity_ratio():
    worse = BASE + 0.1 + RNG.normal(0, 0.01, 32)
    out = bootstrap.paired_bootstrap(windows_of({"uniform": BASE, "acttail": worse}))
    assert out["strategy"].tolist() == ["acttail"]
    ratio = math.exp(worse.mean()) / math.exp(BASE.mean())
    assert out["change_pct"].iloc[0] == pytest.approx(100 * (ratio - 1), rel=1e-9)
    assert out["ci_low_pct"].iloc[0] < out["change_pct"].iloc[0] < out["ci_high_pct"].iloc[0]
    assert not out["inside_noise"].iloc[0]


def test_pairing_cancels_the_difficulty_of_the_windows():
    shifted = BASE + 0.02  # the same windows, 2% worse everywhere: paired interval is tight
    out = bootstrap.paired_bootstrap(windows_of({"uniform": BASE, "acttail": shifted}))
    width = out["ci_high_pct"].iloc[0] - out["ci_low_pct"].iloc[0]
    assert width < 1e-9 and out["ci_low_pct"].iloc[0] > 0
    unpaired_sd = 100 * BASE.std() / math.sqrt(32)  # what ignoring the pairing would give (~9%)
    assert unpaired_sd > 5


def test_pure_noise_is_inside_the_interval_and_the_sentence_says_so():
    noisy = BASE + RNG.normal(0, 0.05, 32)
    noisy += BASE.mean() - noisy.mean()  # same mean loss
    out = bootstrap.paired_bootstrap(windows_of({"uniform": BASE, "shuffled": noisy}))
    assert out["inside_noise"].iloc[0] and abs(out["change_pct"].iloc[0]) < 1e-9
    assert "1 of 1 comparisons with uniform" in bootstrap.noise_sentence(out)
    assert "shuffled at 0.5" in bootstrap.noise_sentence(out)


def test_seeded_and_matched_per_sparsity():
    table = pd.concat([windows_of({"uniform": BASE, "a": BASE + 0.1}, 0.5),
                       windows_of({"uniform": BASE + 1, "a": BASE + 0.9}, 0.7)])
    one = bootstrap.paired_bootstrap(table, seed=3)
    assert one.equals(bootstrap.paired_bootstrap(table, seed=3))
    assert one["sparsity"].tolist() == [0.5, 0.7]
    assert one["change_pct"].iloc[0] > 0 > one["change_pct"].iloc[1]  # each against uniform at its own target


def test_with_intervals_joins_the_relative_table():
    relative = pd.DataFrame({"strategy": ["a"], "sparsity": [0.5], "change_pct": [10.0]})
    out = bootstrap.with_intervals(relative, windows_of({"uniform": BASE, "a": BASE + 0.1}))
    assert {"ci_low_pct", "ci_high_pct", "inside_noise"} <= set(out.columns) and len(out) == 1


@pytest.mark.parametrize("table,match", [
    (windows_of({"uniform": BASE}).drop(columns="nll"), "lacks the columns"),
    (pd.concat([windows_of({"uniform": BASE, "a": BASE})] * 2), "appears twice"),
    (windows_of({"uniform": BASE, "a": BASE[:10]}), "different windows"),
    (windows_of({"a": BASE}), "No run has a 'uniform' run"),
])
def test_bad_tables_name_the_fix(table, match):
    with pytest.raises(ActTailError, match=match):
        bootstrap.paired_bootstrap(table)


def test_committed_window_tables_load_and_pair(tmp_path):
    from acttail_lab.core.results_io import write_results

    write_results(windows_of({"uniform": BASE, "a": BASE + 0.1}), tmp_path / "perplexity_m_windows.csv", seed=0)
    out = bootstrap.committed_intervals("perplexity", model="m", results_dir=tmp_path)
    assert out["strategy"].tolist() == ["a"] and out["change_pct"].iloc[0] > 0
    with pytest.raises(FileNotFoundError, match="regenerate"):
        bootstrap.load_windows("perplexity", model="other", results_dir=tmp_path)


def test_interval_table_marks_the_noise():
    table = pd.concat([windows_of({"uniform": BASE, "b": BASE + 0.1, "a": BASE}, 0.5),
                       windows_of({"uniform": BASE, "b": BASE + 0.2, "a": BASE}, 0.7)])
    out = bootstrap.interval_table(bootstrap.paired_bootstrap(table))
    assert out.index.tolist() == ["b", "a"] and out.columns.tolist() == [0.5, 0.7]
    assert out.loc["a", 0.5].endswith(" ~") and not out.loc["b", 0.7].endswith(" ~")
    assert out.loc["b", 0.5].startswith("+10.5 [")  # exp(0.1) - 1
