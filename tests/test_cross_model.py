"""report.cross_model: the cross-model table, its verdicts and sentences, on hand-made grids."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.report import cross_model

from synthetic_grids import window_grid

N_WINDOWS = 16


def _grid(shifts: dict, seed: int = 0, targets=(0.5, 0.7)):
    """(runs, windows): uniform with NLL 3 + noise; each strategy = uniform's windows + its shift (+ noise)."""
    return window_grid(shifts, N_WINDOWS, seed=seed, targets=targets, method="topk")


@pytest.fixture()
def grids():
    return {("m1", "austen"): _grid({"acttail": 0.2, "teal-greedy": -0.1, "noisy": 0.0}),
            ("m2", "encyclopedic"): _grid({"acttail": -0.05, "teal-greedy": -0.2}, seed=1)}


def test_table_changes_intervals_and_verdicts(grids):
    table = cross_model.cross_model_table(grids, strategies=("acttail", "teal-greedy", "noisy"))
    assert list(table.columns) == list(cross_model.CROSS_COLUMNS)
    assert len(table) == 2 * 3 + 2 * 2
    m1 = table[(table.model == "m1") & (table.strategy == "acttail")]
    assert m1["change_pct"].to_numpy() == pytest.approx(np.expm1(0.2) * 100)
    assert (m1["verdict"] == "worse").all() and (m1["ci_low_pct"] > 0).all()
    assert (table[table.strategy == "teal-greedy"]["verdict"] == "better").all()
    assert (table[(table.model == "m2") & (table.strategy == "acttail")]["verdict"] == "better").all()
    assert table.loc[table.strategy == "noisy", "inside_noise"].any()
    assert table["uniform"].gt(0).all() and (table["tokens"] == 8176).all()
    assert list(dict.fromkeys(table.strategy)) == ["acttail", "teal-greedy", "noisy"]


def test_counts_and_sentences_follow_the_numbers(grids):
    table = cross_model.cross_model_table(grids, strategies=("acttail", "teal-greedy"))
    counts = cross_model.verdict_counts(table)
    assert counts.loc["acttail"].tolist() == [2, 0, 2, 4] and counts.loc["teal-greedy"].tolist() == [4, 0, 0, 4]
    lines = cross_model.cross_model_sentences(table)
    assert lines[0].startswith("2 model x text settings (m1/austen, m2/encyclopedic)")
    assert "acttail: better than uniform in 2 of 4 cells, inside the noise in 0, worse in 2" in lines[1]
    assert "worse at m1/austen 0.5 (+22%), m1/austen 0.7 (+22%)" in lines[1]
    assert lines[2].startswith("teal-greedy: better than uniform in 4 of 4 cells")
    assert lines[3].startswith("Alpha-guided budgets beat uniform beyond the noise in 2 of 4 cells")
    wide = cross_model.wide_table(table)
    assert wide.at["acttail", ("m1", "austen", 0.5)].startswith("+22 [")


def test_calibration_check_reads_committed_files(tmp_path):
    runs, windows = _grid({"teal-greedy": -0.1, "teal-greedy-fine": 0.3})
    runs.to_csv(tmp_path / "upper_reference_m1.csv", index=False)
    windows.to_csv(tmp_path / "upper_reference_m1_windows.csv", index=False)
    check = cross_model.calibration_check(models=("m1", "absent"), results_dir=tmp_path)
    assert set(check["text"]) == {"austen (calibration)"} and set(check["model"]) == {"m1"}
    sentence = cross_model.upper_reference_sentence(check)
    assert "better than uniform in 0 of 2" in sentence and "NOT an upper reference" in sentence
    good = cross_model.upper_reference_sentence(check, "teal-greedy")
    assert good.endswith("worse in none: at least as good as uniform everywhere it was measured.")


