"""Result tables: loading with the sidecar, change vs uniform, best-of-family, headline pivot, re-run args."""
import json

import numpy as np
import pandas as pd
import pytest

from acttail_lab.core import results_io
from acttail_lab.core.errors import ActTailError, ModelNotFoundError
from acttail_lab.core.models import PROJECTIONS
from acttail_lab.core.reference import TEAL_LLAMA2_7B_50
from acttail_lab.measure.grid import GRID_COLUMNS
from acttail_lab.report import results

# hand-made perplexities: strategy -> {sparsity: ppl}
PPL = {
    "uniform": {0.5: 20.0, 0.7: 40.0, 0.8: 100.0},
    "acttail": {0.5: 18.0, 0.7: 50.0, 0.8: 78.2},
    "acttail-block": {0.5: 19.0, 0.7: 30.0, 0.8: 90.0},
    "acttail-rev": {0.5: 15.0, 0.7: 20.0, 0.8: 50.0},  # a control: never "best acttail"
    "shuffled": {0.5: 22.0, 0.7: 44.0, 0.8: 130.0},
}
DENSE_PPL = 12.5
ALPHA_BASED = {"acttail", "acttail-block", "acttail-rev", "shuffled"}


def make_runs(ppl=PPL, dense=DENSE_PPL, xmin="peak", **setting):
    """A runs table with evaluate_grid's columns (a dense row first, like evaluate_grid); the alpha-based rows
    use ``xmin`` (default: the default rule, so their labels are their strategy names)."""
    base = dict(protocol="all", window=256, model="smollm2-135m", corpus="austen", split="evaluation",
                tokens=1020, options="{}", wall_s=1.0, device="cpu", dtype="float32", cached=False, kinds=float("nan"),
                realised_std=0.0)
    base.update(setting)
    rows = [dict(strategy="dense", sparsity=0.0, perplexity=dense, realised_sparsity=0.0, xmin_rule=None,
                 method=None, **base)]
    for strategy, by_s in ppl.items():
        for s, p in by_s.items():
            rows.append(dict(strategy=strategy, sparsity=s, perplexity=p, realised_sparsity=s,
                             xmin_rule=xmin if strategy in ALPHA_BASED else None, method="topk", **base))
    df = pd.DataFrame(rows)
    df["nll"] = np.log(df["perplexity"])
    return df[list(GRID_COLUMNS)]


def test_synthetic_table_has_the_grid_schema():
    assert list(make_runs().columns) == list(GRID_COLUMNS)


def test_relative_to_uniform_values_on_a_hand_made_table():
    rel = results.relative_to_uniform(make_runs())
    assert set(rel["strategy"]) == set(PPL) - {"uniform"}  # dense and uniform dropped
    row = rel[(rel.strategy == "acttail") & (rel.sparsity == 0.8)].iloc[0]
    assert row.perplexity == 78.2 and row.uniform_perplexity == 100.0
    assert row.change_pct == pytest.approx(-21.8)
    for _, r in rel.iterrows():
        expected = 100 * (PPL[r.strategy][r.sparsity] / PPL["uniform"][r.sparsity] - 1)
        assert r.change_pct == pytest.approx(expected, rel=1e-12)
    assert rel.loc[(rel.strategy == "acttail") & (rel.sparsity == 0.7), "change_pct"].item() == pytest.approx(25.0)
    with_uniform = results.relative_to_uniform(make_runs(), include_uniform=True)
    assert (with_uniform.loc[with_uniform.strategy == "uniform", "change_pct"] == 0).all()


def test_relative_to_uniform_matches_within_a_setting_only():
    a = make_runs(window=256)
    b = make_runs(ppl={k: {s: 2 * p for s, p in v.items()} for k, v in PPL.items()}, window=512)
    rel = results.relative_to_uniform(pd.concat([a, b], ignore_index=True))
    assert len(rel) == 2 * 4 * 3
    # doubling every perplexity in setting b leaves the relative change unchanged
    by_window = rel.pivot_table(index=["strategy", "sparsity"], columns="window", values="change_pct")
    assert np.allclose(by_window[256], by_window[512])
    assert (rel.loc[rel.window == 512, "uniform_perplexity"].to_numpy()
            == 2 * rel.loc[rel.window == 256, "uniform_perplexity"].to_numpy()).all()


