"""FFN active-set overlap, the related-methods tables, and their figures."""
import numpy as np
import pandas as pd
import pytest
import torch

from acttail_lab.core import errors
from acttail_lab.core.models import random_model
from acttail_lab.measure.active_sets import (
    _pair_stats,
    capture_ffn_inputs,
    overlap_rows,
    overlap_summary,
)
from acttail_lab.plots.perplexity import plot_perplexity_vs_sparsity
from acttail_lab.plots.related import plot_active_set_overlap, plot_token_spread
from acttail_lab.report.related import at_realised, method_summary, spread_by_kind
from acttail_lab.sparsify.calibration import collect_stats


def test_pair_stats_on_hand_made_sets():
    a = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    out = _pair_stats(a, b)
    assert out["jaccard"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["hit"] == pytest.approx((1.0 + 1.0) / 2)
    # chance: |a||b|/d = 0.5 and 1.0 expected shared entries
    assert out["hit_chance"] == pytest.approx((0.5 / 1 + 1.0 / 2) / 2)
    assert out["jaccard_chance"] == pytest.approx((0.5 / 2.5 + 1.0 / 3.0) / 2)


def test_random_sets_sit_at_chance_and_identical_sets_at_one():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2000, 512, generator=g) > 0.5
    b = torch.rand(2000, 512, generator=g) > 0.5
    out = _pair_stats(a, b)
    assert out["hit"] == pytest.approx(out["hit_chance"], abs=0.01)
    assert out["jaccard"] == pytest.approx(out["jaccard_chance"], abs=0.01)
    same = _pair_stats(a, a)
    assert same["jaccard"] == 1.0 and same["hit"] == 1.0


def test_overlap_rows_on_the_tiny_model():
    model = random_model("llama-tiny", seed=0).eval()
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, model.config.vocab_size, (4, 64), generator=g)
    stats = collect_stats(model, windows, moments=False, progress=False)
    inputs = capture_ffn_inputs(model, windows)
    assert set(inputs) == {(layer, site) for layer in range(2) for site in ("mlp_in", "down")}
    rows = pd.DataFrame(overlap_rows(inputs, stats, 0.5) + overlap_rows(inputs, stats, 0.8))
    assert len(rows) == 8
    # thresholds calibrated on these very windows: the active fraction is 1 - s
    assert rows.groupby("sparsity")["active_fraction"].mean().to_dict() == pytest.approx({0.5: 0.5, 0.8: 0.2}, abs=0.02)
    last = rows[rows["layer"] == 1]
    assert last["layer_jaccard"].isna().all() and rows.loc[rows["layer"] == 0, "layer_jaccard"].notna().all()
    summary = overlap_summary(rows)
    assert set(summary["site"]) == {"mlp_in", "down"} and "token_hit_over_chance" in summary


def runs_table():
    rows = [dict(strategy="dense", method=None, kinds=None, sparsity=0.0, perplexity=10.0, realised_sparsity=0.0,
                 realised_std=0.0)]
    for s in (0.4, 0.6, 0.8):
        rows.append(dict(strategy="uniform", method="topk", kinds=None, sparsity=s, perplexity=10 * np.exp(s),
                         realised_sparsity=s, realised_std=0.0))
        rows.append(dict(strategy="ffn-threshold", method="threshold", kinds="gate+up+down", sparsity=s,
                         perplexity=10 * np.exp(2 * s), realised_sparsity=0.75 * s, realised_std=0.05))
    df = pd.DataFrame(rows)
    for col, value in dict(model="m", corpus="c", split="evaluation", window=64, tokens=128, protocol="all").items():
        df[col] = value
    return df


def test_at_realised_interpolates_in_log_space_and_leaves_gaps():
    out = at_realised(runs_table(), levels=(0.3, 0.5, 0.7)).set_index("strategy")
    assert out.loc["uniform", "0.5"] == pytest.approx(10 * np.exp(0.5))
    assert np.isnan(out.loc["uniform", "0.3"])  # below the measured range
    assert out.loc["ffn-threshold", "0.5"] == pytest.approx(10 * np.exp(2 * 0.5 / 0.75))
    assert np.isnan(out.loc["ffn-threshold", "0.7"])
    assert "dense" not in out.index
    assert len(method_summary(runs_table())) == 6


def test_perplexity_plot_can_use_the_realised_axis():
    ax = plot_perplexity_vs_sparsity(runs_table(), x="realised_sparsity", dense=False)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["ffn-threshold"].get_xdata().tolist() == pytest.approx([0.3, 0.45, 0.6])
    assert "realised" in ax.get_xlabel()


