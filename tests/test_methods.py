"""The method registry and the method/kinds options: every method through one factory, the grid and perplexity."""
import numpy as np
import pandas as pd
import pytest
from calibrated_model import TEXT, eval_windows, model, stats, windows  # noqa: F401 (pytest fixtures)

from acttail_lab.allocation import STRATEGY_PRESETS, allocate, parse_strategy
from acttail_lab.allocation.presets import presets_help
from acttail_lab.core.errors import AllocationError, CalibrationError
from acttail_lab.core.models import LoadedModel, projection_table
from acttail_lab.measure.grid import evaluate_grid
from acttail_lab.measure.perplexity import perplexity
from acttail_lab.sparsify import calibration as calib
from acttail_lab.sparsify.methods import make_sparsifier
from acttail_lab.sparsify.topk import TopKSparsifier

# TEXT and the module-scoped fixtures model / windows / stats / eval_windows


# --------------------------------------------------------------------------- presets and kinds
def test_new_presets_carry_method_and_kinds():
    assert STRATEGY_PRESETS["rotated-acttail"].method == "rotated"
    assert STRATEGY_PRESETS["cats"].kinds == ("down",)
    assert STRATEGY_PRESETS["ffn-threshold"].kinds == ("gate", "up", "down")
    spec = parse_strategy("acttail[method=threshold;kinds=down+gate]")
    assert (spec.strategy, spec.method, spec.kinds) == ("acttail", "threshold", ("gate", "down"))
    assert "method=rotated" in presets_help()


def test_unknown_method_is_caught_where_the_method_registry_is():
    from acttail_lab.sparsify.methods import resolve_spec

    with pytest.raises(AllocationError, match="Unknown method 'magic'. Registered methods: topk, rotated"):
        resolve_spec("uniform[method=magic]")
    with pytest.raises(AllocationError, match="Unknown method"):
        evaluate_grid("no-such-model", strategies=["uniform[method=magic]"], progress=False)


@pytest.mark.parametrize("text, fragment", [("uniform[method=ma gic]", "Unknown method"),
                                            ("uniform[kinds=gate+lm_head]", "kinds"),
                                            ("surrogate-optimal[kinds=down]", None)])
def test_bad_method_or_kinds_is_a_clear_error(model, text, fragment):
    if fragment is None:  # kinds on a cost-solved strategy fails at allocate
        with pytest.raises(AllocationError, match="ratio strategies"):
            allocate(projection_table(model), text, 0.5)
        return
    with pytest.raises(AllocationError, match=fragment):
        parse_strategy(text)


def test_kinds_restrict_the_budget_and_the_mean_is_over_those_kinds(model):
    table = projection_table(model)
    alloc = allocate(table, "ffn-threshold", 0.6)
    ffn = alloc["projection"].isin(["gate", "up", "down"])
    assert (alloc.loc[~ffn, "sparsity"] == 0).all()
    w = alloc.loc[ffn, "n_params"]
    assert np.dot(alloc.loc[ffn, "sparsity"], w) / w.sum() == pytest.approx(0.6, abs=1e-9)
    assert set(alloc["method"]) == {"threshold"} and set(alloc["kinds"]) == {"gate+up+down"}
    plain = allocate(table, "uniform", 0.6)
    assert "method" not in plain and "kinds" not in plain


def test_make_sparsifier_needs_stats_for_calibrated_methods(model):
    alloc = allocate(projection_table(model), "uniform", 0.5)
    assert isinstance(make_sparsifier(model, alloc, "topk"), TopKSparsifier)
    for method in ("rotated", "threshold", "cats"):
        with pytest.raises(CalibrationError, match="needs calibration statistics"):
            make_sparsifier(model, alloc, method)
    with pytest.raises(AllocationError, match="Unknown method"):
        make_sparsifier(model, alloc, "random")


def test_sparsified_perplexity_rises_for_every_method(model, stats, eval_windows):
    table = projection_table(model)
    dense = perplexity(model, eval_windows, progress=False).perplexity
    for label in ("rotated-uniform", "teal-threshold", "cats", "ffn-threshold"):
        spec = parse_strategy(label)
        sp = make_sparsifier(model, allocate(table, spec, 0.9), spec.method, stats=stats)
        result = perplexity(model, eval_windows, sparsifier=sp, progress=False)
        assert result.perplexity != dense and result.realised_sparsity > 0.2


# --------------------------------------------------------------------------- the grid
def test_grid_runs_every_method_and_keys_the_cache_by_method(model, tmp_path, monkeypatch, char_tokenizer):
    monkeypatch.setenv("ACTTAIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(calib, "_MEMORY", {})
    lm = LoadedModel(model=model, tokenizer=char_tokenizer(), name="tiny", source="random:tiny")
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    corpus = str(corpus)
    strategies = ("uniform", "rotated-uniform", "teal-threshold", "cats", "ffn-threshold")
    df = evaluate_grid(lm, strategies=strategies, sparsities=(0.5,), tokens=512, window=64, corpus=corpus,
                       progress=False, calibration_tokens=1024)
    assert df["strategy"].tolist() == ["dense", *strategies]
    assert pd.isna(df["method"].iloc[0])  # the dense row applies no method
    assert df["method"].tolist()[1:] == ["topk", "rotated", "threshold", "cats", "threshold"]
    assert df.loc[df["strategy"] == "cats", "kinds"].item() == "down"
    ppl = dict(zip(df["strategy"], df["perplexity"]))
    assert len({round(v, 9) for v in ppl.values()}) == len(ppl)  # every method is a different run
    row = df.set_index("strategy")
    assert row.loc["uniform", "realised_std"] == 0.0 and row.loc["teal-threshold", "realised_std"] > 0
    assert row.loc["ffn-threshold", "realised_sparsity"] < 0.5  # only the FFN is cut
    again = evaluate_grid(lm, strategies=strategies, sparsities=(0.5,), tokens=512, window=64, corpus=corpus,
                          progress=False, calibration_tokens=1024)
    assert again["cached"].all()
    assert again["perplexity"].tolist() == pytest.approx(df["perplexity"].tolist(), rel=1e-12)
