"""The committed sensitivity data (data/results/smollm2-135m_*.csv, made by scripts/reproduce_sensitivity.py).

Checked: schema, row counts, SmolLM2-135M's shapes, finite values in range,
facts that must hold by construction (TopK drops a superset of entries as s
grows, projections reading one input share its input error, loss = dense +
increase, one rule-free metric across the rule files), that the correlation
file is exactly what ``spectral_correlations`` gives on the committed tables,
and (``real``) that a few cost-table rows are reproduced on the real model by
an independent implementation of the error.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from acttail_lab.core.models import PROJECTIONS
from acttail_lab.measure import sensitivity
from acttail_lab.report import correlations
from acttail_lab.sparsify.topk import keep_count
from acttail_lab.spectral.spectra import FIT_COLUMNS

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
MODEL = "smollm2-135m"
RULES = ("ks", "peak", "median")
N_LAYERS, N_PROJECTIONS = 30, 210
SHAPES = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576), "gate": (1536, 576),
          "up": (1536, 576), "down": (576, 1536)}
"""(d_out, d_in) of SmolLM2-135M: hidden 576, 9 heads / 3 kv heads of 64, intermediate 1536."""
FILES = [f"{MODEL}_spectra_{rule}.csv" for rule in RULES] + [
    f"{MODEL}_cost_table.csv", f"{MODEL}_loss_increase.csv", f"{MODEL}_correlations.csv"]


def read(name: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / name)


@pytest.fixture(scope="module")
def cost():
    return read(f"{MODEL}_cost_table.csv")


@pytest.fixture(scope="module")
def tables():
    return {rule: read(f"{MODEL}_spectra_{rule}.csv") for rule in RULES}


@pytest.fixture(scope="module")
def loss():
    return read(f"{MODEL}_loss_increase.csv")


def check_identity(frame: pd.DataFrame, per_projection: int = 1) -> None:
    """layer / projection / name / n_params columns describe SmolLM2-135M's 210 projections in model order."""
    ident = frame.drop_duplicates("name")
    assert len(frame) == len(ident) * per_projection
    assert list(ident["layer"]) == [layer for layer in range(N_LAYERS) for _ in PROJECTIONS]
    assert list(ident["projection"]) == list(PROJECTIONS) * N_LAYERS
    assert all(f"layers.{layer}." in name for layer, name in zip(ident["layer"], ident["name"]))
    expected = ident["projection"].map(lambda k: SHAPES[k][0] * SHAPES[k][1])
    assert (ident["n_params"] == expected).all()


@pytest.mark.parametrize("name", FILES)
def test_file_is_small_and_has_a_provenance_sidecar(name):
    path = RESULTS / name
    assert path.exists(), f"{path} is missing: run scripts/reproduce_sensitivity.py"
    assert path.stat().st_size < 1_000_000
    sidecar = json.loads((RESULTS / f"{name}.json").read_text())
    assert sidecar["seed"] == 0 and sidecar["settings"]["model"] == MODEL
    assert sidecar["settings"]["rows"] == len(read(name))
    assert {"torch", "transformers", "numpy", "pandas"} <= set(sidecar["versions"])
    assert "reproduce_sensitivity" in sidecar["command"]


@pytest.mark.parametrize("rule", RULES)
def test_spectra_tables(tables, rule):
    table = tables[rule]
    assert list(table.columns) == ["layer", "projection", "name", "d_out", "d_in", "n_params"] + FIT_COLUMNS
    check_identity(table)
    assert (table["xmin_rule"] == rule).all()
    assert (table["d_out"] == table["projection"].map(lambda k: SHAPES[k][0])).all()
    assert (table["n_eigs"] == table[["d_out", "d_in"]].min(axis=1)).all()
    numeric = table[["alpha", "xmin", "ks_distance", "lambda_max", "alpha_weighted", "stable_rank"]]
    assert np.isfinite(numeric.to_numpy()).all()
    assert (table["alpha"] > 1).all() and (table["alpha"] < 100).all()
    assert table["ks_distance"].between(0, 1).all()
    assert (table["n_tail"] >= 2).all() and (table["n_tail"] <= table["n_eigs"]).all()
    assert (table["xmin"] <= table["lambda_max"] * (1 + 1e-5)).all()
    assert (table["stable_rank"] >= 1 - 1e-6).all() and (table["stable_rank"] <= table["n_eigs"]).all()
    # alpha_weighted = alpha * log10(lambda_max), to the 6 digits written
    assert np.allclose(table["alpha_weighted"], table["alpha"] * np.log10(table["lambda_max"]), rtol=1e-4)


def test_rule_free_metrics_agree_across_rule_files(tables):
    for rule in RULES[1:]:
        for column in ("lambda_max", "stable_rank", "n_eigs"):
            assert np.array_equal(tables[rule][column], tables["ks"][column]), (rule, column)
    assert not np.allclose(tables["ks"]["alpha"], tables["median"]["alpha"])  # the rule matters


def test_cost_table_schema_and_grid(cost):
    assert list(cost.columns) == ["layer", "projection", "name", "d_out", "d_in", "n_params", "sparsity", "keep",
                                  "rel_error", "rel_error_token", "rel_input_error", "n_tokens"]
    assert len(cost) == N_PROJECTIONS * len(sensitivity.DEFAULT_SPARSITIES)
    check_identity(cost, per_projection=len(sensitivity.DEFAULT_SPARSITIES))
    for _, part in cost.groupby("name", sort=False):
        assert np.allclose(part["sparsity"], sensitivity.DEFAULT_SPARSITIES)
    assert (cost["keep"] == [keep_count(s, d) for s, d in zip(cost["sparsity"], cost["d_in"])]).all()
    assert (cost["n_tokens"] == 2048).all()
    errors = cost[["rel_error", "rel_error_token", "rel_input_error"]].to_numpy()
    assert np.isfinite(errors).all() and (errors > 0).all() and (errors < 1).all()