def test_relative_to_uniform_needs_uniform_and_leaves_nan_where_missing():
    with pytest.raises(ActTailError, match="uniform"):
        results.relative_to_uniform(make_runs(ppl={"acttail": PPL["acttail"]}))
    ppl = dict(PPL, uniform={0.5: 20.0, 0.7: 40.0})  # uniform not run at 0.8
    rel = results.relative_to_uniform(make_runs(ppl=ppl))
    assert rel.loc[rel.sparsity == 0.8, "change_pct"].isna().all()
    assert rel.loc[rel.sparsity == 0.5, "change_pct"].notna().all()


def test_best_per_sparsity_picks_the_lowest_acttail_variant_and_skips_the_control():
    best = results.best_per_sparsity(make_runs())
    assert best["sparsity"].tolist() == [0.5, 0.7, 0.8]
    assert best["best"].tolist() == ["acttail", "acttail-block", "acttail"]
    assert best["perplexity"].tolist() == [18.0, 30.0, 78.2]
    assert best["change_pct"].tolist() == pytest.approx([-10.0, -25.0, -21.8])
    assert (best["n_candidates"] == 2).all()
    with_controls = results.best_per_sparsity(make_runs(), include_controls=True)
    assert (with_controls["best"] == "acttail-rev").all()
    assert results.family_members(["uniform", "acttail[eps=0.2]", "acttail-rank", "shuffled", "acttail-rev"]) \
        == ["acttail[eps=0.2]", "acttail-rank"]
    with pytest.raises(ActTailError, match="teal"):
        results.best_per_sparsity(make_runs(), family="teal")


def test_headline_table_shape_order_and_dense_row():
    table = results.headline_table(make_runs())
    assert table.shape == (1 + len(PPL), 3)
    assert table.index.tolist() == ["dense"] + list(PPL)
    assert table.columns.tolist() == [0.5, 0.7, 0.8]
    assert (table.loc["dense"] == DENSE_PPL).all()
    assert table.loc["acttail", 0.8] == 78.2 and table.loc["shuffled", 0.5] == 22.0
    assert results.headline_table(make_runs(), include_dense=False).shape == (len(PPL), 3)
    change = results.headline_table(results.relative_to_uniform(make_runs()), value="change_pct")
    assert change.shape == (len(PPL) - 1, 3)
    assert change.loc["acttail", 0.8] == pytest.approx(-21.8)


def test_headline_table_refuses_mixed_settings_and_labels_xmin_variants():
    mixed = pd.concat([make_runs(window=256), make_runs(window=512)], ignore_index=True)
    with pytest.raises(ActTailError, match="window"):
        results.headline_table(mixed)
    ks = make_runs(xmin="ks")
    peak = make_runs(ppl={"acttail": {0.5: 17.0, 0.7: 33.0, 0.8: 70.0}}, xmin="peak")
    both = pd.concat([ks, peak[peak.strategy == "acttail"]], ignore_index=True)
    table = results.headline_table(both)
    # a label is a function of the settings: the KS rows read acttail-ks, the peak (default) rows acttail
    assert "acttail-ks" in table.index and "acttail" in table.index
    assert table.loc["acttail", 0.8] == 70.0
    assert "uniform" in table.index  # alpha-free rows keep their plain name
    with pytest.raises(ActTailError, match="xmin"):
        results.xmin_rule(both)
    assert results.xmin_rule(ks) == "ks" and results.xmin_rules(both) == ["ks", "peak"]
    assert results.labels(both, ["acttail", "uniform", "teal-kind"]) == ["acttail-ks", "acttail", "uniform"]
    assert results.labels(ks) == ["uniform", "acttail-ks", "acttail-block[xmin=ks]", "acttail-rev[xmin=ks]",
                                  "shuffled[xmin=ks]"]
    assert results.labels(make_runs()) == list(PPL)


