"""The papers' figures redrawn from our data (plots/paper_figures.py): registered, titled with the paper
figure they correspond to, and plotting the numbers of the committed CSVs and the published reference data
(checked here from the files themselves, not through the builders' code paths)."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acttail_lab.core.models import PROJECTIONS
from acttail_lab.core.paths import DATA_DIR
from acttail_lab.core.reference import TEAL_LLAMA2_7B_50, published_alphas_path, shape_table
from acttail_lab.plots import figures, paper_figures
from acttail_lab.plots.paper_figures import PAPER_FIGURES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = DATA_DIR / "results"
PAPERS = {"AlphaPruning": "AlphaPruning", "ActTail": "ActTail", "TEAL": "TEAL"}


@pytest.fixture(scope="module")
def drawn():
    """name -> figure_data of each paper figure built from the committed tables."""
    return {name: figures.figure_data(figures.build(name, RESULTS)) for name in PAPER_FIGURES}


def _titles(data: dict) -> str:
    return " ".join([data["suptitle"]] + [panel["title"] for panel in data["panels"]])


def _published(key: str) -> np.ndarray:
    """Published alphas as (layers, 7) straight from the .npy file."""
    return np.load(published_alphas_path(key)).reshape(-1, len(PROJECTIONS))


def test_every_paper_figure_is_registered_and_names_its_paper_figure(drawn):
    gallery = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    assert len(PAPER_FIGURES) >= 3
    for name, paper in PAPER_FIGURES.items():
        builder, caption, notebook = figures.FIGURES[name]
        assert builder is paper.builder and caption == paper.caption and notebook == paper.notebook
        title = _titles(drawn[name])
        assert any(word in paper.paper and word in title for word in PAPERS), f"{name}: title must name the paper"
        if paper.figure is None:
            assert "figure number not checked" in title and "Fig." not in title
        else:
            assert f"Fig. {paper.figure}" in title and f"Fig. {paper.figure}" in caption
            assert f"figures/{name}.png" in gallery and f"Fig. {paper.figure}**" in gallery
        assert paper.differs and "differs:" in caption


def test_alphapruning_pipeline_draws_the_published_layer_means_and_their_linear_ratios(drawn):
    metric_panel, ratio_panel = drawn["paper_alphapruning_pipeline"]["panels"]
    alphas = _published("llama2-7b")
    (metric,) = metric_panel["bars"]
    assert np.allclose(metric["heights"], alphas.mean(axis=1))
    (ratios,) = ratio_panel["bars"]
    sparsity = np.array(ratios["heights"])
    # every LLaMA-2-7B layer holds the same number of weights: the plain mean is the model-wide target
    assert len(sparsity) == 32 and np.mean(sparsity) == pytest.approx(paper_figures.ALPHAPRUNING_TARGET, abs=1e-9)
    # linear assignment, higher alpha -> sparser, no layer clipped: the same order as the metric
    assert sparsity.max() < 1 and pd.Series(sparsity).corr(pd.Series(alphas.mean(axis=1)), "spearman") == 1
    assert ratio_panel["lines"][0]["y"] == [paper_figures.ALPHAPRUNING_TARGET] * 2


def test_acttail_kind_budgets_bars_are_published_alphas_and_budgets_meeting_the_target(drawn):
    alpha_panel, budget_panel = drawn["paper_acttail_kind_budgets"]["panels"]
    models = ["LLaMA-2-7B", "LLaMA-2-13B", "LLaMA-2-70B"]
    assert [bars["label"] for bars in alpha_panel["bars"]] == models
    for bars, key in zip(alpha_panel["bars"], ("llama2-7b", "llama2-13b", "llama2-70b")):
        assert np.allclose(bars["heights"], _published(key).mean(axis=0))
    for bars, key in zip(budget_panel["bars"], ("llama2-7b", "llama2-13b", "llama2-70b")):
        params = shape_table(key).groupby("projection")["n_params"].sum().reindex(PROJECTIONS).to_numpy()
        assert np.dot(bars["heights"], params) / params.sum() == pytest.approx(paper_figures.ACTTAIL_TARGET)
    ranges = [line for line in budget_panel["lines"] if line["label"] != f"uniform {paper_figures.ACTTAIL_TARGET:.0%}"]
    lows, highs = np.array([line["y"] for line in ranges[0::2]]), np.array([line["y"] for line in ranges[1::2]])
    heights = np.array([bars["heights"] for bars in budget_panel["bars"]])
    assert (lows <= heights + 1e-12).all() and (heights <= highs + 1e-12).all() and (highs <= 1).all()


def test_teal_allocation_sets_our_greedy_path_beside_teals_shipped_means(drawn):
    layer_panel, kind_panel = drawn["paper_teal_greedy_allocation"]["panels"]
    teal, ours = kind_panel["bars"]
    assert teal["label"].startswith("TEAL") and teal["heights"] == [TEAL_LLAMA2_7B_50[k] for k in PROJECTIONS]
    lines = {line["label"]: line for line in layer_panel["lines"] if line["label"] in PROJECTIONS}
    assert list(lines) == list(PROJECTIONS)
    spectra = pd.read_csv(RESULTS / "smollm2-135m_spectra_ks.csv").set_index(["layer", "projection"])["n_params"]
    weights = np.array([[spectra[(int(x), kind)] for x in lines[kind]["x"]] for kind in PROJECTIONS])
    sparsity = np.array([lines[kind]["y"] for kind in PROJECTIONS])
    assert (weights * sparsity).sum() / weights.sum() == pytest.approx(paper_figures.TEAL_TARGET, abs=1e-6)
    # the per-kind bars are the parameter-weighted means of the lines
    assert np.allclose(ours["heights"], (weights * sparsity).sum(axis=1) / weights.sum(axis=1))


def _expected_lines(csv: Path) -> tuple[float, dict]:
    runs = pd.read_csv(csv)
    dense = float(runs.loc[runs["strategy"] == "dense", "perplexity"].iloc[0])
    body = runs[runs["strategy"] != "dense"]
    return dense, {s: rows.sort_values("sparsity") for s, rows in body.groupby("strategy", sort=False)}


def test_teal_perplexity_draws_every_strategy_of_the_csv_from_the_dense_model(drawn):
    (panel,) = drawn["paper_teal_perplexity"]["panels"]
    dense, expected = _expected_lines(RESULTS / "perplexity_smollm2-135m.csv")
    expected = {s: rows for s, rows in expected.items() if "[" not in s}  # variants with options are left out
    lines = {line["label"]: line for line in panel["lines"]}
    assert panel["lines"][0]["label"] == "uniform"
    assert set(lines) == set(expected) | {f"dense {dense:.1f}"}
    for strategy, rows in expected.items():
        assert lines[strategy]["x"] == [0.0] + rows["sparsity"].tolist()
        assert np.allclose(lines[strategy]["y"], [dense] + rows["perplexity"].tolist())
    assert "TEAL Fig. 4" in panel["title"]


def test_a_renamed_strategy_is_drawn_under_its_new_label(tmp_path):
    for suffix in ("", ".json"):
        shutil.copy(RESULTS / f"perplexity_smollm2-135m.csv{suffix}", tmp_path)
    path = tmp_path / "perplexity_smollm2-135m.csv"
    runs = pd.read_csv(path)
    old = next(s for s in runs["strategy"].unique() if s not in ("uniform", "dense"))
    runs.loc[runs["strategy"] == old, "strategy"] = "renamed-strategy"
    runs.to_csv(path, index=False)
    data = figures.figure_data(paper_figures.teal_perplexity_figure(tmp_path))
    labels = [line["label"] for line in data["panels"][0]["lines"]]
    assert "renamed-strategy" in labels and old not in labels
    dense, expected = _expected_lines(path)
    (line,) = [ln for ln in data["panels"][0]["lines"] if ln["label"] == "renamed-strategy"]
    assert np.allclose(line["y"], [dense] + expected["renamed-strategy"]["perplexity"].tolist())
