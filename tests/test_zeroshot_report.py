"""report/zeroshot.py and plots/zeroshot.py on a small hand-made zero-shot table (no model, no lm-eval)."""
import math

import pandas as pd
import pytest

from acttail_lab.plots.zeroshot import plot_accuracy_grid, plot_accuracy_vs_perplexity, plot_accuracy_vs_sparsity
from acttail_lab.report import zeroshot as rz


def _table():
    rows = []
    runs = [("dense", 0.0, 0.70, 0.60), ("uniform", 0.5, 0.66, 0.50), ("acttail", 0.5, 0.55, 0.49),
            ("uniform", 0.7, 0.60, 0.40), ("acttail", 0.7, 0.50, 0.26)]
    for strategy, sparsity, piqa, arc in runs:
        for task, value in (("piqa", piqa), ("arc_easy", arc)):
            se = math.sqrt(value * (1 - value) / 150)
            for metric, v in (("acc", value), ("acc_norm", value - 0.01)):
                rows.append(dict(strategy=strategy, sparsity=sparsity, task=task, metric=metric, value=v, stderr=se,
                                 n=150, split="validation", data="local", model="m"))
    return pd.DataFrame(rows)


def _perplexity():
    return pd.DataFrame({"strategy": ["dense", "uniform", "acttail", "uniform", "acttail", "other"],
                         "sparsity": [0.0, 0.5, 0.5, 0.7, 0.7, 0.5],
                         "perplexity": [25.0, 41.0, 67.0, 364.0, 39958.0, 50.0]})


def test_accuracy_table_is_the_papers_layout():
    table = rz.accuracy_table(_table())
    assert list(table.columns) == ["piqa", "arc_easy", "average"]
    assert list(table.index) == [("dense", 0.0), ("uniform", 0.5), ("acttail", 0.5), ("uniform", 0.7),
                                 ("acttail", 0.7)]
    assert table.loc[("uniform", 0.5), "piqa"] == pytest.approx(66.0)
    assert table.loc[("uniform", 0.5), "average"] == pytest.approx(58.0)
    errors = rz.accuracy_table(_table(), stderr=True)
    se_p, se_a = errors.loc[("dense", 0.0), "piqa"], errors.loc[("dense", 0.0), "arc_easy"]
    assert errors.loc[("dense", 0.0), "average"] == pytest.approx(math.hypot(se_p, se_a) / 2)
    assert "±" in rz.formatted_table(_table()).iloc[0, 0]


def test_differences_flag_only_gaps_beyond_two_standard_errors():
    diffs = rz.differences(_table())
    row = diffs[(diffs.strategy == "acttail") & (diffs.sparsity == 0.7) & (diffs.task == "arc_easy")].iloc[0]
    assert row["diff"] == pytest.approx(-14.0) and row["beyond_2se"]
    small = diffs[(diffs.strategy == "acttail") & (diffs.sparsity == 0.5) & (diffs.task == "arc_easy")].iloc[0]
    assert not small["beyond_2se"]


def test_near_chance_and_rank_agreement():
    chance = rz.near_chance(_table())
    # acttail: arc_easy 26% at 0.7 (chance 25%), piqa 55% and 50% (chance 50%); uniform 60% piqa is 2.5 se away
    assert sorted(zip(chance.strategy, chance.sparsity, chance.task)) == [
        ("acttail", 0.5, "piqa"), ("acttail", 0.7, "arc_easy"), ("acttail", 0.7, "piqa")]
    agree = rz.rank_agreement(_table(), _perplexity())
    assert agree["n"] == 5 and agree["rho"] == pytest.approx(1.0)
    assert set(agree["by_level"]) == {0.5, 0.7} and agree["by_level"][0.5].n == 2  # within each level
    lines = rz.conclusions(_table(), _perplexity())
    assert any("rho = 1.00" in line and "Pooled" in line for line in lines)
    assert any(line.startswith("Within 50% sparsity") for line in lines)
    assert "lie outside their 95% interval" in lines[0] and "p = 0.000" not in " ".join(lines)


def test_verdicts_against_uniform_skip_zero_pairs():
    table = _table()
    table.loc[(table.task == "arc_easy") & (table.sparsity == 0.7), ["value", "stderr"]] = 0.0
    verdicts = rz.verdict_table(table)
    zero = verdicts[(verdicts.task == "arc_easy") & (verdicts.sparsity == 0.7)]
    assert list(zero.verdict) == ["not compared: both 0"]
    row = verdicts[(verdicts.task == "piqa") & (verdicts.sparsity == 0.7)].iloc[0]
    assert row.change == pytest.approx(-10.0) and row.low < row.change < row.high
    assert "1 more pair scores 0 on both sides (arc_easy @ 0.7)" in rz.conclusions(table)[0]


def test_plots_return_axes():
    ax = plot_accuracy_vs_sparsity(_table(), "piqa")
    assert ax.get_title() == "piqa" and len(ax.containers) == 2  # two strategies with error bars
    axes = plot_accuracy_grid(_table())
    assert len(axes) == 2 and all(ax.get_legend() is None for ax in axes)  # one legend, for the figure
    assert len(axes[0].figure.legends) == 1
    assert plot_accuracy_vs_perplexity(_table(), _perplexity()).get_xscale() == "log"
    with pytest.raises(ValueError, match="hellaswag"):
        plot_accuracy_vs_sparsity(_table(), "hellaswag")


def test_committed_by_model_reads_every_model_with_a_table_and_names_the_others(tmp_path):
    import shutil

    from acttail_lab.core.paths import RESULTS_DIR

    for suffix in ("", ".json"):
        shutil.copy(RESULTS_DIR / f"zeroshot_smollm2-135m.csv{suffix}", tmp_path / f"zeroshot_smollm2-135m.csv{suffix}")
    tables = rz.committed_by_model(tmp_path, models=("smollm2-135m", "gemma3-270m"))
    assert list(tables) == ["smollm2-135m"]
    sentence = rz.coverage_sentence(tables, models=("smollm2-135m", "gemma3-270m"))
    runs = len(rz.run_order(rz.main_metric_rows(tables["smollm2-135m"])))
    assert f"smollm2-135m ({runs} runs, 150 examples per task" in sentence
    assert sentence.endswith("Not yet measured: gemma3-270m.")
    assert rz.coverage_sentence({}, models=("gemma3-270m",)) == "Zero-shot tables: none. Not yet measured: gemma3-270m."
