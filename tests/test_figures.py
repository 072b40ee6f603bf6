"""The committed figures (docs/figures/, `make figures`) are current: rebuilt from the committed CSVs they
plot the same arrays as their committed JSON; and the headline sentences state the committed numbers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acttail_lab.core.paths import DATA_DIR
from acttail_lab.core.errors import ActTailError
from acttail_lab.plots import figures
from acttail_lab.report import headline
from acttail_lab.report.results import load_perplexity

ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = ROOT / "docs" / "figures"
RESULTS = DATA_DIR / "results"


def test_committed_figures_plot_what_the_committed_csvs_give():
    assert figures.stale_figures(FIGURES_DIR, RESULTS) == [], "run: make figures"


def test_every_figure_is_committed_small_and_in_the_gallery():
    gallery = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    for name, (_, caption, notebook) in figures.FIGURES.items():
        png = FIGURES_DIR / f"{name}.png"
        assert png.exists() and (FIGURES_DIR / f"{name}.json").exists()
        assert png.stat().st_size < 200_000, f"{png} is over 200 KB"
        assert f"figures/{name}.png" in gallery and notebook in gallery
        assert (ROOT / "notebooks" / f"{notebook}.ipynb").exists()
    assert "docs/figures/headline.png" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_a_changed_csv_makes_its_figure_stale(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "results")
    path = tmp_path / "results" / "perplexity_smollm2-135m.csv"
    runs = pd.read_csv(path)
    runs.loc[runs["strategy"] == "teal-greedy", "perplexity"] *= 1.01
    runs.to_csv(path, index=False)
    stale = figures.stale_figures(FIGURES_DIR, tmp_path / "results")
    assert "headline" in stale and "change_vs_uniform" in stale
    assert "alpha_heatmaps" not in stale and "kind_budgets" not in stale


def test_figure_data_holds_the_plotted_values():
    runs = headline.plain_labels(load_perplexity(results_dir=RESULTS))
    data = figures.figure_data(figures.build("headline", RESULTS))
    (panel,) = data["panels"]
    lines = {line["label"]: line for line in panel["lines"]}
    greedy = runs[runs["strategy"] == "teal-greedy"].sort_values("sparsity")
    assert np.allclose(lines["teal-greedy"]["y"], greedy["perplexity"])
    # every collapsed run of a drawn strategy is marked once, at the top of the axis
    drawn = runs[runs["strategy"].isin(figures.HEADLINE_STRATEGIES)]
    n_collapsed = int(headline.collapsed(drawn).sum())
    (points,) = panel["points"]
    assert n_collapsed > 0 and len(points["xy"]) == 2 * n_collapsed
    first = drawn[headline.collapsed(drawn)].groupby("strategy")["sparsity"].min()
    if len(first) == 1:  # the title names the one strategy that collapses, from where
        assert f"{first.index[0]} collapses from {first.iloc[0]:g}" in panel["title"].replace("\n", " ")
    win = headline.winners(drawn)
    assert win["best"].iloc[0] in panel["title"].replace("\n", " ")
    assert figures.same_data(json.loads(json.dumps(data)), data)
    assert not figures.same_data({"a": [1.0]}, {"a": [1.0 + 1e-6]})


def test_headline_sentences_state_the_committed_numbers_beside_the_claims():
    runs = load_perplexity(results_dir=RESULTS)
    assert headline.collapse_threshold(runs) == pytest.approx(0.25 * 49152)
    win = headline.winners(runs)
    assert list(win["sparsity"]) == [0.5, 0.6, 0.7, 0.8]
    body = runs[(runs["strategy"] != "dense") & (runs["method"] == "topk")]  # TopK allocations compete
    for row in win.itertuples():
        assert row.perplexity == pytest.approx(body.loc[body["sparsity"] == row.sparsity, "perplexity"].min())
    claims = headline.claims_table(runs, "SmolLM2-135M")
    paper = claims[claims["source"] == "ActTail abstract"].set_index("model")["change_pct"]
    assert paper.to_dict() == {"LLaMA-2-7B": -21.8, "LLaMA-2-13B": -40.1, "Mistral-7B": -9.4}
    at = runs[runs["sparsity"] == 0.8].set_index("strategy")["perplexity"]
    measured = claims[claims["strategy"] == "acttail"].query("source == 'measured'")["change_pct"].item()
    assert measured == pytest.approx(100 * (at["acttail"] / at["uniform"] - 1))
    text = " ".join(headline.headline_sentences(runs, "SmolLM2-135M"))
    gone = runs[headline.collapsed(runs)].groupby("strategy")["sparsity"].min()
    assert "-21.8%" in text and all(f"{label} from {s:g}" in text for label, s in gone.items())
    assert "rotated-uniform" not in " ".join(headline.winners(runs)["best"])  # TopK allocations compete
    with pytest.raises(ActTailError, match="vocab_size"):
        headline.collapse_threshold(runs.assign(model="unknown-model"))


def test_change_matrix_is_strategy_by_target():
    runs = load_perplexity(results_dir=RESULTS)
    change = headline.change_matrix(runs, ["acttail", "teal-greedy"])
    assert list(change.index) == ["acttail", "teal-greedy"] and list(change.columns) == [0.5, 0.6, 0.7, 0.8]
    at = runs[runs["sparsity"] == 0.5].set_index("strategy")["perplexity"]
    assert change.loc["teal-greedy", 0.5] == pytest.approx(100 * (at["teal-greedy"] / at["uniform"] - 1))
    with pytest.raises(ActTailError, match="no-such"):
        headline.change_matrix(runs, ["no-such"])