def test_load_results_reads_the_csv_and_its_sidecar(tmp_path):
    from acttail_lab.core.results_io import write_results

    path = write_results(make_runs(), tmp_path / "perplexity_toy.csv", seed=3, device="cpu", command="test",
                         tokens=1024)
    runs = results.load_perplexity("toy", results_dir=tmp_path)
    assert runs.attrs["path"] == str(path)
    assert runs.attrs["provenance"]["seed"] == 3
    assert runs.attrs["provenance"]["settings"]["tokens"] == 1024
    assert results.provenance_summary(runs)["command"] == "test"
    pd.testing.assert_frame_equal(runs, make_runs(), check_dtype=False)
    with pytest.raises(ModelNotFoundError, match="acttail-lab evaluate"):
        results.load_perplexity("missing", results_dir=tmp_path)
    (tmp_path / "perplexity_bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ActTailError, match="missing"):
        results.load_perplexity("bad", results_dir=tmp_path)
    (tmp_path / "perplexity_nosidecar.csv").write_text(make_runs().to_csv(index=False))
    assert results.load_perplexity("nosidecar", results_dir=tmp_path).attrs["provenance"] is None


def test_rerun_arguments_rebuild_the_grid(tmp_path):
    args = results.rerun_arguments(make_runs(xmin="ks"))
    assert len(args) == 1
    a = args[0]
    assert a["strategies"] == tuple(PPL) and a["sparsities"] == (0.5, 0.7, 0.8)
    assert a["window"] == 256 and a["protocol"] == "all" and a["xmin"] == "ks" and a["include_dense"]
    assert a["tokens"] == 1024  # 1020 scored tokens = 4 windows of 256 (255 targets each)
    fast = results.rerun_arguments(make_runs(xmin="ks"), tokens=512, window=128)[0]
    assert fast["tokens"] == 512 and fast["window"] == 128
    runs = make_runs()
    runs.attrs["provenance"] = {"settings": {"tokens": 4096}}
    assert results.rerun_arguments(runs)[0]["tokens"] == 4096
    peak = make_runs(ppl={"acttail": PPL["acttail"]}, xmin="peak")
    both = pd.concat([make_runs(xmin="ks"), peak[peak.strategy == "acttail"]], ignore_index=True)
    first, second = results.rerun_arguments(both)
    assert first["xmin"] == "ks" and "uniform" in first["strategies"] and first["include_dense"]
    assert second == {**second, "xmin": "peak", "strategies": ("acttail",), "include_dense": False}


def test_reference_kind_budgets_hit_the_target_and_carry_teal():
    budgets = results.reference_kind_budgets(target=0.5)
    labels = list(dict.fromkeys(budgets["label"]))
    assert labels == ["ActTail LLaMA-2-7B", "ActTail LLaMA-2-13B", "ActTail LLaMA-2-70B", "TEAL (published)"]
    teal = budgets[budgets.label == "TEAL (published)"].set_index("projection")["sparsity"]
    assert teal.to_dict() == TEAL_LLAMA2_7B_50
    table = results.kind_table(budgets)
    assert table.index.tolist() == list(PROJECTIONS) + ["all (weighted)"]
    # the ActTail allocations meet the target exactly; TEAL's kind means come within 0.01 of it
    assert np.allclose(table.loc["all (weighted)", labels[:3]], 0.5, atol=1e-9)
    assert table.loc["all (weighted)", "TEAL (published)"] == pytest.approx(0.5, abs=0.01)
    # with LLaMA-2-7B's alphas, `up` (mean alpha 4.34) gets more than q (2.36) under ActTail, less under TEAL
    assert table.loc["up", "ActTail LLaMA-2-7B"] > table.loc["q", "ActTail LLaMA-2-7B"]
    assert table.loc["up", "TEAL (published)"] < table.loc["q", "TEAL (published)"]


def test_sidecar_reader_returns_the_json(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("strategy,sparsity,perplexity\nuniform,0.5,3\n")
    (tmp_path / "x.csv.json").write_text(json.dumps({"seed": 7}))
    assert results_io.read_sidecar(csv) == {"seed": 7}


def test_allocation_extremes_count_clipped_projections():
    from acttail_lab.allocation import allocate

    rows = [dict(layer=layer, projection=kind, n_params=100,
                 alpha=2.0 + (20.0 if (layer, kind) == (0, "up") else 0.1 * i))
            for layer in range(4) for i, kind in enumerate(PROJECTIONS)]
    table = pd.DataFrame(rows)
    spiky = allocate(table, "acttail", 0.75, epsilon=0.5, s_max=0.95)
    flat = allocate(table, "uniform", 0.75)
    extremes = results.allocation_extremes([spiky, flat])
    assert extremes.index.tolist() == ["acttail[epsilon=0.5;s_max=0.95]", "uniform"]
    assert extremes.loc["uniform"].tolist() == [0.75, 0.75, 0.75, 0, 0]
    assert extremes.loc[spiky.label[0], "max"] == pytest.approx(0.95)
    assert extremes.loc[spiky.label[0], "at_cap"] == (spiky.sparsity >= 0.95 - 1e-9).sum() >= 1
    assert extremes.loc[spiky.label[0], "above_0.9"] == (spiky.sparsity > 0.9).sum()
