"""report.speed_cpu derives the CPU speed verdicts from the tables it is given; the committed tables agree with
themselves; plots.speed_cpu draws those numbers."""
import numpy as np
import pandas as pd
import pytest

from acttail_lab.core.errors import ModelNotFoundError
from acttail_lab.core.paths import result_path
from acttail_lab.plots import speed_cpu as cp
from acttail_lab.report import speed_cpu as sc
from acttail_lab.report.results import load_results

SPARSITIES = (0.0, 0.5, 0.8)


def make_gemv():
    """numba at efficiency eff of the limit against a best dense of 100 us; F.linear 20% slower than best."""
    rows = []
    for shape, eff in (("4096x4096", 0.95), ("11008x4096", 0.6)):
        for s in SPARSITIES:
            t = 100.0 * (1 - s) / eff
            base = dict(shape=shape, dtype="fp32", threads=1, sparsity=s, best_dense="dense:torch.mv",
                        limit=1 / (1 - s))
            rows.append(dict(base, candidate="numba", kind="product", time_us=t, gb_per_s=1.0,
                             vs_linear=120.0 / t, vs_best=100.0 / t, frac_of_limit=100.0 / t * (1 - s),
                             frac_of_gemv=np.nan))
            rows.append(dict(base, candidate="select:numba-topk", kind="select", time_us=2.0, gb_per_s=np.nan,
                             vs_linear=np.nan, vs_best=np.nan, frac_of_limit=np.nan, frac_of_gemv=2.0 / t))
    return pd.DataFrame(rows)


def make_decode():
    rows = [dict(strategy="dense", target=0.0, mode="dense", tokens_per_s=1.0, tokens_per_s_min=0.98,
                 tokens_per_s_max=1.02, ms_per_token=1000.0, gemv_ms=np.nan, select_ms=np.nan, wrap_ms=np.nan,
                 other_ms=np.nan),
            dict(strategy="dense-kernel", target=0.0, mode="topk", tokens_per_s=1.05, tokens_per_s_min=1.0,
                 tokens_per_s_max=1.1, ms_per_token=952.0, gemv_ms=900.0, select_ms=2.0, wrap_ms=5.0,
                 other_ms=45.0)]
    for strategy, gain in (("uniform", 1.0), ("acttail", 0.9)):
        for t in (0.5, 0.8):
            speed = 1 + gain * (1 / (1 - t) - 1) * 0.8
            rows.append(dict(strategy=strategy, target=t, mode="topk", tokens_per_s=speed,
                             tokens_per_s_min=speed * 0.99, tokens_per_s_max=speed * 1.01,
                             ms_per_token=1000 / speed, gemv_ms=800 / speed, select_ms=20.0, wrap_ms=10.0,
                             other_ms=1000 / speed - 800 / speed - 30))
    df = pd.DataFrame(rows)
    df["dense_tokens_per_s"] = 1.0
    df["speedup"] = df["tokens_per_s"]
    df["limit"] = 1 / (1 - df["target"])
    df["bytes_limit"] = df["limit"] * 0.95
    df["rounds"] = 3
    df["model"] = "m"
    return df


def test_gemv_targets_judge_the_fraction_of_the_limit_against_the_best_dense():
    targets = sc.gemv_targets(make_gemv())
    assert len(targets) == 4  # two shapes x (0.5, 0.8)
    fast = targets[targets["shape"] == "4096x4096"]
    assert np.allclose(fast["frac_of_limit"], 0.95) and fast["met"].all()
    slow = targets[targets["shape"] == "11008x4096"].set_index("sparsity")
    assert not slow.loc[0.5, "met"] and not slow.loc[0.8, "met"]  # 0.6 < 0.9 and 0.6 < 0.7
    assert np.allclose(targets["goal"], targets["sparsity"].map({0.5: 0.9, 0.8: 0.7}))
    text = sc.gemv_sentence(targets)
    assert text.startswith("2 of 4") and "11008x4096" in text and "60%" in text
    with pytest.raises(ValueError, match="candidates"):
        sc.gemv_targets(make_gemv(), candidate="nope")


def test_selection_costs_are_shares_of_the_product():
    costs = sc.selection_costs(make_gemv())
    assert list(costs.columns) == ["select:numba-topk"]
    at = costs.xs(("4096x4096", "fp32", 1, 0.5))
    assert at["select:numba-topk"] == pytest.approx(2.0 / (100 * 0.5 / 0.95))


