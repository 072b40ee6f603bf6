"""Speed figures draw the numbers of the tables they are given; speed_results loads and derives them."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from acttail_lab.allocation import allocate
from acttail_lab.core.errors import ModelNotFoundError
from acttail_lab.core.reference import shape_table
from acttail_lab.plots import speed as sp
from acttail_lab.report import speed as sr
from acttail_lab.report import speed_cpu

SPARSITIES = [0.0, 0.5, 0.8, 0.9]


def make_gemv(device="gpu"):
    """A GEMV table: sparse time = dense * (1 - s) / efficiency, a different efficiency per shape."""
    rows = []
    for (d_in, d_out, kinds), eff in zip(sr.GEMV_SHAPES[device], (0.9, 0.8, 0.7)):
        for s in SPARSITIES:
            for method, extra in (("topk", 1.0), ("threshold", 0.5)):
                dense = d_in * d_out / 1e4
                time_us = dense * (1 - s) / eff + extra
                rows.append(dict(device="cuda:0 (Test GPU)", shape=f"{d_in}x{d_out}", kinds=kinds, d_in=d_in,
                                 d_out=d_out, dtype="fp16", method=method, sparsity=s, time_us=time_us,
                                 dense_us=dense, speedup=dense / time_us, rounds=3))
    return sr.add_limits(pd.DataFrame(rows))[list(sr.GEMV_COLUMNS)]


def make_decode():
    rows = [dict(strategy="dense", target=0.0, mode="dense", tokens_per_s=100.0, speedup=1.0)]
    for strategy, gain in (("uniform", 0.8), ("acttail", 0.85)):
        for mode, m in (("topk", 1.0), ("threshold", 1.1)):
            for t in (0.4, 0.5, 0.6, 0.7, 0.8):
                speed = 1 + gain * m * (1 / (1 - t) - 1)
                rows.append(dict(strategy=strategy, target=t, mode=mode, tokens_per_s=100.0 * speed, speedup=speed))
    df = pd.DataFrame(rows)
    df = sr.add_limits(df, "target")
    df["bytes_limit"] = 0.98 * df["limit"]
    df["dense_tokens_per_s"] = 100.0
    df["device"], df["model"], df["dtype"], df["backend"] = "cuda:0 (Test GPU)", "m", "float16", "triton"
    df["realised_sparsity"], df["n_tokens"], df["rounds"], df["cuda_graphs"] = df["target"], 128, 5, True
    return df[list(sr.DECODE_COLUMNS)]


# --------------------------------------------------------------------------- speed_results
def test_add_limits():
    df = sr.add_limits(pd.DataFrame(dict(sparsity=[0.0, 0.5, 0.8], speedup=[1.0, 1.8, 4.0])))
    assert np.allclose(df["limit"], [1.0, 2.0, 5.0])
    assert np.allclose(df["frac_of_limit"], [1.0, 0.9, 0.8])


def test_load_speed_reads_the_sidecar_and_names_the_command(tmp_path):
    with pytest.raises(ModelNotFoundError, match="bench_gemv.py --device cuda"):
        sr.load_speed("gemv", "gpu", tmp_path)
    path = sr.result_path("gemv", "gpu", tmp_path)
    make_gemv().to_csv(path, index=False)
    path.with_name(path.name + ".json").write_text(json.dumps({"device": "cuda:0 (NVIDIA H100)"}))
    loaded = sr.load_speed("gemv", "gpu", tmp_path)
    assert sr.device_label(loaded) == "cuda:0 (NVIDIA H100)"
    assert len(loaded) == len(make_gemv())
    table = sr.available(tmp_path)
    assert table.loc[(table.table == "gemv") & (table.kind == "gpu"), "exists"].item()
    assert not table.loc[(table.table == "decode") & (table.kind == "cpu"), "exists"].item()
    make_gemv().drop(columns="dense_us").to_csv(path, index=False)
    with pytest.raises(ValueError, match="dense_us"):
        sr.load_speed("gemv", "gpu", tmp_path)


def test_kind_speedups_interpolate_each_projection_on_its_shape_curve():
    gemv = make_gemv()
    table = shape_table("llama2-7b")
    uniform = allocate(table, "uniform", 0.5)
    kinds = sr.kind_speedups(gemv, uniform)
    assert list(kinds["projection"]) == ["q", "k", "v", "o", "gate", "up", "down"]
    by_kind = kinds.set_index("projection")["speedup"]
    # uniform 0.5 lands on a measured point: speedup = dense / (dense * 0.5 / eff + 1)
    for kind, (d_in, d_out, eff) in dict(q=(4096, 4096, 0.9), gate=(4096, 11008, 0.8),
                                         down=(11008, 4096, 0.7)).items():
        dense = d_in * d_out / 1e4
        assert by_kind[kind] == pytest.approx(dense / (dense * 0.5 / eff + 1.0))
    # a mixed allocation: the per-kind time is the sum of interpolated times over its layers
    mixed = uniform.copy()
    mixed.loc[mixed["projection"] == "q", "sparsity"] = np.where(mixed.loc[mixed["projection"] == "q", "layer"] % 2,
                                                                 0.8, 0.65)
    q = sr.kind_speedups(gemv, mixed).set_index("projection").loc["q"]
    dense = 4096 * 4096 / 1e4
    t80, t50 = dense * 0.2 / 0.9 + 1, dense * 0.5 / 0.9 + 1
    t65 = (t50 + t80) / 2
    assert q["speedup"] == pytest.approx(2 * dense / (t80 + t65))
    assert q["mean_sparsity"] == pytest.approx(0.725)


# --------------------------------------------------------------------------- figures
def test_gemv_plot_one_line_per_shape_and_the_limit():
    gemv = make_gemv()
    ax = sp.plot_gemv_speedup(gemv, max_sparsity=0.8)
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    labels = [line.get_label() for line in ax.lines]
    assert labels[:4] == ["4096x4096 (q,k,v,o)", "4096x11008 (gate,up)", "11008x4096 (down)", "limit 1/(1-s)"]
    first = ax.lines[0]
    expected = gemv[(gemv["shape"] == "4096x4096") & (gemv["method"] == "topk") & (gemv["sparsity"] <= 0.8)]
    assert np.allclose(first.get_xdata(), expected["sparsity"])
    assert np.allclose(first.get_ydata(), expected["speedup"])
    limit = ax.lines[3]
    assert np.allclose(limit.get_ydata(), 1 / (1 - np.asarray(limit.get_xdata())))
    assert max(limit.get_xdata()) == pytest.approx(0.8)
    assert "Test GPU" in ax.get_title()
    with pytest.raises(ValueError, match="methods"):
        sp.plot_gemv_speedup(gemv, method="nope")


def test_decode_speedup_plot_and_given_ax():
    decode = make_decode()
    fig = Figure()
    given = fig.add_subplot()
    ax = sp.plot_decode_speedup(decode, ax=given, modes=["topk"])
    assert ax is given
    labels = [line.get_label() for line in ax.lines]
    assert labels[:2] == ["uniform (topk)", "acttail (topk)"] and "limit 1/(1-s)" in labels
    acttail = decode[(decode.strategy == "acttail") & (decode["mode"] == "topk")]
    assert np.allclose(ax.lines[1].get_ydata(), acttail["speedup"])
    assert ax.lines[1].get_color() == sp.strategy_style("acttail")["color"]


def test_tokens_per_s_plot_draws_dense_and_limit():
    decode = make_decode()
    ax = sp.plot_tokens_per_s(decode, mode="threshold")
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["uniform", "acttail", "dense", "dense x 1/(1-s)"]
    uniform = decode[(decode.strategy == "uniform") & (decode["mode"] == "threshold")]
    assert np.allclose(ax.lines[0].get_ydata(), uniform["tokens_per_s"])
    assert np.allclose(ax.lines[2].get_ydata(), 100.0)
    x = np.asarray(ax.lines[3].get_xdata())
    assert np.allclose(ax.lines[3].get_ydata(), 100.0 / (1 - x))
    with pytest.raises(ValueError, match="mode"):
        sp.plot_tokens_per_s(decode, mode="other")


def test_kind_speedup_bars_match_the_table():
    gemv = make_gemv()
    table = shape_table("llama2-7b")
    allocs = pd.concat([allocate(table, "uniform", 0.8), allocate(table.assign(alpha=np.linspace(2, 5, len(table))),
                                                                   "acttail", 0.8)], ignore_index=True)
    kinds = sr.kind_speedups(gemv, allocs)
    ax = sp.plot_kind_speedups(kinds)
    assert [c.get_label() for c in ax.containers] == ["uniform", "acttail"]
    heights = [bar.get_height() for bar in ax.containers[1]]
    expected = kinds[kinds.strategy == "acttail"].set_index("projection").loc[
        ["q", "k", "v", "o", "gate", "up", "down"], "speedup"]
    assert np.allclose(heights, expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["q", "k", "v", "o", "gate", "up", "down"]
    with pytest.raises(ValueError, match="target"):
        sp.plot_kind_speedups(kinds, target=0.3)


def test_target_check_judges_gpu_tables_only():
    gemv, decode = make_gemv(), make_decode()
    check = sr.target_check(gemv, decode)
    assert len(check) == 3 + 4  # three shapes; two strategies x two modes at 50%
    gemv_rows = check[check["check"].str.startswith("GEMV")]
    # synthetic topk at 0.5: speedup = dense / (dense * 0.5 / eff + 1) < 2 * eff: only eff = 0.9 could pass
    expected = gemv[(gemv.method == "topk") & (gemv.sparsity == 0.5)]["frac_of_limit"].to_numpy()
    assert np.allclose(gemv_rows["value"], expected)
    assert gemv_rows["met"].tolist() == [bool(v >= 0.9) for v in expected]
    e2e = check[check["check"].str.startswith("end to end")]
    assert e2e["met"].tolist() == [bool(v >= 1.8) for v in e2e["value"]]
    cpu = gemv.assign(device="cpu (x86_64, 2 cores, 1 torch threads)")
    assert set(sr.target_check(cpu, decode)["met"]) == {"n/a (CPU)"}


def test_one_speedup_agrees_with_tokens_per_s_and_the_spread_is_used_when_present():
    committed = speed_cpu.load_decode("fp32")  # the committed CPU table on LLaMA-2-7B shapes
    table = sr.decode_table(committed)
    assert np.allclose(table["speedup"], table["tokens_per_s"] / table["dense_tokens_per_s"])
    # at every target and mode, the faster run in tokens/s is the one with the larger speedup
    body = table[~table["strategy"].isin(["dense", "dense-kernel"])]
    for _, part in body.groupby(["target", "mode"]):
        assert part.sort_values("tokens_per_s")["strategy"].tolist() == part.sort_values("speedup")["strategy"].tolist()
    text = " ".join(sr.allocation_sentences(committed))
    assert "no spread committed" not in text
    assert "slower" in text or "faster" in text or "inside the spread" in text
    bare = committed.drop(columns=["tokens_per_s_min", "tokens_per_s_max"])
    assert all("no spread committed" in line for line in sr.allocation_sentences(bare))
    ax = sp.plot_decode_speedup(committed, modes=["topk"])
    assert ax.containers  # error bars from the spread
    line = next(l for l in ax.lines if l.get_label() == "acttail (topk)")
    want = body[(body.strategy == "acttail") & (body["mode"] == "topk")].sort_values("target")["speedup"]
    assert np.allclose(line.get_ydata(), want)


def test_decode_title_states_the_speedups_at_the_highest_target():
    title = sr.decode_title(make_decode())
    table = sr.decode_table(make_decode())
    top = table[(table["mode"] == "topk") & (table["target"] == table["target"].max())]
    assert title.startswith("at 80% (topk): ") and all(f"{r.strategy} {r.speedup:.2f}x" in title for r in top.itertuples())
