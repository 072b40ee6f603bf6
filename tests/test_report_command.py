"""acttail-lab report: its checks before any model loads, its plan and estimate, its summary page."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from acttail_lab.cli import main
from acttail_lab.cli.report_plan import (SIZES, ReportPlan, check_corpus_length, check_model, check_out, estimate,
                                         plan_text)
from acttail_lab.cli.report_run import notebook_parameters
from acttail_lab.cli.report_summary import perplexity_section, sensitivity_section, write_summary, zeroshot_section
from acttail_lab.core.errors import ActTailError, CorruptModelFileError
from acttail_lab.report import verdicts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results"


def plan_for(out, size="quick", forward=134_000_000):
    return ReportPlan("smollm2-135m", "austen", SIZES[size], Path(out), 134_515_008, forward,
                      None if forward is None else 106_000_000, None if forward is None else 1e12, 5e10, layers=30)


def test_an_unknown_model_names_the_built_ins_and_the_fix():
    with pytest.raises(ActTailError, match="Unknown model 'no-such-model'.*smollm2-135m.*Fix"):
        check_model("no-such-model")
    assert check_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # a Hub id passes


def test_a_truncated_model_file_is_refused_before_it_loads(tmp_path):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x01")
    with pytest.raises(CorruptModelFileError, match="re-fetch"):
        check_model(str(bad))


def test_a_corpus_too_short_for_the_size_names_the_fix(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("A few words of text. " * 100)
    with pytest.raises(ActTailError, match="too short for --size standard.*Fix: pass a longer text.*quick"):
        check_corpus_length(str(short), SIZES["standard"])


def test_the_output_folder_guards_another_models_report(tmp_path):
    out = tmp_path / "rep"
    check_out(out, "smollm2-135m", SIZES["quick"])  # new: fine
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"model": "gemma3-270m", "size": "quick"}))
    with pytest.raises(ActTailError, match="holds the quick report of 'gemma3-270m'.*Fix"):
        check_out(out, "smollm2-135m", SIZES["quick"])
    check_out(out, "gemma3-270m", SIZES["quick"])  # the same report resumes
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ActTailError, match="not empty and holds no report"):
        check_out(other, "smollm2-135m", SIZES["quick"])


def test_bad_input_exits_2_before_anything_runs(tmp_path, capsys):
    assert main(["report", "--model", "nope", "--size", "quick", "--out", str(tmp_path / "r")]) == 2
    assert "Unknown model" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_the_estimate_scales_with_the_work_and_says_when_it_cannot():
    quick, standard = estimate(plan_for("/tmp/x", "quick")), estimate(plan_for("/tmp/x", "standard"))
    seconds = {r["part"]: r["seconds"] for r in standard}
    assert seconds["perplexity"] > {r["part"]: r["seconds"] for r in quick}["perplexity"] > 0
    assert seconds["greedy path"] > 0 and {r["part"]: r["seconds"] for r in quick}["greedy path"] == 0
    unknown = plan_for("/tmp/x", "quick", forward=None)
    unknown.notes.append("the parameter count is unknown until the model loads: no time estimate")
    text = plan_text(unknown)
    assert "perplexity" in text and "?" in text and "no time estimate" in text


def test_notebook_02_gets_the_reports_strategies_and_results_folder(tmp_path):
    params = notebook_parameters(plan_for(tmp_path), "02", tmp_path / "results")
    assert params["RESULTS_DIR"] == str(tmp_path / "results") and params["FAST"] is True
    assert params["MAIN_STRATEGIES"] == list(SIZES["quick"].strategies)
    assert params["MAP_STRATEGIES"] == ["acttail", "acttail-block"] and params["MAP_TARGET"] == 0.7
    assert "MAIN_STRATEGIES" not in notebook_parameters(plan_for(tmp_path), "08", tmp_path)


@pytest.fixture
def results(tmp_path):
    """A report's results folder holding the committed SmolLM2 tables (real numbers)."""
    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("perplexity_smollm2-135m.csv", "perplexity_smollm2-135m_windows.csv", "zeroshot_smollm2-135m.csv",
                 "smollm2-135m_correlations.csv"):
        shutil.copy(RESULTS / name, folder / name)
        shutil.copy(RESULTS / (name + ".json"), folder / (name + ".json"))
    return folder