def test_plots_draw_each_ratio_with_its_interval(grids):
    from acttail_lab.plots.cross_model import plot_cross_model, plot_relative_perplexity
    from acttail_lab.plots.style import strategy_style

    table = cross_model.cross_model_table(grids, strategies=("acttail", "teal-greedy"))
    ax = plot_relative_perplexity(table, "m1", "austen")
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: data line first
    acttail = table[(table.model == "m1") & (table.strategy == "acttail")]
    assert np.allclose(lines["acttail"].get_ydata(), 1 + acttail["change_pct"] / 100)
    assert lines["acttail"].get_color() == strategy_style("acttail")["color"]
    assert ax.get_yscale() == "log" and ax.get_title() == "m1, austen"
    axes = plot_cross_model(table)
    assert axes.shape == (2, 2) and not axes[0, 1].axison  # m1 has no encyclopedic grid
    with pytest.raises(ValueError, match="No rows for m3/austen"):
        plot_relative_perplexity(table, "m3", "austen")


def test_sensitivity_table_and_sentences(tmp_path):
    rows = []
    for model, sign in (("m1", 1.0), ("m2", -1.0)):
        for metric, rule, rho in (("alpha", "peak", 0.4), ("alpha", "ks", 0.2), ("stable_rank", "ks", 0.7)):
            rows.append(dict(rule=rule, metric=metric, sensitivity="rel_error@0.8", group_by="all", group="all",
                             rho=sign * rho, p_value=0.01, n=210))
            for group, value in (("q", 0.1), ("k", 0.3), ("v", -0.5)):
                rows.append(dict(rule=rule, metric=metric, sensitivity="rel_error@0.8", group_by="projection",
                                 group=group, rho=sign * value, p_value=0.5, n=30))
        pd.DataFrame(rows[-12:]).to_csv(tmp_path / f"{model}_correlations.csv", index=False)
    table = cross_model.sensitivity_table(models=("m1", "m2", "m3"), results_dir=tmp_path)
    assert len(table) == 6 and set(table["model"]) == {"m1", "m2"}
    row = table[(table.model == "m1") & (table.metric == "alpha") & (table.rule == "peak")].iloc[0]
    assert row.rho_all == pytest.approx(0.4) and row.within_kind == pytest.approx(0.1) and np.isnan(row.within_layer)
    lines = cross_model.sensitivity_sentences(table)
    assert lines[0] == ("m1, rel_error@0.8 (210 projections): rho(alpha peak) = +0.40 overall (is the opposite of "
                        "ActTail's premise), median +0.10 within a kind across layers; the strongest single metric "
                        "is stable_rank (ks) with rho +0.70.")
    assert "(supports ActTail's premise)" in lines[1] and "rho -0.70" in lines[1]


def test_grid_summary_and_headlines(grids):
    from acttail_lab.plots.cross_model import plot_headlines

    for key, (runs, _) in grids.items():
        dense = pd.DataFrame([dict(strategy="dense", sparsity=0.0, perplexity=20.0, tokens=8176)])
        grids[key] = (pd.concat([dense, runs], ignore_index=True).assign(model="smollm2-135m"), grids[key][1])
    summary = cross_model.grid_summary(grids)
    assert summary[["model", "text", "windows", "targets", "strategies", "dense_perplexity"]].values.tolist()[0] == [
        "m1", "austen", N_WINDOWS, "0.5, 0.7", 4, 20.0]
    axes = plot_headlines(grids, ["uniform", "acttail", "absent"])
    assert axes.shape == (2, 2) and not axes[0, 1].axison and not axes[1, 0].axison
    drawn = {line.get_label() for line in axes[0, 0].lines}
    assert {"uniform", "acttail"} <= drawn and "absent" not in drawn


def test_no_grid_is_a_clear_error(tmp_path):
    from acttail_lab.core.errors import ActTailError

    with pytest.raises(ActTailError, match="No grid with uniform.*reproduce_upper_reference"):
        cross_model.calibration_check(models=("absent",), results_dir=tmp_path)


def test_reversed_direction_sentence_and_model_order():
    grids = {("m2", "austen"): _grid({"acttail": 0.2, "acttail-rev": -0.1}),
             ("m1", "austen"): _grid({"acttail": -0.1, "acttail-rev": 0.1}, seed=2)}
    table = cross_model.cross_model_table(grids)
    assert list(dict.fromkeys(table["model"])) == ["m2", "m1"]  # the grids' order, not alphabetical
    assert list(cross_model.wide_table(table).columns.get_level_values("model")[:1]) == ["m2"]
    line = cross_model.cross_model_sentences(table)[-1]
    assert line.endswith("gives lower perplexity than acttail in 2 of 4 cells where both ran.")