def test_cost_curves_rise_with_sparsity(cost):
    ordered = cost.sort_values(["name", "sparsity"])
    steps = ordered.groupby("name")[["rel_input_error", "rel_error", "rel_error_token"]].diff().dropna()
    # TopK at a higher s drops a superset of entries: the input error cannot fall
    assert (steps["rel_input_error"] > 0).all()
    # not a theorem for the output errors, but true of every measured curve
    assert (steps["rel_error"] > 0).all() and (steps["rel_error_token"] > 0).all()
    top = cost[cost["sparsity"] == 0.95]
    assert top["rel_error"].median() > 10 * cost[cost["sparsity"] == 0.1]["rel_error"].median()


def test_projections_reading_one_input_share_its_input_error(cost):
    wide = cost.pivot_table(index=["layer", "sparsity"], columns="projection", values="rel_input_error")
    assert np.allclose(wide["k"], wide["q"]) and np.allclose(wide["v"], wide["q"])
    assert np.allclose(wide["up"], wide["gate"])
    assert not np.allclose(wide["o"], wide["q"])


def test_cost_table_matches_the_spectra_tables(cost, tables):
    ident = cost.drop_duplicates("name")[["name", "d_out", "d_in", "n_params"]].reset_index(drop=True)
    assert ident.equals(tables["ks"][["name", "d_out", "d_in", "n_params"]])


def test_loss_increase_subset(loss, cost):
    assert list(loss.columns) == list(sensitivity.LOSS_COLUMNS)
    layers = sorted(loss["layer"].unique())
    assert layers == list(range(0, N_LAYERS, 3))
    assert len(loss) == len(layers) * len(PROJECTIONS) * 2
    assert set(loss["sparsity"]) == {0.5, 0.8}
    assert set(loss["name"]) <= set(cost["name"])
    assert loss["dense_loss"].nunique() == 1 and 2.0 < loss["dense_loss"].iloc[0] < 5.0
    assert np.allclose(loss["loss"], loss["dense_loss"] + loss["loss_increase"], atol=1e-5)
    assert (loss["n_tokens"] == 512).all()
    assert np.isfinite(loss["loss_increase"]).all() and loss["loss_increase"].between(-0.05, 3.0).all()
    wide = loss.pivot_table(index="name", columns="sparsity", values="loss_increase")
    # at 512 tokens the noise is a few 1e-3 nats, so small increases can come out negative;
    # on the whole, more sparsity must hurt more
    assert (wide[0.8] > wide[0.5]).mean() > 0.8
    assert wide[0.8].mean() > 3 * wide[0.5].mean() > 0 and wide[0.8].median() > 0


def test_correlations_are_recomputed_exactly_from_the_committed_tables(cost, tables, loss):
    committed = read(f"{MODEL}_correlations.csv")
    assert list(committed.columns) == ["rule", "metric", "sensitivity", "group_by", "group", "rho", "p_value", "n"]
    fresh = correlations.sensitivity_correlations(tables, cost, loss, loss_at=(0.5, 0.8))
    assert len(committed) == len(fresh)
    keys = ["rule", "metric", "sensitivity", "group_by", "group"]
    assert committed[keys].astype(str).equals(fresh[keys].astype(str))
    assert (committed["n"] == fresh["n"]).all()
    # the CSV inputs carry 6 digits, so ranks (and rho) can only move on exact near-ties
    assert np.allclose(committed["rho"], fresh["rho"], atol=1e-3, equal_nan=True)
    ok = committed["rho"].dropna()
    assert ok.between(-1, 1).all() and committed["p_value"].dropna().between(0, 1).all()
    overall = committed[(committed.group_by == "all") & (committed.sensitivity.str.startswith("rel_error@"))]
    assert (overall["n"] == N_PROJECTIONS).all()


def _independent_rel_error(x: torch.Tensor, weight: torch.Tensor, sparsity: float) -> float:
    """||W (x - topk(x))||_F / ||W x||_F over all tokens, with torch.topk (float64)."""
    x, weight = x.double(), weight.double()
    k = round((1 - sparsity) * x.shape[1])
    kept = torch.zeros_like(x).scatter_(1, x.abs().topk(k, dim=1).indices, 1.0)
    return float((((x * (1 - kept)) @ weight.T).norm() / (x @ weight.T).norm()))


@pytest.mark.real
def test_real_model_reproduces_committed_cost_rows(real_model, cost):
    """Same windows and tokens as the committed table (2048 calibration tokens), three projections."""
    windows = sensitivity.calibration_windows(real_model.tokenizer, window=512, n_tokens=2048)
    inputs = sensitivity.capture_inputs(real_model, windows, max_tokens=2048, seed=0)
    modules = dict(real_model.model.named_modules())
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.14.mlp.down_proj",
                 "model.layers.29.self_attn.o_proj"):
        x = inputs[name]
        assert x.shape[0] == 2048
        rows = cost[cost["name"] == name].set_index("sparsity")
        for s in (0.5, 0.8, 0.95):
            measured = _independent_rel_error(x, modules[name].weight.detach(), s)
            assert measured == pytest.approx(rows.loc[s, "rel_error"], rel=2e-3), (name, s)