def test_decode_breakdown_and_target_sentence():
    table = sc.decode_breakdown(make_decode())
    assert np.allclose(table["speedup"], table["tokens_per_s"] / table["dense_tokens_per_s"])
    assert {"gemv_ms", "select_ms", "wrap_ms", "other_ms"} <= set(table.columns)
    line = sc.decode_target_sentence(make_decode(), 0.5)
    assert "uniform (topk)" in line and "1.80x" in line and "it meets the 1.6x target" in line
    assert "misses" in sc.decode_target_sentence(make_decode().assign(
        tokens_per_s=lambda d: d["tokens_per_s"].clip(upper=1.5)), 0.5)
    ax = cp.plot_decode_breakdown(table, target=0.5)
    assert len(ax.get_yticks()) == 4  # dense, dense-kernel, two strategies
    top = len(ax.get_yticks()) - 1  # the first configuration (dense) is drawn at the top
    dense_bar = [p for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - top) < 1e-9]
    assert sum(p.get_width() for p in dense_bar) == pytest.approx(1000.0)  # the dense path drawn whole


def test_gemv_time_sentence_compares_each_allocation_with_uniform():
    line = sc.gemv_time_sentence(make_decode(), 0.5)
    uniform = 800 / (1 + 0.8)
    acttail = 800 / (1 + 0.9 * 0.8)
    assert f"uniform {uniform:.1f} ms" in line and f"acttail {acttail:.1f} ms ({100 * (acttail / uniform - 1):+.1f}%)" in line
    with pytest.raises(ValueError, match="No 'uniform'"):
        sc.gemv_time_sentence(make_decode(), 0.6)


def test_pareto_mask():
    mask = sc.pareto_mask([1.0, 2.0, 1.5, 2.0], [10.0, 20.0, 30.0, 15.0])
    assert mask.tolist() == [True, False, False, True]


def _runs():
    rows = [dict(strategy="dense", sparsity=0.0, perplexity=10.0)]
    for strategy, ppl in (("uniform", (20.0, 200.0)), ("acttail", (25.0, 150.0))):
        rows += [dict(strategy=strategy, sparsity=s, perplexity=p) for s, p in zip((0.5, 0.8), ppl)]
    return pd.DataFrame(rows)


def test_speed_quality_pairs_strategy_and_sparsity_and_finds_the_front():
    table = sc.speed_quality(make_decode(), _runs())
    assert len(table) == 5 and "dense-kernel" not in set(table["strategy"])
    row = table[(table.strategy == "acttail") & (table.target == 0.8)].iloc[0]
    assert row["perplexity"] == 150.0 and row["tokens_per_s"] == pytest.approx(1 + 0.9 * 4 * 0.8)
    # acttail@0.8 is slower than uniform@0.8 but better: both on the front; so are dense and uniform@0.5
    assert set(map(tuple, table.loc[table.pareto, ["strategy", "target"]].to_numpy())) == {
        ("dense", 0.0), ("uniform", 0.5), ("uniform", 0.8), ("acttail", 0.8)}
    assert "uniform, acttail" in sc.pareto_title(table, "m")
    with pytest.raises(ValueError, match="matches"):
        sc.speed_quality(make_decode(), _runs().assign(sparsity=0.3))


def test_equal_quality_interpolates_in_log_perplexity():
    table = sc.speed_quality(make_decode(), _runs())
    eq = sc.equal_quality(table)
    # acttail's curve spans perplexity 25..150: it reaches neither uniform@0.5's 20 nor uniform@0.8's 200
    assert set(eq["strategy"]) == {"uniform"}
    runs = _runs()
    runs.loc[(runs.strategy == "acttail") & (runs.sparsity == 0.8), "perplexity"] = 400.0
    eq = sc.equal_quality(sc.speed_quality(make_decode(), runs)).set_index(["target", "strategy"])
    lo, hi = 1 + 0.9 * 0.8, 1 + 0.9 * 4 * 0.8
    w = (np.log(200) - np.log(25)) / (np.log(400) - np.log(25))
    assert eq.loc[(0.8, "acttail"), "tokens_per_s"] == pytest.approx(lo + w * (hi - lo))
    assert eq.loc[(0.8, "acttail"), "verdict"] == "slower"
    lines = sc.equal_quality_sentences(sc.speed_quality(make_decode(), runs))
    assert lines[-1].startswith("At the perplexity of uniform@80% (200.0): fastest uniform")
    ax = cp.plot_speed_quality(sc.speed_quality(make_decode(), runs))
    assert ax.get_xscale() == "log" and ax.get_legend() is not None


