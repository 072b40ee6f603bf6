"""The committed related-methods and depth data (scripts/reproduce_related.py, scripts/reproduce_depth.py).

Checked: provenance sidecars, schema and coverage (every strategy at 40-80%, one dense row, one setting),
facts that hold by construction (TopK-family runs realise their target exactly; FFN-only and CATS runs skip
only their share of the weights; thresholds realise a spread, TopK none; perplexity rises with sparsity for the
all-projection TopK runs), and (``real``) that one committed row is reproduced on the real model.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from acttail_lab.report.related import load_active_sets, load_related, load_spread

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
STRATEGIES = ("uniform", "acttail", "rotated-uniform", "rotated-acttail", "teal-threshold", "acttail-threshold",
              "cats", "ffn-threshold", "ffn-topk")
FFN_SHARE = 3 * 576 * 1536 / (3 * 576 * 1536 + 2 * 576 * 576 + 2 * 192 * 576)
"""Fraction of SmolLM2's projection weights in gate/up/down."""


@pytest.fixture(scope="module")
def runs():
    return load_related()


@pytest.mark.parametrize("name", ["perplexity_related_smollm2-135m.csv", "smollm2-135m_threshold_spread.csv",
                                  "smollm2-135m_active_sets.csv", "smollm2-135m_depth.csv",
                                  "smollm2-135m_depth_variance.csv"])
def test_file_is_small_and_has_a_provenance_sidecar(name):
    path = RESULTS / name
    assert path.stat().st_size < 2_000_000
    side = json.loads(Path(str(path) + ".json").read_text())
    assert side["git_sha"] and side["seed"] == 0 and "command" in side


def test_related_grid_covers_every_strategy_on_one_setting(runs):
    for strategy in STRATEGIES:
        got = sorted(runs.loc[runs["strategy"] == strategy, "sparsity"])
        assert set((0.4, 0.5, 0.6, 0.7, 0.8)) <= set(got), strategy
    assert (runs["strategy"] == "dense").sum() == 1
    for col in ("model", "corpus", "split", "window", "tokens", "protocol"):
        assert runs[col].nunique() == 1, col
    assert runs["tokens"].iloc[0] == 16352 and runs["protocol"].iloc[0] == "all"
    assert np.isfinite(runs["perplexity"]).all() and (runs["perplexity"] > 1).all()


def test_realised_sparsity_follows_from_each_method(runs):
    body = runs[runs["strategy"] != "dense"].set_index(["strategy", "sparsity"])
    for strategy in ("uniform", "acttail", "rotated-uniform", "rotated-acttail"):
        part = body.loc[strategy]
        assert np.allclose(part["realised_sparsity"], part.index, atol=0.002), strategy
        assert (part["realised_std"] == 0).all()
    ffn = body.loc["ffn-topk"]
    assert np.allclose(ffn["realised_sparsity"], ffn.index * FFN_SHARE, atol=0.002)
    cats = body.loc["cats"]  # up + down rows skipped: 2/3 of the FFN's weights at most
    assert (cats["realised_sparsity"] < cats.index * FFN_SHARE * 2 / 3 + 0.02).all()
    for strategy in ("teal-threshold", "ffn-threshold", "acttail-threshold", "cats"):
        assert (body.loc[strategy, "realised_std"] > 0).all(), strategy


def test_topk_perplexity_rises_with_sparsity(runs):
    dense = float(runs.loc[runs["strategy"] == "dense", "perplexity"].iloc[0])
    for strategy in ("uniform", "rotated-uniform", "ffn-topk"):
        ppl = runs[runs["strategy"] == strategy].sort_values("sparsity")["perplexity"].to_numpy()
        assert ppl[0] > dense and np.all(np.diff(ppl) > 0), strategy


def test_spread_and_overlap_tables():
    spread = load_spread()
    assert set(spread["strategy"]) == {"teal-threshold", "ffn-threshold", "cats"}
    assert len(spread) == 3 * 2 * 210
    live = spread[spread["target_sparsity"] > 0]
    assert (live["realised_p05"] <= live["realised_sparsity"] + 1e-9).all()
    assert (live["realised_p95"] >= live["realised_sparsity"] - 1e-9).all()
    overlap = load_active_sets()
    assert len(overlap) == 5 * 30 * 2
    # down neurons of two layers are unrelated: their overlap sits at chance
    down = overlap[(overlap["site"] == "down") & overlap["layer_hit"].notna()]
    assert np.allclose(down["layer_hit"], down["layer_hit_chance"], atol=0.03)


@pytest.mark.real
def test_real_model_reproduces_a_committed_threshold_row(real_model):
    """teal-threshold at 40% on the first 1,024 evaluation tokens lands near the committed 16k-token value."""
    from acttail_lab.measure.grid import evaluate_grid

    df = evaluate_grid(real_model, strategies=("teal-threshold",), sparsities=(0.4,), tokens=1024, window=512,
                       calibration_tokens=1024, progress=False, include_dense=False, cache=False)
    committed = load_related().set_index(["strategy", "sparsity"]).loc[("teal-threshold", 0.4)]
    assert df["realised_sparsity"].iloc[0] == pytest.approx(committed["realised_sparsity"], abs=0.03)
    assert df["perplexity"].iloc[0] == pytest.approx(committed["perplexity"], rel=0.35)