def test_the_summary_gives_every_verdict_computed_from_the_tables(results, tmp_path):
    plan = plan_for(tmp_path)
    body, table = perplexity_section(plan, results)
    assert verdicts.count_sentence(table) in body.replace("&#x27;", "'")
    assert body.count("<tr class=") == len(table) > 0  # one row per strategy x target, none left out
    assert all(f"[{lo:+.1f}%, {hi:+.1f}%]" in body for lo, hi in zip(table["low"], table["high"]))
    zs = zeroshot_section(plan, results)
    assert "Zero-shot accuracy against uniform" in zs and "piqa" in zs
    rho = pd.read_csv(results / "smollm2-135m_correlations.csv")
    first = rho[(rho.group_by == "all") & (rho.metric == "alpha") & (rho.rule == "peak")].iloc[0]
    assert f"{first.rho:+.2f}" in sensitivity_section(plan, results)
    manifest = {"seconds": {"perplexity": 12.0}, "settings": {"tokens": 1024}, "versions": {"torch": "x"},
                "git": {"git_sha": "abc"}}
    index = write_summary(plan, results, [tmp_path / "pages" / "02_perplexity_by_allocation.html"], manifest)
    page = index.read_text()
    assert "figures/headline.png" in page and (tmp_path / "figures" / "headline.png").exists()
    assert "pages/02_perplexity_by_allocation.html" in page and "Seconds per part" in page


def test_a_missing_zeroshot_or_sensitivity_table_is_said_not_measured(tmp_path):
    plan = plan_for(tmp_path)
    assert "Not measured" in zeroshot_section(plan, tmp_path) and "Not measured" in sensitivity_section(plan, tmp_path)


def test_without_the_repositorys_notebooks_the_report_says_to_run_from_a_clone(tmp_path):
    from acttail_lab.cli.report_plan import check_notebooks

    with pytest.raises(ActTailError, match="Fix: run it from a clone"):
        check_notebooks(SIZES["quick"], tmp_path / "nowhere")
    assert [p.name[:2] for p in check_notebooks(SIZES["standard"])] == list(SIZES["standard"].notebooks)


def test_a_relative_output_folder_is_made_absolute_for_the_notebooks(tmp_path, monkeypatch):
    from acttail_lab.cli.report_plan import plan_report

    monkeypatch.chdir(tmp_path)
    plan = plan_report("smollm2-135m", "austen", "quick", "build/rep")  # papermill runs in notebooks/: a relative
    assert plan.out.is_absolute() and plan.out == tmp_path / "build" / "rep"  # RESULTS_DIR would not resolve there


def test_sparsity_maps_read_each_strategys_own_alpha_rule():
    """Notebook 02 in a report draws acttail, acttail-ks and acttail-block from a grid whose first rule is peak:
    acttail-ks reads the ks spectra instead of failing on the peak table (the standard Gemma report did)."""
    from acttail_lab.report import headline

    peak, ks, block = headline.committed_allocations("gemma3-270m", ["acttail", "acttail-ks", "acttail-block"], 0.7,
                                                     "peak")
    assert not peak["sparsity"].equals(ks["sparsity"])  # two alpha tables, two budgets
    for allocation in (peak, ks, block):
        mean = (allocation["sparsity"] * allocation["n_params"]).sum() / allocation["n_params"].sum()
        assert abs(mean - 0.7) < 1e-6


def test_report_sensitivity_settings_are_the_cost_tables_defaults_and_its_sidecars_name_them():
    """The report's cost table is the committed tables' (COST_SETTINGS = cost_table's defaults), and its sidecars
    carry what notebook 07 prints (corpus, split, levels, windows): the standard Gemma report failed without."""
    import inspect

    from acttail_lab.cli import report_run
    from acttail_lab.measure.sensitivity import cost_table
    from acttail_lab.report.correlations import COST_SETTINGS

    defaults = {k: p.default for k, p in inspect.signature(cost_table).parameters.items() if k in COST_SETTINGS}
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in COST_SETTINGS.items()} == defaults
    source = inspect.getsource(report_run.measure)
    assert source.count("corpus=plan.corpus") >= 4 and "**COST_SETTINGS)" in source and "**LOSS_SETTINGS)" in source


def test_notebook_07_lowest_sentence_compares_the_allocations_the_grid_has_and_names_the_rest():
    """A report's grid holds fewer strategies than notebook 07 allocates: the standard Gemma report failed."""
    from acttail_lab.report.sensitivity_measured import measured_section

    found = measured_section("gemma3-270m", None, among=["acttail", "acttail-block", "hybrid", "teal-kind"])
    assert found.lowest_among.endswith("(hybrid, teal-kind: not in this grid)")
    assert "acttail" in found.lowest_among and found.lowest_all
    assert measured_section("gemma3-270m", None, among=["hybrid"]).lowest_among is None