def test_missing_tables_name_the_command(tmp_path):
    with pytest.raises(ModelNotFoundError, match="bench_gemv_7b.py"):
        sc.load_gemv(tmp_path)
    with pytest.raises(ModelNotFoundError, match="--dtype bf16"):
        sc.load_decode("bf16", results_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="--model smollm2-135m"):
        sc.load_decode(model="smollm2-135m", results_dir=tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        sc.load_decode("fp16", results_dir=tmp_path)


def test_plot_gemv_fraction_draws_the_fraction_and_the_goals():
    ax = cp.plot_gemv_fraction(make_gemv())
    solid = next(line for line in ax.lines if line.get_label() == "4096x4096 vs fastest dense")
    assert np.allclose(solid.get_ydata(), 0.95)
    assert any(line.get_label() == "goal" for line in ax.lines)
    with pytest.raises(ValueError, match="bf16"):
        cp.plot_gemv_fraction(make_gemv(), dtype="bf16")


# --------------------------------------------------------------------------- the committed tables
@pytest.fixture(scope="module")
def committed():
    try:
        return dict(gemv=sc.load_gemv(), fp32=sc.load_decode("fp32"), bf16=sc.load_decode("bf16"),
                    real=sc.load_decode(model="smollm2-135m"), larger=sc.load_decode(model="qwen2.5-coder-1.5b"))
    except ModelNotFoundError as error:  # pragma: no cover - the tables are committed
        pytest.fail(str(error))


def test_committed_cpu_tables_were_made_on_a_quiet_machine_and_agree_with_themselves(committed):
    for name, df in committed.items():
        side = df.attrs["provenance"]
        assert side is not None and side["device"].startswith("cpu"), name
        load = side["settings"]["load"]
        assert load["quiet"] and not load["smoke"] and load["load_before"][0] <= load["max_load"], \
            f"{name} was not measured on a quiet machine"
        assert "quiet" in sc.load_note(df) and "NOT" not in sc.load_note(df)
    gemv = committed["gemv"]
    assert {"4096x4096", "4096x11008", "11008x4096"} <= set(gemv["shape"])
    assert {"fp32", "bf16"} == set(gemv["dtype"]) and {1, 2} == set(gemv["threads"])
    prod = gemv[gemv["kind"] != "select"]
    assert np.allclose(prod["frac_of_limit"], prod["vs_best"] / prod["limit"])
    for (shape, dtype, threads, s), part in prod.groupby(["shape", "dtype", "threads", "sparsity"]):
        best = part[part["candidate"] == part["best_dense"].iloc[0]]
        assert np.isclose(best["vs_best"].iloc[0], 1.0, atol=0.05), (shape, dtype, threads, s)
    for name in ("fp32", "bf16", "real", "larger"):
        table = sc.decode_breakdown(committed[name])
        assert {"dense", "dense-kernel", "uniform", "acttail", "acttail-block", "wina"} <= set(table["strategy"]), name
        assert set(np.round(table.loc[table["strategy"] == "uniform", "target"], 6)) == {0.4, 0.5, 0.6, 0.7, 0.8}
        assert (table["tokens_per_s_min"] <= table["tokens_per_s"] + 1e-12).all()
        assert (table["tokens_per_s"] <= table["tokens_per_s_max"] + 1e-12).all()
        kernel = table[~table["strategy"].isin(["dense"])]
        parts = kernel[list(sc.BREAKDOWN)].sum(axis=1)
        assert np.allclose(parts, kernel["ms_per_token"], rtol=1e-6)
    runs = sc.quality_runs("smollm2-135m")
    assert len(runs) == sum(len(load_results(result_path(t, "smollm2-135m"))) for t in sc.QUALITY_TABLES)
    quality = sc.speed_quality(committed["real"], runs)
    assert {"uniform", "acttail", "dense"} <= set(quality["strategy"]) and quality["pareto"].any()
