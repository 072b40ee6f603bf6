"""Notebook 02's runs table: which path obtain_runs takes, the setting line, the live slice beside the grid."""
import pandas as pd
import pytest

from acttail_lab.report import perplexity_runs

SETTING = dict(model="m", corpus="austen", split="evaluation", tokens=100, window=64, protocol="all")


def _runs(strategies=("uniform", "acttail"), sparsities=(0.5, 0.7), rule="ks", perplexity=10.0):
    rows = [dict(strategy="dense", sparsity=0.0, perplexity=5.0, xmin_rule=None, **SETTING)]
    rows += [dict(strategy=s, sparsity=x, perplexity=perplexity + i, xmin_rule=rule if s != "uniform" else None,
                  **SETTING) for i, (s, x) in enumerate((s, x) for s in strategies for x in sparsities)]
    return pd.DataFrame(rows)


class _Fakes:
    def __init__(self):
        self.loaded, self.grids = [], []

    def load_model(self, name):
        self.loaded.append(name)
        return f"lm:{name}"

    def evaluate_grid(self, progress=True, **grid):
        self.grids.append(dict(grid, progress=progress))
        return _runs(perplexity=99.0)


def test_committed_runs_are_loaded_without_a_model(tmp_path):
    _runs().to_csv(tmp_path / "perplexity_m.csv", index=False)
    fakes = _Fakes()
    runs, lm, note = perplexity_runs.obtain_runs("m", results_dir=tmp_path, load_model=fakes.load_model,
                                                 evaluate_grid=fakes.evaluate_grid)
    assert lm is None and fakes.loaded == [] and fakes.grids == []
    assert note == f"Loaded the committed runs: {tmp_path / 'perplexity_m.csv'}"
    assert runs.perplexity.tolist()[:2] == [5.0, 10.0]


def test_rerun_fast_measures_the_committed_grid_on_a_slice(tmp_path):
    _runs().to_csv(tmp_path / "perplexity_m.csv", index=False)
    fakes = _Fakes()
    runs, lm, note = perplexity_runs.obtain_runs("m", rerun=True, fast=True, fast_sizes=dict(tokens=32, window=16),
                                                 results_dir=tmp_path, load_model=fakes.load_model,
                                                 evaluate_grid=fakes.evaluate_grid)
    assert lm == "lm:m" and note == "Re-measuring the committed grid on a small slice (FAST)."
    (grid,) = fakes.grids
    assert grid["model_name"] == "lm:m" and grid["tokens"] == 32 and grid["window"] == 16
    assert grid["strategies"] == ("uniform", "acttail") and grid["sparsities"] == (0.5, 0.7)
    assert grid["progress"] is False and runs.perplexity.tolist() == [5.0, 99.0, 100.0, 101.0, 102.0]


def test_missing_results_measure_the_small_grid(tmp_path):
    fakes = _Fakes()
    small = dict(strategies=("uniform",), sparsities=(0.5,), tokens=512, window=256)
    runs, lm, note = perplexity_runs.obtain_runs("m", small_grid=small, results_dir=tmp_path,
                                                 load_model=fakes.load_model, evaluate_grid=fakes.evaluate_grid)
    assert lm == "lm:m" and "No committed results at" in note and "(512 tokens)" in note
    assert fakes.grids == [dict(model_name="lm:m", progress=True, **small)]


def test_setting_line_names_the_setting_and_rules():
    line = perplexity_runs.setting_line(_runs(rule="peak"))
    assert line == ("m on austen/evaluation: 100 scored tokens per run, windows of 64, protocol 'all', "
                    "alphas from the xmin rule(s) ['peak']")
    assert perplexity_runs.setting_line(_runs(strategies=("uniform",))).endswith("rule(s) ['ks']")


def test_beside_matches_live_rows_to_committed_ones():
    committed = _runs()
    live = _runs(strategies=("acttail",), sparsities=(0.7, 0.9), perplexity=50.0).iloc[1:].assign(tokens=8)
    side = perplexity_runs.beside(live, committed)
    assert side.columns.tolist()[:3] == ["strategy", "sparsity", "xmin_rule"]
    assert side["perplexity (live slice)"].tolist() == [50.0, 51.0]
    assert side["perplexity (committed)"].tolist()[0] == 13.0  # acttail at 0.7 in the committed grid
    assert pd.isna(side["perplexity (committed)"].iloc[1])  # 0.9 was never committed
    assert side["tokens (live slice)"].tolist() == [8, 8] and side["tokens (committed)"].iloc[0] == 100