def spread_table():
    rows = []
    for target in (0.5, 0.8):
        for layer in range(2):
            for kind in ("q", "k", "v", "o", "gate", "up", "down"):
                rows.append(dict(strategy="teal-threshold", target=target, layer=layer, projection=kind,
                                 target_sparsity=target, realised_sparsity=target + 0.01 * layer,
                                 realised_std=0.05, realised_p05=target - 0.1, realised_p95=target + 0.1))
    return pd.DataFrame(rows)


def test_token_spread_plot_draws_one_errorbar_per_target():
    by_kind = spread_by_kind(spread_table())
    assert len(by_kind) == 14
    ax = plot_token_spread(by_kind, "teal-threshold")
    assert len(ax.containers) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["q", "k", "v", "o", "gate", "up", "down"]
    with pytest.raises(ValueError, match="No rows"):
        plot_token_spread(by_kind, "cats")


def test_active_set_plot_draws_token_layer_and_chance_lines():
    rows = []
    for site in ("mlp_in", "down"):
        for layer in range(3):
            rows.append(dict(site=site, layer=layer, sparsity=0.5, token_hit=0.7, layer_hit=0.6 if layer < 2 else np.nan,
                             token_hit_chance=0.5, layer_hit_chance=0.5, token_jaccard=0.5, layer_jaccard=0.4,
                             token_jaccard_chance=0.33, layer_jaccard_chance=0.33))
    ax = plot_active_set_overlap(pd.DataFrame(rows), 0.5)
    labels = [line.get_label() for line in ax.get_lines()]
    assert "down: next token" in labels and "mlp_in: next layer" in labels and "chance (same set sizes)" in labels
    with pytest.raises(ValueError, match="No rows at sparsity"):
        plot_active_set_overlap(pd.DataFrame(rows), 0.9)


def test_rotation_check_on_the_tiny_model():
    from acttail_lab.measure.related import rotation_check
    from acttail_lab.sparsify import rotation

    model = random_model("llama-tiny", seed=0).eval()
    g = torch.Generator().manual_seed(3)
    stats = collect_stats(model, torch.randint(0, 256, (6, 64), generator=g), moments=True, progress=False, key="rc")
    rotation._MEMO.clear()
    out = rotation_check(model, stats, torch.randint(0, 256, (2, 32), generator=g))
    assert out["rotations"] == 2 * 4
    assert out["max_orthogonality_error"] < 1e-10
    assert out["max_abs_logit_diff"] < 1e-4 * max(1.0, out["max_abs_logit"])


def test_conclusions_are_computed_from_the_tables():
    from acttail_lab.report.related import conclusions

    runs = runs_table()
    lines = conclusions(runs, spread_table(), targets=(0.4, 0.8), realised_levels=(0.4,))
    assert any("ffn-threshold" in line for line in lines) or any("teal-threshold" in line for line in lines)
    assert any(line.startswith("At 40% of all projection weights skipped (interpolated along each curve, so no "
                               "interval), perplexity from lowest to highest over all") and "reach it: uniform" in line
               for line in lines)
    # change a number: the sentence changes with it
    runs.loc[runs["strategy"] == "ffn-threshold", "perplexity"] = 1.0
    assert any("reach it: ffn-threshold" in line
               for line in conclusions(runs, targets=(0.4,), realised_levels=(0.4,)))


def test_rotation_check_fails_loudly_when_the_rotation_is_wrong(monkeypatch):
    from acttail_lab.measure import related
    from acttail_lab.sparsify import rotation

    model = random_model("llama-tiny", seed=0).eval()
    g = torch.Generator().manual_seed(4)
    stats = collect_stats(model, torch.randint(0, 256, (6, 64), generator=g), moments=True, progress=False, key="bad")
    good = rotation.rotations_from_stats(stats, range(2), progress=False)
    broken = {k: q * 1.5 for k, q in good.items()}  # not orthogonal
    monkeypatch.setattr(rotation, "rotations_for", lambda *a, **k: broken)
    with pytest.raises(errors.RotationError, match="does not reproduce"):
        related.rotation_check(model, stats, torch.randint(0, 256, (2, 32), generator=g))


def test_overlap_summary_rows_from_the_committed_overlap_table():
    # regression: report.related imported overlap_summary from a module that no longer exists after the re-layering
    from acttail_lab.report.related import load_active_sets, overlap_summary_rows

    rows = overlap_summary_rows(load_active_sets("smollm2-135m"), sparsity=0.5)
    assert rows and all(row.startswith("FFN ") and " at 50%: " in row and "(chance " in row for row in rows)
